"""FT-UAP: frequency-tuned universal adversarial perturbation (Deng & Karam, ECCV 2020 workshops).

Paper: "Frequency-Tuned Universal Adversarial Attacks" (Yingpeng Deng, Lina J. Karam).
**No public implementation located: implemented from the paper's description**
(``provenance = "from description"``; reports mark it so).

Norm: the comparison's l_inf bound ``xi`` in pixel space, always enforced last. As we read the
paper: delta is parameterized by 8x8 block-DCT coefficients c (per channel, orthonormal DCT-II);
each frequency (u, v) has its own bound b_uv proportional to a just-noticeable-difference
threshold 1 / CSF(f_uv) (Mannos-Sakrison contrast sensitivity, ``pixels_per_degree``), scaled so
the mean bound over the selected band is ``dct_scale * xi``; frequencies outside the band
``min_freq <= u + v <= max_freq`` are zeroed (frequency-band selection). The universal attack is
projected signed-gradient ascent on the batch cross-entropy w.r.t. the clean top-1 prediction
(label-free), step ``step_size * b_uv`` per coefficient, over the fit loader for the trainer's
epochs. delta = clamp(IDCT(c), -xi, xi). Band, scale and step are our choices.

Usage::

    attack = FTUAP(model, xi=10 / 255)
    delta = attack.fit(loader)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from dominant_patterns.attacks.base import UniversalAttack
from dominant_patterns.attacks.card import AttackCard
from dominant_patterns.core.devices import autocast
from dominant_patterns.core.errors import ConfigError
from dominant_patterns.core.loops import signed_gradient_epochs
from dominant_patterns.models.classifier import ClassifierWrapper

BLOCK = 8


def dct_matrix(n: int = BLOCK) -> torch.Tensor:
    """Orthonormal DCT-II matrix D (rows = frequencies): coefficients = D @ block @ D.T."""
    k = torch.arange(n, dtype=torch.float64)
    d = torch.cos(math.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d.float()


def block_idct(c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Inverse 8x8 block DCT of coefficients c [3, H, W] (H, W multiples of 8)."""
    ch, h, w = c.shape
    blocks = c.view(ch, h // BLOCK, BLOCK, w // BLOCK, BLOCK).permute(0, 1, 3, 2, 4)
    pixels = d.T @ blocks @ d
    return pixels.permute(0, 1, 3, 2, 4).reshape(ch, h, w)


def jnd_bounds(min_freq: int, max_freq: int, pixels_per_degree: float) -> torch.Tensor:
    """Relative per-frequency bounds [8, 8]: 1 / CSF(f_uv) inside the band, 0 outside; band mean 1."""
    u = torch.arange(BLOCK, dtype=torch.float64)
    f = torch.sqrt(u[:, None] ** 2 + u[None, :] ** 2) * pixels_per_degree / (2 * BLOCK)  # cycles/degree
    csf = 2.6 * (0.0192 + 0.114 * f) * torch.exp(-((0.114 * f) ** 1.1))
    t = 1 / csf
    index = u[:, None] + u[None, :]
    band = (index >= min_freq) & (index <= max_freq)
    if not band.any():
        raise ConfigError(f"attack.min_freq={min_freq}, max_freq={max_freq} select no 8x8 DCT frequency")
    t = torch.where(band, t, torch.zeros_like(t))
    return (t / t[band].mean()).float()


class FTUAP(UniversalAttack):
    """Projected signed-gradient universal attack on JND-bounded 8x8 block-DCT coefficients."""

    name: ClassVar[str] = "ft_uap"
    card: ClassVar[AttackCard] = AttackCard(
        "FT-UAP", "Deng and Karam, ECCV 2020 (no public code: implemented from the paper)", 2020, "label-dependent",
        budget_unit="epochs", published_budget="not published", from_description=True,
        published_source="Table 3 of the paper (paper.csv)")
    fit_state: ClassVar[tuple[str, ...]] = ("coeffs",)

    def __init__(self, model: ClassifierWrapper, xi: float, *, dct_scale: float = 2.0, step_size: float = 0.05,
                 min_freq: int = 0, max_freq: int = 14, pixels_per_degree: float = 32.0, **kwargs: Any) -> None:
        super().__init__(model, xi, **kwargs)
        if model.input_size % BLOCK:
            raise ConfigError(f"ft_uap needs an input size divisible by {BLOCK}, got {model.input_size}")
        if not dct_scale > 0 or not step_size > 0:
            raise ConfigError("attack.dct_scale and attack.step_size must be > 0")
        self.dct_scale, self.step_size = float(dct_scale), float(step_size)
        self.min_freq, self.max_freq, self.ppd = int(min_freq), int(max_freq), float(pixels_per_degree)
        rel = jnd_bounds(self.min_freq, self.max_freq, self.ppd)
        reps = model.input_size // BLOCK
        self.bound = (rel.repeat(reps, reps) * self.dct_scale * self.xi)[None].expand(3, -1, -1).to(self.device)
        self.d = dct_matrix().to(self.device)
        self.coeffs = torch.zeros(self.bound.shape, device=self.device)  # the DCT coefficients fit optimizes

    def to_pixels(self, c: torch.Tensor) -> torch.Tensor:
        return self.project(block_idct(c, self.d))

    def loss(self, x: torch.Tensor, _y: torch.Tensor | None, coeffs: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of f(clamp(x + IDCT(coeffs))) w.r.t. the clean top-1 prediction (to ascend)."""
        with torch.no_grad():
            target = self.model(x).argmax(1)
        with autocast(self.device, self.trainer.precision):
            logits = self.model(self.apply(x, self.to_pixels(coeffs)))
        return F.cross_entropy(logits.float(), target)

    def fit(self, loader: Iterable[Any]) -> torch.Tensor:
        self.coeffs = torch.zeros(self.bound.shape, device=self.device)

        def step(coeffs: torch.Tensor, sign: torch.Tensor) -> None:
            self.coeffs = torch.maximum(torch.minimum(coeffs + self.step_size * self.bound * sign, self.bound),
                                        -self.bound)

        signed_gradient_epochs(self, loader, variable=lambda: self.coeffs, loss_fn=self.loss, update=step,
                               pattern=lambda: self.to_pixels(self.coeffs))
        return self.to_pixels(self.coeffs).detach()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "dct_scale": self.dct_scale,
                "step_size": self.step_size, "min_freq": self.min_freq, "max_freq": self.max_freq,
                "pixels_per_degree": self.ppd}
