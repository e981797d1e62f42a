"""PSP-UAP: data-free UAP from a pseudo-semantic prior (Lee, Song, Son, CVPR 2025).

Paper: "Data-free Universal Adversarial Perturbation with Pseudo-semantic Prior",
https://arxiv.org/abs/2502.21048 ; public code read: ChnanChan/PSP-UAP (``PSP_UAP.py``, ``loss.py``,
``semantic_aug.py``, ``strategy.py``, ``main.py``, README commands).

Norm: l_inf (``xi``). Each iteration draws TRM-UAP's prior batch z (``trm_uap``; P images), makes
``num_copies`` * P pseudo-semantic samples s_j = RandomResizedCrop(delta + z) (scale 0.08-1, ratio 3/4-4/3,
uniform; detached), and feeds u_j = T_j(s_j + delta) with the reference s'_j = T_j(s_j), T_j one of (1/3 each):
a rotation by a truncated N(0, 6 deg) (bilinear, pixels that come out 0 taken from the input), an intensity
scaling by U(0.8, 4), or a 2 x 2 shuffle of random-size blocks. Weights (no gradient)::

    w_j = (T^2 KL(softmax(f(s'_j) / T) || softmax(f(u_j) / T)))^(-1/2)

and the loss (minimized) over the first int(p L) conv outputs A_l, *both signs* (``re_weight``, every README
command; without it, TRM's positive part)::

    L = -sum_l log(sum_j w_j^2 ||A_l(u_j)||_2^2 / 2 + 1e-9)

Inputs reach the network without the wrapper's normalization (``network_input: raw``), as in the code.
Loop, priors, curricula, rescaling, validation and stopping are TRM-UAP's (:class:`PriorUAP`) with the
code's differences: every jigsaw model uses the (f + 2) x f grid (``get_jigsaw`` L214 is always true;
``jigsaw_rows: square`` gives the intended f x f), ResNet50 / DenseNet121 take the ResNet152 schedule,
and the GoogLeNet schedule stops growing after iteration 3000. The code returns the last delta
(``best_uap`` is an alias of delta). Per-architecture p / prior / T: ``per_model`` (README L32-48),
else ``fallback`` (the code's argparse defaults).

Usage::

    attack = PSPUAP(model, xi=10 / 255, max_iterations=60)   # fit images: validation only
    delta = attack.fit(loader)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from dominant_patterns.attacks.card import AttackCard
from dominant_patterns.attacks.priors import TRM_CURRICULA, Curriculum, _resize, uniform
from dominant_patterns.attacks.trm_uap import PriorUAP, kept_layers, resolve_settings, truncated_ratio_loss
from dominant_patterns.core.checks import check_at_least, check_choice, check_positive
from dominant_patterns.models.classifier import ClassifierWrapper

#: The code's curricula (``strategy.py`` at ChnanChan/PSP-UAP dbbc4ee), by the name ``prior`` takes.
PSP_CURRICULA: dict[str, Curriculum] = {
    "gauss": TRM_CURRICULA["gauss"],
    "jigsaw": Curriculum("jigsaw", double_at=(1600, 3200), fre_steps=((1, 999, 200), (1000, None, 400)),
                         extra_rows=2),
    "jigsaw_googlenet": Curriculum("jigsaw", double_at=(1600, 2400, 3200),
                                   fre_steps=((1, 1200, 400), (1201, 3000, 600)), extra_rows=2),
    "none": TRM_CURRICULA["none"],
}
#: README L32-48; mirrored by ``conf/attack/psp_uap.yaml``.
PSP_PER_MODEL: dict[str, dict[str, Any]] = {
    "alexnet": {"p_rate": 1.0, "prior": "gauss", "temperature": 1.0},
    "vgg16": {"p_rate": 1.0, "prior": "gauss", "temperature": 5.0},
    "vgg19": {"p_rate": 1.0, "prior": "gauss", "temperature": 5.0},
    "resnet152": {"p_rate": 0.65, "prior": "jigsaw", "temperature": 3.0},
    "googlenet": {"p_rate": 0.55, "prior": "jigsaw_googlenet", "temperature": 5.0},
    "resnet50": {"p_rate": 0.7, "prior": "jigsaw", "temperature": 3.0},
    "densenet121": {"p_rate": 0.9, "prior": "jigsaw", "temperature": 10.0},
    "mobilenet_v3_large": {"p_rate": 0.9, "prior": "gauss", "temperature": 2.0},
    "inception_v3": {"p_rate": 0.2, "prior": "jigsaw_googlenet", "temperature": 3.0},
}
#: The code's argparse defaults (``--p_rate 0.65 --prior gauss --temper 0.7``).
PSP_FALLBACK: dict[str, Any] = {"p_rate": 0.65, "prior": "gauss", "temperature": 0.7}
TRANSFORMS = ("rotate", "intensity", "shuffle")


def kl_weights(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-sample weights (T^2 KL(softmax(teacher / T) || softmax(student / T)))^(-1/2), without gradient.

    The KL is floored at 1e-12 (the code has no floor; identical logits would give an infinite weight).
    """
    with torch.no_grad():
        log_s = F.log_softmax(student.float() / temperature, dim=-1)
        soft_t = F.softmax(teacher.float() / temperature, dim=-1)
        kl = F.kl_div(log_s, soft_t, reduction="none").sum(-1) * temperature ** 2
        return kl.clamp(min=1e-12).rsqrt()


