"""FG-UAP, DM-UAP, TRM-UAP and PSP-UAP on the tiny model: above the noise floors, within xi, their objectives
on hand-computed cases, their curricula against the code's stateful updates, and DM-UAP leaving the shared
model untouched. (Bitwise resume: the CASES of test_baseline_resume.py.)"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import CONF
from torch import nn

from dominant_patterns.analysis.metrics import evaluate_patterns, noise_floors
from dominant_patterns.attacks import DMUAP, FGUAP, PSPUAP, TRMUAP
from dominant_patterns.attacks.base import UniversalAttack
from dominant_patterns.attacks.dm_uap import clamped_ce, smoothed_ce
from dominant_patterns.attacks.fg_uap import last_linear
from dominant_patterns.attacks.priors import TRM_CURRICULA, disk_median, jigsaw_prior
from dominant_patterns.attacks.psp_uap import (
    PSP_CURRICULA,
    PSP_FALLBACK,
    PSP_PER_MODEL,
    kl_weights,
    reweighted_energy,
    shuffle_index,
)
from dominant_patterns.attacks.trm_uap import TRM_FALLBACK, TRM_PER_MODEL, resolve_settings
from dominant_patterns.core.loops import TrainerSettings
from dominant_patterns.models.classifier import ClassifierWrapper, ModelInfo

XI = 10 / 255
NEW = [FGUAP, DMUAP, TRMUAP, PSPUAP]
# Tiny budgets (about a second each on the tiny model): enough to clear both noise floors on seeds 0-3.
FAST: dict[str, dict[str, Any]] = {
    "fg_uap": {"epochs": 2, "val_images": 64},
    "dm_uap": {"max_epochs": 2, "batch_size": 32, "max_images": 64, "theta_steps": 3, "x_steps": 3},
    "trm_uap": {"max_iterations": 40, "val_images": 64},
    "psp_uap": {"max_iterations": 10, "val_images": 64},
}


def settings() -> TrainerSettings:
    return TrainerSettings(progress=False, channels_last=False)


def attack_config(name: str) -> dict[str, Any]:
    return yaml.safe_load((CONF / "attack" / f"{name}.yaml").read_text())


@pytest.mark.parametrize("cls", NEW, ids=lambda c: c.name)
def test_beats_the_noise_floors_within_xi(cls: type[UniversalAttack], tiny_model, fit_loader, eval_loader) -> None:
    torch.manual_seed(0)
    attack = cls(tiny_model, XI, trainer=settings(), seed=0, **FAST[cls.name])
    delta = attack.fit(fit_loader)
    assert delta.shape == (3, 32, 32) and torch.isfinite(delta).all()
    assert float(delta.abs().max()) <= XI + 1e-7
    x, _ = next(iter(fit_loader))
    perturbed = attack.apply(x.float() / 255 if x.dtype == torch.uint8 else x, delta)
    assert float(perturbed.min()) >= 0 and float(perturbed.max()) <= 1
    floors = noise_floors(tuple(delta.shape), XI, seed=0)
    rates = {k: v["fooling_rate"] for k, v in evaluate_patterns(
        tiny_model, {"attack": delta, **floors}, eval_loader, progress=False, channels_last=False).patterns.items()}
    assert rates["attack"] > max(rates["random_noise"], rates["random_sign"]), rates


@pytest.mark.parametrize("cls", NEW, ids=lambda c: c.name)
def test_declares_what_it_is(cls: type[UniversalAttack]) -> None:
    card = cls.card
    assert card.display_name and card.reference and card.published_budget and card.published_source
    assert card.data_setting == {"fg_uap": "label-free", "dm_uap": "label-dependent"}.get(cls.name, "data-free")
    assert card.budget_unit in ("epochs", "iterations")
    assert all(50 < v <= 100 for v in card.published_fooling.values())  # percent, like the paper's tables
    # DM-UAP: BN in train mode; TRM / PSP: conv outputs. FG-UAP's head input is unchanged by BN folding.
    assert card.hooks_activations == (cls is not FGUAP)
    cfg = attack_config(cls.name)
    assert cfg["name"] == cls.name and cfg["_target_"].endswith(cls.__name__)


def test_per_model_tables_match_the_configs() -> None:
    for name, table, fallback in (("trm_uap", TRM_PER_MODEL, TRM_FALLBACK), ("psp_uap", PSP_PER_MODEL, PSP_FALLBACK)):
        cfg = attack_config(name)
        assert cfg["per_model"] == table and cfg["fallback"] == fallback
    vgg, source = resolve_settings("vgg16", TRM_PER_MODEL, TRM_FALLBACK, {"lam": None})
    assert (vgg["p_rate"], vgg["n_rate"], vgg["gauss_gamma"], source) == (0.8, 0.7, 2, "per_model[vgg16]")
    lite, source = resolve_settings("efficientnet_lite0", PSP_PER_MODEL, PSP_FALLBACK, {"temperature": 2.0})
    assert (lite["p_rate"], lite["temperature"], source) == (0.65, 2.0, "fallback")


# ---------------------------------------------------------------------------------------------
# Objectives on cases with a known answer


def test_fg_uap_loss_is_the_mean_feature_cosine(tiny_model) -> None:
    attack = FGUAP(tiny_model, XI, trainer=settings())
    assert attack.feature_layer == "head"  # the tiny model's last linear layer
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    delta = (torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1) * XI
    _, clean = tiny_model.forward_with_features(x)
    _, adv = tiny_model.forward_with_features((x + delta).clamp(0, 1))
    expected = ((clean * adv).sum(1) / (clean.norm(dim=1) * adv.norm(dim=1))).mean()
    assert torch.allclose(attack.loss(x, delta), expected, atol=1e-6)
    vgg_like = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Sequential(nn.Linear(4, 4), nn.ReLU(),
                                                                             nn.Linear(4, 2)))
    assert last_linear(vgg_like) == "2.2"  # like VGG's classifier.6: the input is post-ReLU fc7


class TwoLayer(nn.Module):
    """conv1 sums the channels, conv2 multiplies by -2 (1x1 convolutions, no bias)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 1, 1, bias=False), nn.Conv2d(1, 1, 1, bias=False)
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.conv1.weight.fill_(1.0)
            self.conv2.weight.fill_(-2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv2(self.conv1(x)).flatten(1))


