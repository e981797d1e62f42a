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

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from dominant_patterns.attacks.base import GradientAttack
from dominant_patterns.attacks.card import AttackCard
from dominant_patterns.core.checks import check_at_least, check_choice, check_class
from dominant_patterns.core.devices import to_memory_format
from dominant_patterns.core.loops import optimize_pattern
from dominant_patterns.core.losses import get_loss
from dominant_patterns.data.loaders import StackedLoader
from dominant_patterns.models.classifier import ClassifierWrapper

LAYERS = ("logits", "features")


class DominantPattern(GradientAttack):
    """Algorithm 1 with a similarity loss from the loss registry (cos, ed, kld).

    Args:
        loss: ``{"name": "cos", "layer": "logits"}`` or a loss name.
        target_class: optional class to steer f(delta) towards (cross-entropy on f(delta)
            weighted by ``target_weight``, added to the similarity loss).
        num_patterns: how many patterns a job fits in one pass (``attack.num_patterns``; the run app passes
            the K loaders to :meth:`fit_many`).

    K patterns in one pass (:meth:`fit_many`): each step takes one batch from each of K loaders, stacks
    ``[delta_k, clamp(x_k + delta_k)]`` for all k into one forward of ``K * (B + 1)`` rows and sums the K
    per-pattern losses of the same :meth:`loss`. Adam and the projection act elementwise, so every pattern follows
    the trajectory it would follow alone, up to float rounding (a batched convolution may round differently at
    K * (B + 1) rows than at B + 1: bitwise equal for the tiny test model on CPU, not for EfficientNet-Lite0).
    Each pattern's own loss is summed on the device since the last :meth:`take_losses` of each window
    (``"window"`` between log steps, ``"epoch"``); the sums are checkpointed, so a resumed fit reports the same
    per-pattern curves.
    """

    name: ClassVar[str] = "dominant"
    card: ClassVar[AttackCard] = AttackCard(
        "Ours (dominant pattern)", "Ye, Qin, Chen, Huang: Dominant Patterns (arXiv 2021; 1105042987/Dominant-Patterns)",
        2021, "label-free", multi_pattern=True, budget_unit="epochs",
        published_budget="10 epochs x 40,000 images, batch 32", published_passes=10 * 1250 * 33,
        published_source="Tables 3-5 of the paper (paper.csv)", ours=True)
    fit_state: ClassVar[tuple[str, ...]] = ("loss_sums", "loss_steps")
    loss_sums: dict[str, torch.Tensor] | None = None
    loss_steps: dict[str, int] | None = None

    def __init__(self, model: ClassifierWrapper, xi: float, *, loss: dict[str, Any] | str = "cos",
                 target_class: int | None = None, target_weight: float = 1.0, num_patterns: int = 1,
                 **kwargs: Any) -> None:
        super().__init__(model, xi, **kwargs)
        check_at_least("attack.num_patterns", num_patterns, 1)
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
        """L(f(delta), f(clamp(x + delta))) (+ the target term), summed over patterns: one pattern ``delta``
        [3, S, S] with ``x`` [B, 3, S, S], or K with ``delta`` [K, 3, S, S] and ``x`` [K, B, 3, S, S]."""
        if delta.dim() == 3:
            delta, x = delta[None], x[None]
        k, b = x.shape[:2]
        both = torch.cat([delta[:, None], self.apply(x, delta[:, None])], dim=1).flatten(0, 1)
        both = to_memory_format(both, self.trainer.channels_last)
        if self.target_class is None:
            out, logits = self.outputs(both), None
        else:
            logits, feats = self.model.forward_with_features(both)
            out = logits if self.layer == "logits" else feats
        out = out.reshape(k, b + 1, -1)
        per_pattern = torch.stack([self.loss_fn(out[i, :1], out[i, 1:]).mean() for i in range(k)])
        if logits is not None:
            pattern_logits = logits.reshape(k, b + 1, -1)[:, 0].float()
            target = torch.full((k,), self.target_class, device=logits.device)  # type: ignore[arg-type]
            per_pattern = per_pattern + self.target_weight * F.cross_entropy(pattern_logits, target, reduction="none")
        if self.loss_sums is not None and self.loss_steps is not None:
            with torch.no_grad():
                for window, total in self.loss_sums.items():
                    total += per_pattern.detach().float()
                    self.loss_steps[window] += 1
        return per_pattern.sum()

    def fit_many(self, loaders: Sequence[Iterable[Any]]) -> torch.Tensor:
        """K patterns [K, 3, S, S], pattern k fitted on ``loaders[k]`` (one forward of K * (B + 1) rows a step)."""
        delta = torch.zeros((len(loaders), *self.shape), device=self.device)
        self.loss_sums = {w: torch.zeros(len(loaders), device=self.device) for w in ("window", "epoch")}
        self.loss_steps = {"window": 0, "epoch": 0}
        return optimize_pattern(self, delta, StackedLoader(loaders), self.loss, lr=self.lr,
                                weight_decay=self.weight_decay)

    def take_losses(self, window: str) -> list[float]:
        """Each pattern's mean loss over the steps since the last call for ``window`` (one host sync)."""
        assert self.loss_sums is not None and self.loss_steps is not None, "take_losses before fit_many"
        steps = self.loss_steps[window]
        means = (self.loss_sums[window] / max(steps, 1)).tolist()
        self.loss_sums[window] = torch.zeros_like(self.loss_sums[window])
        self.loss_steps[window] = 0
        return means

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "loss": self.loss_name, "layer": self.layer, "lr": self.lr,
                "target_class": self.target_class}