def reweighted_energy(acts: Sequence[torch.Tensor], weights: torch.Tensor, p_rate: float) -> torch.Tensor:
    """-sum over the first int(p L) layers of log(sum_j w_j^2 ||A_l(u_j)||^2 / 2 + 1e-9) (both signs kept)."""
    n = weights.shape[0]
    terms = [torch.log((a.float().reshape(n, -1) * weights[:, None]).square().sum() / 2 + 1e-9)
             for a in acts[:kept_layers(len(acts), p_rate)]]
    return -torch.stack(terms).sum()


# ---------------------------------------------------------------------------------------------
# Pseudo-semantic samples and their transforms (random decisions from the attack's generator)


def random_resized_crop(img: torch.Tensor, scale: Sequence[float], ratio: Sequence[float],
                        generator: torch.Generator) -> torch.Tensor:
    """The code's ``random_crop`` (uniform scale and ratio, 10 tries, else a centre crop), resized back."""
    _, h, w = img.shape
    for _ in range(10):
        area = h * w * uniform(generator, *scale)
        r = uniform(generator, *ratio)
        tw, th = int(round(math.sqrt(area * r))), int(round(math.sqrt(area / r)))
        if th <= h and tw <= w:
            top = int(torch.randint(0, h - th + 1, (), generator=generator))
            left = int(torch.randint(0, w - tw + 1, (), generator=generator))
            return _resize(img[:, top:top + th, left:left + tw], (h, w), antialias=True)
    in_ratio = w / h
    th, tw = (int(round(w / min(ratio))), w) if in_ratio < min(ratio) else (
        (h, int(round(h * max(ratio)))) if in_ratio > max(ratio) else (h, w))
    th, tw = min(th, h), min(tw, w)
    top, left = (h - th) // 2, (w - tw) // 2
    return _resize(img[:, top:top + th, left:left + tw], (h, w), antialias=True)


def truncated_normal(generator: torch.Generator, std: float, bound: float) -> float:
    while True:
        value = float(torch.randn((), generator=generator)) * std
        if -bound <= value <= bound:
            return value