def two_layer_model() -> ClassifierWrapper:
    info = ModelInfo(name="two_layer", input_size=2, mean=(0.5,) * 3, std=(0.25,) * 3, class_names=("a", "b"))
    return ClassifierWrapper(TwoLayer(), info).freeze()


def test_trm_uap_ratio_on_a_two_layer_net() -> None:
    """A1 = [[1, -4], [3, 0]], A2 = -2 A1: positive parts 1 + 9 = 10 and 8^2 = 64; the negative part of A1
    has l2 norm 4 (not squared). With p = 1, n = 0.5 (one layer), lambda = 0.5:
    L = 0.5 log(4 / 2) - log(10 / 2) - log(64 / 2) = 0.5 log 2 - log 160."""
    attack = TRMUAP(two_layer_model(), 1.0, trainer=settings(), p_rate=1.0, n_rate=0.5, lam=0.5, prior="none")
    delta = torch.zeros(3, 2, 2)
    delta[0] = torch.tensor([[1.0, -4.0], [3.0, 0.0]])
    assert abs(float(attack.loss(None, delta)) - (0.5 * math.log(2) - math.log(160))) < 1e-6


def test_psp_uap_kl_weights_and_reweighted_energy() -> None:
    """Teacher logits [0, 0], student [2 ln 3, 0], T = 2: p_t = (1/2, 1/2), p_s = (3/4, 1/4), so
    T^2 KL = 4 * 0.5 (ln(2/3) + ln 2) = 2 ln(4/3) and w = (2 ln(4/3))^(-1/2). A student equal to its teacher
    (second row) has KL 0: its weight is floored, not infinite."""
    student = torch.tensor([[2 * math.log(3), 0.0], [0.0, 0.0]])
    teacher = torch.zeros(2, 2)
    w = kl_weights(student, teacher, temperature=2.0)
    assert abs(float(w[0]) - (2 * math.log(4 / 3)) ** -0.5) < 1e-5
    assert torch.isfinite(w[1])
    # two samples, one layer: sum_j w_j^2 ||A_j||^2 / 2 with ||A_1||^2 = 4 (signs kept), ||A_2||^2 = 9
    acts = [torch.tensor([[[[2.0]]], [[[-3.0]]]])]
    weights = torch.tensor([0.5, 2.0])
    expected = -math.log((0.25 * 4 + 4.0 * 9) / 2 + 1e-9)
    assert abs(float(reweighted_energy(acts, weights, p_rate=1.0)) - expected) < 1e-6


def test_dm_uap_clamped_and_smoothed_cross_entropy() -> None:
    logits = torch.tensor([[0.0, 0.0], [100.0, 0.0]])
    y = torch.tensor([0, 1])
    assert abs(float(clamped_ce(logits, y, beta=9.0)) - (math.log(2) + 9.0) / 2) < 1e-6
    # row 0: nll ln 2, mean(-log p) ln 2; s = 0.2: 0.8 ln 2 + 0.2 ln 2 = ln 2
    assert abs(float(smoothed_ce(logits[:1], y[:1], 0.2)) - math.log(2)) < 1e-6


