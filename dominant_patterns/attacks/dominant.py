"""The dominant pattern (Ye et al., Algorithm 1).

Minimizes L(f(delta), f(clamp(x + delta, 0, 1))) over unlabeled images with Adam
(lr 0.01, batch 32, 10 epochs), delta initialized at 0 and clamped to [-xi, xi] after every
step. f is taken at the logits (paper) or at the backbone features (``layer=features``).
f(delta) is computed once per step from delta alone.

Usage::

    attack = DominantPattern(model, xi=10 / 255)
    delta = attack.fit(loader)
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from dominant_patterns.attacks.base import GradientAttack
from dominant_patterns.attacks.card import AttackCard
from dominant_patterns.checks import check_at_least, check_choice, check_class
from dominant_patterns.errors import ConfigError
from dominant_patterns.losses import get_loss
from dominant_patterns.models import ClassifierWrapper

LAYERS = ("logits", "features")


class DominantPattern(GradientAttack):
    """Algorithm 1 with a similarity loss from the loss registry (cos, ed, kld).

    Args:
        loss: ``{"name": "cos", "layer": "logits"}`` or a loss name.
        target_class: optional class to steer f(delta) towards (cross-entropy on f(delta)
            weighted by ``target_weight``, added to the similarity loss).
        num_patterns: patterns fitted in one pass (``attack.num_patterns``): one here;
            :class:`~dominant_patterns.attacks.multi_seed.MultiSeedDominant` fits K (``fit_many``).
    """

    name: ClassVar[str] = "dominant"
    card: ClassVar[AttackCard] = AttackCard(
        "Ours (dominant pattern)", "Ye, Qin, Chen, Huang: Dominant Patterns (arXiv 2021; 1105042987/Dominant-Patterns)",
        2021, "label-free", multi_pattern=True, budget_unit="epochs",
        published_budget="10 epochs x 40,000 images, batch 32", published_passes=10 * 1250 * 33,
        published_source="Tables 3-5 of the paper (paper.csv)", ours=True)
    #: The most patterns one fit of this class makes (None: any number).
    max_patterns: ClassVar[int | None] = 1

    def __init__(self, model: ClassifierWrapper, xi: float, *, loss: dict[str, Any] | str = "cos",
                 target_class: int | None = None, target_weight: float = 1.0, num_patterns: int = 1,
                 **kwargs: Any) -> None:
        super().__init__(model, xi, **kwargs)
        k = check_at_least("attack.num_patterns", num_patterns, 1)
        if self.max_patterns is not None and k > self.max_patterns:
            raise ConfigError(f"attack.num_patterns={k}: {type(self).__name__} fits one pattern; "
                              "MultiSeedDominant.fit_many fits K in one pass")
        spec = {"name": loss} if isinstance(loss, str) else dict(loss)
        self.loss_name = spec.get("name", "cos")
        self.loss_fn = get_loss(self.loss_name)
        self.layer = check_choice("loss.layer", spec.get("layer", "logits"), LAYERS)
        self.target_class = check_class("attack.target_class", target_class, model.num_classes)
        self.target_weight = float(target_weight)

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        if self.layer == "logits":
            return self.model(x)
        return self.model.forward_with_features(x)[1]

    def loss(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        both = self.pattern_and_perturbed(x, delta)
        if self.target_class is None:
            out = self.outputs(both)
            return self.loss_fn(out[:1], out[1:]).mean()
        logits, feats = self.model.forward_with_features(both)
        out = logits if self.layer == "logits" else feats
        target = torch.tensor([self.target_class], device=logits.device)
        return self.loss_fn(out[:1], out[1:]).mean() + self.target_weight * F.cross_entropy(logits[:1].float(), target)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "loss": self.loss_name, "layer": self.layer, "lr": self.lr,
                "target_class": self.target_class}
