"""Several dominant patterns in one pass: K patterns (e.g. K seeds) optimized together.

Each step takes one batch from each of K loaders, stacks ``[delta_k, clamp(x_k + delta_k)]`` for
all k into one forward of ``K * (B + 1)`` rows, and sums the K per-pattern losses. Adam and the
projection act elementwise, so every pattern follows the trajectory it would follow alone (K = 1
is the plain :class:`DominantPattern`), up to float rounding: a batched convolution may round
differently at K * (B + 1) rows than at B + 1 (bitwise equal for the tiny test model on CPU, not for
EfficientNet-Lite0). The small models that leave a GPU idle at batch 32 get K times the work per launch.

Usage::

    attack = MultiSeedDominant(model, xi=10 / 255)
    loaders = [make_loader(fit_set, batch_size=32, shuffle=True, seed=s) for s in range(4)]
    deltas = attack.fit_many(loaders)   # [4, 3, S, S]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from dominant_patterns.attacks.dominant import DominantPattern
from dominant_patterns.devices import to_memory_format
from dominant_patterns.loops import optimize_pattern
from dominant_patterns.rng_state import loader_generators


def images_of(batch: Any) -> torch.Tensor:
    """The image tensor of an ``x``, ``(x, y)`` or ``{"image": x}`` batch, unconverted."""
    if isinstance(batch, dict):
        return batch["image"]
    return batch[0] if isinstance(batch, (tuple, list)) else batch


class StackedLoader:
    """Zip K loaders into batches ``[K, B, 3, S, S]`` (each step cut to the smallest of the K batches)."""

    def __init__(self, loaders: Sequence[Iterable[Any]]) -> None:
        if not loaders:
            raise ValueError("StackedLoader needs at least one loader")
        self.loaders = list(loaders)

    def __len__(self) -> int:
        return min(len(loader) for loader in self.loaders)  # type: ignore[arg-type]

    def rng_generators(self) -> dict[str, torch.Generator]:
        """The K loaders' generators (checkpointed, so a resumed fit replays each one's order)."""
        return {f"{k}.{name}": g for k, loader in enumerate(self.loaders)
                for name, g in loader_generators(loader).items()}

    def __iter__(self) -> Iterator[tuple[torch.Tensor, None]]:
        for batches in zip(*self.loaders, strict=False):
            xs = [images_of(batch) for batch in batches]
            b = min(x.shape[0] for x in xs)
            if b:
                yield torch.stack([x[:b] for x in xs]), None


class MultiSeedDominant(DominantPattern):
    """:class:`DominantPattern` fitting K patterns at once with :meth:`fit_many` (``fit`` fits one).

    Each pattern's own loss is summed on the device (no sync) since the last :meth:`take_losses` of
    each window (``"window"``, e.g. between log steps, and ``"epoch"``); the sums are checkpointed, so a
    resumed fit reports the same per-pattern curves.
    """

    name: ClassVar[str] = "dominant_multi"
    max_patterns: ClassVar[int | None] = None
    fit_state: ClassVar[tuple[str, ...]] = ("loss_sums", "loss_steps")
    loss_sums: dict[str, torch.Tensor] | None = None
    loss_steps: dict[str, int] | None = None

    def fit_many(self, loaders: Sequence[Iterable[Any]]) -> torch.Tensor:
        """K patterns [K, 3, S, S], pattern k fitted on ``loaders[k]``."""
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

    def loss(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """Sum over k of the single-pattern loss; ``x`` [K, B, 3, S, S] with ``delta`` [K, 3, S, S]."""
        if delta.dim() == 3:
            return super().loss(x, delta)
        k, b = x.shape[:2]
        both = torch.cat([delta[:, None], self.apply(x, delta[:, None])], dim=1).flatten(0, 1)
        both = to_memory_format(both, self.trainer.channels_last)
        if self.target_class is None:
            out = self.outputs(both)
            logits = None
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
