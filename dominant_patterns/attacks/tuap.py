"""TUAP: universal perturbation with a clamped logit-margin loss (Zhang, Benz, Imtiaz, Kweon, CVPR 2020).

Paper: "Understanding adversarial examples from the mutual influence of images and perturbations",
https://arxiv.org/abs/2007.06189 ; public code read: phibenz/uap_virtual_data.pytorch.

Norm: l_inf (``xi``), delta added in [0, 1] pixel space before normalization. Defaults (public
``run.sh``): Adam lr 0.005, batch 32, 2000 iterations, kappa (``confidence``) 10.

Loss (public code, per image, averaged):
    untargeted (``bounded_logit_neg``): clamp(z_t - max_{j != t} z_j, min=-kappa), t = the clean
        top-1 prediction (label-free; the public code takes the loader's labels, which on proxy data
        such as COCO are not ImageNet classes);
    targeted (``bounded_logit_fixed_ref``): clamp(max_{j != t} z_j.detach() - z_t, min=-kappa).
The images come from the fit loader (original or proxy data, e.g. COCO); ``max_iterations``
caps the published 2000 iterations for CPU runs.

Usage::

    attack = TUAP(model, xi=10 / 255, max_iterations=200)
    delta = attack.fit(loader)
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import Any, ClassVar

import torch

from dominant_patterns.attacks.base import UniversalAttack, capped
from dominant_patterns.attacks.card import AttackCard
from dominant_patterns.core.checks import check_class, check_positive
from dominant_patterns.core.loops import optimize_iterations
from dominant_patterns.models.classifier import ClassifierWrapper


def margin(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Target logit and the largest other logit, per row."""
    logits = logits.float()
    z_t = logits.gather(1, target[:, None])[:, 0]
    others = logits.scatter(1, target[:, None], float("-inf"))
    return z_t, others.max(1).values


class TUAP(UniversalAttack):
    """Adam on delta with the public code's bounded logit losses.

    Args:
        lr: Adam learning rate (0.005, the authors' run script; their argparse default is 0.001).
        iterations: published number of iterations (2000 batches).
        max_iterations: optional cap for CPU runs (null = published).
        batch_size: images per iteration (32).
        confidence: kappa, the margin where the loss saturates (10).
        target_class: null = untargeted; an index = targeted attack towards it.
    """

    name: ClassVar[str] = "tuap"
    card: ClassVar[AttackCard] = AttackCard(
        "TUAP", "Zhang, Benz, Imtiaz, Kweon, CVPR 2020 (phibenz/uap_virtual_data.pytorch)", 2020, "label-free",
        budget_unit="iterations", published_budget="2,000 iterations x batch 32", published_passes=2000 * 32,
        published_source="Tables 3-5 of the paper (paper.csv)")

    def __init__(self, model: ClassifierWrapper, xi: float, *, lr: float = 0.005, iterations: int = 2000,
                 max_iterations: int | None = None, batch_size: int = 32, confidence: float = 10.0,
                 target_class: int | None = None, **kwargs: Any) -> None:
        super().__init__(model, xi, **kwargs)
        self.lr, self.confidence = check_positive("attack.lr", lr), float(confidence)
        self.iterations, self.max_iterations = int(iterations), max_iterations
        self.run_iterations = capped(iterations, max_iterations, trainer_cap=self.trainer.max_iterations)
        self.batch_size = int(batch_size)
        self.target_class = check_class("attack.target_class", target_class, model.num_classes)

    def loss(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        logits = self.model(self.apply(x, delta))
        if self.target_class is not None:
            target = torch.full((x.shape[0],), self.target_class, device=x.device, dtype=torch.long)
            z_t, z_other = margin(logits, target)
            return (z_other.detach() - z_t).clamp(min=-self.confidence).mean()
        with torch.no_grad():
            target = self.model(x).argmax(1)
        z_t, z_other = margin(logits, target)
        return (z_t - z_other).clamp(min=-self.confidence).mean()

    def fit(self, loader: Iterable[Any]) -> torch.Tensor:
        return optimize_iterations(
            self, self.zeros(), self.loss, loader=loader, batch_size=self.batch_size,
            optimizer=partial(torch.optim.Adam, lr=self.lr), iterations=self.run_iterations)

    def budget_note(self) -> str:
        return f"{self.run_iterations} it (cap {self.run_iterations} of {self.iterations})"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "lr": self.lr, "iterations": self.iterations,
                "max_iterations": self.max_iterations, "run_iterations": self.run_iterations,
                "batch_size": self.batch_size, "confidence": self.confidence, "target_class": self.target_class}