def test_dm_uap_restores_the_shared_model(tiny_model, fit_loader) -> None:
    """The min-theta steps move a private copy of the weights by exactly rho (normalized steps) and never
    the shared model: parameters, buffers, train/eval flags and requires_grad are as before, bitwise."""
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    attack = DMUAP(tiny_model, XI, trainer=settings(), theta_steps=1, x_steps=2, max_epochs=1, batch_size=32,
                   max_images=32)
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = tiny_model(x).argmax(1)
    moved = attack.min_theta(x, y, rho=0.5)
    names = [n for n, _ in tiny_model.named_parameters()]
    shift = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(moved[n] - before[n]) for n in names]))
    assert abs(float(shift) - 0.5) < 1e-4
    delta = attack.zeros().requires_grad_(True)
    attack.loss(x, delta).backward()
    assert delta.grad is not None and delta.grad.abs().sum() > 0
    attack.fit(fit_loader)
    after = tiny_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m.training for m in tiny_model.modules())
    assert not any(p.requires_grad for p in tiny_model.parameters())


# ---------------------------------------------------------------------------------------------
# Curricula and priors


def code_curriculum(name: str, steps: int) -> list[tuple[int, int, float]]:
    """The code's stateful ``strategy.py`` updates (batch, fre, std) per iteration, written out."""
    batch, fre, std, out = 1, 1, 10.0, []
    for it in range(1, steps + 1):
        if name in ("gauss", "trm_googlenet", "psp_googlenet"):
            batch *= 2 if it in (1600, 2400, 3200) else 1
        else:
            batch *= 2 if it in (1600, 3200) else 1
        if name == "gauss" and it % 400 == 0 and std < 127:
            std = min(127.0, std + 10)
        if name == "trm_jigsaw" and it % 600 == 0 and it < 4200:
            fre += 1
        if name == "resnet152" and ((it < 1000 and it % 200 == 0) or (it >= 1000 and it % 400 == 0)):
            fre += 1
        if name in ("trm_googlenet", "psp_googlenet") and (
                (it <= 1200 and it % 400 == 0) or (it > 1200 and it % 600 == 0
                                                    and (name == "trm_googlenet" or it <= 3000))):
            fre += 1
        out.append((batch, fre, std))
    return out


@pytest.mark.parametrize(("code", "ours"), [
    ("gauss", TRM_CURRICULA["gauss"]), ("trm_jigsaw", TRM_CURRICULA["jigsaw"]),
    ("resnet152", TRM_CURRICULA["jigsaw_resnet152"]), ("resnet152", PSP_CURRICULA["jigsaw"]),
    ("trm_googlenet", TRM_CURRICULA["jigsaw_googlenet"]), ("psp_googlenet", PSP_CURRICULA["jigsaw_googlenet"])])
def test_curricula_match_the_code(code: str, ours: Any) -> None:
    expected = code_curriculum(code, 6000)
    got = [(ours.batch(k, 1), ours.fre(k), ours.std(k)) for k in range(1, 6001)]
    if ours.prior == "jigsaw":  # the std only moves a gauss prior
        got, expected = [g[:2] for g in got], [e[:2] for e in expected]
    assert got == expected


def test_jigsaw_prior_and_median_filter() -> None:
    g = torch.Generator().manual_seed(0)
    img = jigsaw_prior(32, 3, 1, g, torch.device("cpu"))
    assert img.shape == (3, 32, 32) and 0 <= float(img.min()) and float(img.max()) <= 1
    spike = torch.zeros(1, 9, 9)
    spike[0, 4, 4] = 1.0
    assert torch.equal(disk_median(spike, 1), torch.zeros(1, 9, 9))  # a lone pixel is not a median
    square = torch.zeros(1, 9, 9)
    square[0, 2:7, 2:7] = 1.0
    assert torch.equal(disk_median(square, 1)[0, 3:6, 3:6], torch.ones(3, 3))
    idx = shuffle_index(10, 2, torch.Generator().manual_seed(3))
    assert sorted(idx.tolist()) == list(range(10))


def test_psp_uap_samples_carry_delta_and_the_prior(tiny_model) -> None:
    attack = PSPUAP(tiny_model, XI, trainer=settings(), num_copies=3, input_transform=False)
    delta = torch.full((3, 32, 32), 0.01, requires_grad=True)
    u, ref = attack.samples(attack.draw(), delta)
    assert u.shape == ref.shape == (3, 3, 32, 32)
    assert torch.allclose(u - ref, delta.detach().expand_as(u))  # u_j = s_j + delta, s'_j = s_j
    assert u.requires_grad and not ref.requires_grad
    assert F.mse_loss(ref[0], ref[1]) > 0  # different random crops