def rotate_fill(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Bilinear rotation about the centre; pixels that come out exactly 0 are taken from ``x`` (differentiable)."""
    a = math.radians(degrees)
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]], dtype=x.dtype,
                         device=x.device)
    grid = F.affine_grid(theta[None], [1, *x.shape], align_corners=False)
    rotated = F.grid_sample(x[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    return torch.where(rotated == 0, x, rotated)


def block_lengths(length: int, blocks: int, generator: torch.Generator) -> list[int]:
    """The code's ``get_length``: random block sizes summing to ``length``, each at least 1."""
    rand = torch.rand(blocks, generator=generator, dtype=torch.float64)
    sizes = torch.round(rand * length / rand.sum()).long().clamp(min=1)
    sizes[sizes.argmax()] += length - int(sizes.sum())
    return sizes.tolist()


def shuffle_index(length: int, blocks: int, generator: torch.Generator) -> torch.Tensor:
    """Pixel order along one axis after splitting it into random-size blocks and permuting them."""
    starts = [0]
    for size in block_lengths(length, blocks, generator):
        starts.append(starts[-1] + size)
    perm = torch.randperm(blocks, generator=generator).tolist()
    return torch.cat([torch.arange(starts[i], starts[i + 1]) for i in perm])


class PSPUAP(PriorUAP):
    """KL-reweighted conv energy on transformed pseudo-semantic crops of delta + a TRM prior.

    Args:
        p_rate, prior, temperature: null = from ``per_model[model.name]``, else ``fallback``.
        per_model / fallback: per-architecture settings (default :data:`PSP_PER_MODEL` / :data:`PSP_FALLBACK`).
        num_copies: pseudo-semantic samples per prior image (10).
        crop_scale, crop_ratio: RandomResizedCrop ranges ((0.08, 1), (3/4, 4/3)).
        angle: rotation std and bound in degrees (6); intensity: scaling range ((0.8, 4)).
        shuffle_blocks: blocks per axis of the shuffle (2).
        input_transform: apply the rotation / intensity / shuffle transforms (every README command does).
        re_weight: the KL-weighted loss on both signs (README); false: TRM's positive part, unweighted.
        jigsaw_rows: ``wide`` ((f + 2) x f cells for every model, the code) or ``square`` (f x f except GoogLeNet).
        **kwargs: the loop's settings (:class:`~dominant_patterns.attacks.trm_uap.PriorUAP`).
    """

    name: ClassVar[str] = "psp_uap"
    card: ClassVar[AttackCard] = AttackCard(
        "PSP-UAP", "Lee, Song, Son: Data-free Universal Adversarial Perturbation with Pseudo-semantic Prior, CVPR 2025 "
        "(ChnanChan/PSP-UAP)", 2025, "data-free", hooks_activations=True, budget_unit="iterations",
        published_budget="<= 10,000 iterations of 10 crops x a prior batch growing 1 -> 8, early stop (patience 5): "
        "<= 608k image passes (F+B) + 608k forward passes", published_passes=608_070,
        published_fooling={"vgg16": 96.26, "vgg19": 94.65, "resnet152": 85.65, "googlenet": 81.43},
        published_source="UNCONFIRMED: a third-party summary of the paper (no white-box ResNet50/DenseNet121 found)")
    curricula: ClassVar[Mapping[str, Curriculum]] = PSP_CURRICULA

    def __init__(self, model: ClassifierWrapper, xi: float, *, p_rate: float | None = None, prior: str | None = None,
                 temperature: float | None = None, per_model: Mapping[str, Mapping[str, Any]] | None = None,
                 fallback: Mapping[str, Any] | None = None, num_copies: int = 10,
                 crop_scale: Sequence[float] = (0.08, 1.0), crop_ratio: Sequence[float] = (0.75, 4 / 3),
                 angle: float = 6.0, intensity: Sequence[float] = (0.8, 4.0), shuffle_blocks: int = 2,
                 input_transform: bool = True, re_weight: bool = True, jigsaw_rows: str = "wide",
                 **kwargs: Any) -> None:
        settings, source = resolve_settings(
            model.name, PSP_PER_MODEL if per_model is None else per_model,
            PSP_FALLBACK if fallback is None else fallback,
            {"p_rate": p_rate, "prior": prior, "temperature": temperature})
        super().__init__(model, xi, settings=settings, settings_source=source, **kwargs)
        self.p_rate, self.temperature = self.rate("p_rate"), check_positive("attack.temperature",
                                                                             self.rate("temperature"))
        self.jigsaw_rows = check_choice("attack.jigsaw_rows", jigsaw_rows, ("wide", "square"))
        if self.jigsaw_rows == "square" and self.prior_name == "jigsaw":
            self.curriculum = replace(self.curriculum, extra_rows=0)
        self.num_copies = check_at_least("attack.num_copies", num_copies, 1)
        self.crop_scale, self.crop_ratio = tuple(map(float, crop_scale)), tuple(map(float, crop_ratio))
        self.angle, self.intensity = float(angle), tuple(map(float, intensity))
        self.shuffle_blocks = check_at_least("attack.shuffle_blocks", shuffle_blocks, 1)
        self.input_transform, self.re_weight = bool(input_transform), bool(re_weight)

    def transform_pair(self, u: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One random transform applied alike to a sample ``u`` and its reference (1/3 each)."""
        g = self.generator
        pick = uniform(g)
        if pick < 1 / 3:
            degrees = truncated_normal(g, self.angle, self.angle)
            return rotate_fill(u, degrees), rotate_fill(ref, degrees)
        if pick < 2 / 3:
            ratio = uniform(g, *self.intensity)
            return u * ratio, ref * ratio
        _, h, w = u.shape
        cols = shuffle_index(w, self.shuffle_blocks, g).to(u.device)
        rows = shuffle_index(h, self.shuffle_blocks, g).to(u.device)
        return u[:, rows][:, :, cols], ref[:, rows][:, :, cols]

    def samples(self, z: torch.Tensor | None, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The transformed samples u_j (with a gradient to delta) and their references s'_j (raw scale)."""
        example = (delta[None] if z is None else delta + z).detach()
        n = example.shape[0]
        with torch.no_grad():
            crops = torch.stack([random_resized_crop(example[j % n], self.crop_scale, self.crop_ratio, self.generator)
                                 for j in range(self.num_copies * n)])
        u, ref = crops + delta, crops
        if not self.input_transform:
            return u, ref
        pairs = [self.transform_pair(u[j], ref[j]) for j in range(u.shape[0])]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs]).detach()

    def loss(self, z: torch.Tensor | None, delta: torch.Tensor) -> torch.Tensor:
        u, ref = self.samples(z, delta)
        acts, logits = self.conv_outputs(u)
        if not self.re_weight:
            return truncated_ratio_loss(acts, self.p_rate, 0.0, 0.0)
        with torch.no_grad():
            teacher = self.forward(ref)
        return reweighted_energy(acts, kl_weights(logits, teacher, self.temperature), self.p_rate)

    def image_passes(self) -> int:
        """Samples through the network with a gradient so far (as many again go forward only, the references)."""
        return self.num_copies * super().image_passes()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "num_copies": self.num_copies, "angle": self.angle,
                "intensity": list(self.intensity), "shuffle_blocks": self.shuffle_blocks,
                "crop_scale": list(self.crop_scale), "crop_ratio": list(self.crop_ratio),
                "input_transform": self.input_transform, "re_weight": self.re_weight, "jigsaw_rows": self.jigsaw_rows}
