"""Cosine-UAP: minimize cos(f(x), f(x + delta)) on the logits (Zhang, Benz, Karjauv, Kweon, ICCV 2021).

Paper: "Data-free universal adversarial perturbation and black-box attack", ICCV 2021
(openaccess.thecvf.com); no official code found, giladfrid009/ulib ``cosine_uap.py`` read.

Norm: l_inf (``xi``). Label-free: f(x) is the clean logit vector (no gradient). The loop is the
dominant pattern's (Adam, projection after every step, epochs/batch from the trainer group) so the
two objectives are compared under identical optimization; lr 0.005 follows the group's TUAP code.
The contrast with the dominant pattern: DP pulls f(x + delta) towards f(delta); Cosine-UAP pushes
it away from f(x).

Usage::

    attack = CosineUAP(model, xi=10 / 255)
    delta = attack.fit(loader)
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from dominant_patterns.attacks.base import GradientAttack
from dominant_patterns.attacks.card import AttackCard
from dominant_patterns.models.classifier import ClassifierWrapper


class CosineUAP(GradientAttack):
    """Adam on the mean cosine similarity between clean and perturbed logits."""

    name: ClassVar[str] = "cosine_uap"
    card: ClassVar[AttackCard] = AttackCard(
        "Cosine-UAP", "Zhang et al., ICCV 2021 (read from giladfrid009/ulib; no official code)", 2021, "label-free",
        budget_unit="epochs", published_budget="not published")

    def __init__(self, model: ClassifierWrapper, xi: float, *, lr: float = 0.005, **kwargs: Any) -> None:
        super().__init__(model, xi, lr=lr, **kwargs)

    def loss(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            clean = self.model(x).float()
        adv = self.model(self.apply(x, delta)).float()
        return F.cosine_similarity(clean, adv, dim=1, eps=1e-12).mean()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "lr": self.lr}
