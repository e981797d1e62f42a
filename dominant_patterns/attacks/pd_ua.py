"""PD-UA: prior-driven uncertainty approximation, a data-free UAP (Liu et al., ICCV 2019).

Paper: "Universal Adversarial Perturbation via Prior Driven Uncertainty Approximation",
ICCV 2019 (openaccess.thecvf.com). **No public code could be reached: implemented from the paper's
description** (``provenance = "from description"``; reports mark it so).

Norm: l_inf (``xi``). Data-free: the network sees the mean image + delta (delta / std after
normalization). Objective, as we read the paper:
    epistemic term: maximize E_dropout sum_l log(||a_l||^2 / 2) over the ``conv`` layer group,
        with Monte Carlo dropout (rate ``dropout``) applied to every conv output (``mc_samples``
        masks, drawn as one batch) through ``hooks.transform_activations``;
    aleatoric/texture term: ``style_weight`` * sum over the first ``style_layers`` conv layers of the
        squared Gram-matrix distance to a texture image, which also initializes delta
        (delta_0 = xi * (2 T - 1), T = scikit-image ``texture`` rescaled to the input size);
    gradients pass a Laplacian-pyramid filter (``pyramid_levels``; each level normalized, then
    summed back, favouring smooth structure) and drive momentum SGD (momentum 0.9, step ``lr_255``
    on the 0-255 scale per unit mean |gradient|), with projection after every step.
The loader only provides validation images: the best of the checks every ``val_every`` iterations
(fooling rate through ``metrics.fooling_rate``) is returned. Iterations, dropout rate, style
weight and step are our choices (the paper's values were not available to us).

Usage::

    attack = PDUA(model, xi=10 / 255, max_iterations=300)
    delta = attack.fit(loader)
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from dominant_patterns.attacks.activations import log_activation_norms, mean_image
from dominant_patterns.attacks.base import IterationBudget, UniversalAttack, capped
from dominant_patterns.attacks.card import AttackCard
from dominant_patterns.attacks.validation import Validator
from dominant_patterns.core.errors import ConfigError
from dominant_patterns.core.loops import optimize_iterations
from dominant_patterns.models.classifier import ClassifierWrapper
from dominant_patterns.models.hooks import capture_activations, layer_names, transform_activations


def texture_image(name: str, size: int) -> torch.Tensor:
    """A scikit-image picture as a [3, size, size] float texture in [0, 1] (centre square, resized)."""
    from dominant_patterns.data.photos import load_photo, resize_uint8

    img = torch.from_numpy(load_photo(name)).permute(2, 0, 1)
    side = min(img.shape[1:])
    top, left = (img.shape[1] - side) // 2, (img.shape[2] - side) // 2
    img = img[:, top:top + side, left:left + side].contiguous()
    return resize_uint8(img[None], size)[0].float() / 255


def gram(a: torch.Tensor) -> torch.Tensor:
    a = a.float().flatten(2)
    return a @ a.transpose(1, 2) / a.shape[-1]


def laplacian_filter(g: torch.Tensor, levels: int) -> torch.Tensor:
    """Split ``g`` [3, H, W] into a Laplacian pyramid, normalize each level, sum back to full size."""
    size = g.shape[-2:]
    cur, out = g[None], torch.zeros_like(g[None])
    for _ in range(levels - 1):
        if min(cur.shape[-2:]) < 2:
            break
        low = F.avg_pool2d(cur, 2)
        band = cur - F.interpolate(low, size=cur.shape[-2:], mode="bilinear", align_corners=False)
        out += F.interpolate(band / (band.std() + 1e-12), size=size, mode="bilinear", align_corners=False)
        cur = low
    out += F.interpolate(cur / (cur.std() + 1e-12), size=size, mode="bilinear", align_corners=False)
    return out[0] / (out.abs().mean() + 1e-12)


class PDUA(IterationBudget, UniversalAttack):
    """Uncertainty (MC-dropout activation) maximization with a texture prior and pyramid-filtered steps."""

    name: ClassVar[str] = "pd_ua"
    card: ClassVar[AttackCard] = AttackCard(
        "PD-UA", "Liu et al., ICCV 2019 (no public code: implemented from the paper)", 2019, "data-free",
        hooks_activations=True, budget_unit="iterations", published_budget="not published", from_description=True,
        published_source="Table 4 of the paper (paper.csv)")
    fit_state: ClassVar[tuple[str, ...]] = ("validator", "steps_run")

    def __init__(self, model: ClassifierWrapper, xi: float, *, iterations: int = 1000,
                 max_iterations: int | None = None, lr_255: float = 0.5, momentum: float = 0.9,
                 dropout: float = 0.1, mc_samples: int = 4, style_weight: float = 1.0, style_layers: int = 3,
                 texture: str | None = "brick", pyramid_levels: int = 4, val_every: int = 100,
                 val_images: int = 1000, patience: int = 5, layers: str = "conv", **kwargs: Any) -> None:
        super().__init__(model, xi, **kwargs)
        if not 0 <= dropout < 1 or mc_samples < 1 or pyramid_levels < 1 or not lr_255 > 0:
            raise ConfigError("attack.dropout must be in [0, 1), mc_samples/pyramid_levels >= 1, lr_255 > 0")
        self.iterations, self.max_iterations = int(iterations), max_iterations
        self.run_iterations = capped(iterations, max_iterations, trainer_cap=self.trainer.max_iterations)
        self.lr_255, self.momentum = float(lr_255), float(momentum)
        self.dropout, self.mc_samples = float(dropout), int(mc_samples)
        self.style_weight, self.texture, self.pyramid_levels = float(style_weight), texture, int(pyramid_levels)
        self.val_every, self.val_images, self.patience = int(val_every), int(val_images), int(patience)
        self.layer_group = layers
        self.layers = layer_names(model, layers)
        self.style_names = self.layers[: int(style_layers)]
        self.texture_grams: list[torch.Tensor] = []
        self.steps_run, self.val_rate = 0, float("nan")
        self.validator: Validator | None = None

    def init_delta(self) -> torch.Tensor:
        if self.texture is None:
            return self.zeros()
        t = texture_image(self.texture, self.model.input_size).to(self.device)
        with torch.no_grad(), capture_activations(self.model, self.style_names) as acts:
            self.model(t[None])
        self.texture_grams = [gram(acts[n]) for n in self.style_names]
        return self.project((2 * t - 1) * self.xi)

    def mc_dropout(self, _name: str, out: torch.Tensor) -> torch.Tensor:
        return F.dropout(out, p=self.dropout, training=True)

    def loss(self, _x: torch.Tensor | None, delta: torch.Tensor) -> torch.Tensor:
        x = self.apply(mean_image(self.model, self.mc_samples).to(self.device), delta)
        with transform_activations(self.model, self.layers, self.mc_dropout), \
                capture_activations(self.model, self.layers) as acts:
            self.model(x)
        loss = -log_activation_norms(acts, self.layers, "l2")
        if self.texture_grams and self.style_weight:
            with capture_activations(self.model, self.style_names) as clean_acts:
                self.model(x[:1])
            style = sum(((gram(clean_acts[n]) - g) ** 2).sum() / g.pow(2).sum().clamp_min(1e-12)
                        for n, g in zip(self.style_names, self.texture_grams, strict=True))
            loss = loss + self.style_weight * style
        return loss

    def fit(self, loader: Iterable[Any]) -> torch.Tensor:
        s = self.trainer
        self.steps_run = 0
        self.validator = validator = Validator.from_loader(self.model, loader, self.device, count=self.val_images,
                                                           patience=self.patience, settings=s)

        def after_step(step: int, delta: torch.Tensor) -> bool:
            self.steps_run = step
            if step % self.val_every == 0:
                stop = validator.check(delta)
                self.log({"val/fooling_rate": validator.best_rate}, step)
                return stop
            return False

        delta = optimize_iterations(
            self, self.init_delta(), self.loss,
            optimizer=partial(torch.optim.SGD, lr=self.lr_255 / 255, momentum=self.momentum),
            iterations=self.run_iterations, after_step=after_step,
            grad_filter=partial(laplacian_filter, levels=self.pyramid_levels))
        best, self.val_rate = validator.final(delta)
        return best

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "iterations": self.iterations,
                "max_iterations": self.max_iterations, "run_iterations": self.run_iterations,
                "steps_run": self.steps_run, "lr_255": self.lr_255, "dropout": self.dropout,
                "mc_samples": self.mc_samples, "style_weight": self.style_weight, "texture": self.texture,
                "layer_group": self.layer_group, "val_fooling_rate": self.val_rate}
