"""Anytime curves: the current pattern scored on the held-out evaluation set at a geometric grid of passes.

A fit with ``trainer.curve_start=N`` records a point at N, N x ``curve_factor``, ... passes (classifier image passes
with an input gradient, the compute unit of every attack): fooling rate, dominance ratio, dominant class and
top-k ratios, measured against the cached clean predictions (one forward of the evaluation set per point). The
loop calls :meth:`AnytimeCurve.record` outside autograd, uncounted, with every RNG restored after it, so a fit
with a curve gives the same pattern bitwise as one without. Nothing selects on these points: they only describe
the fit. A generator's point is the mean over its sampled patterns; a joint fit of K patterns records one curve
per pattern, each on its own evaluation set.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from dominant_patterns.analysis.metrics import evaluate_patterns, mean_over_samples
from dominant_patterns.models.classifier import ClassifierWrapper

#: What a curve point keeps of the evaluation metrics.
POINT_METRICS = ("fooling_rate", "dominance_ratio", "dominant_class", "dominant_class_name", "dominant_confidence",
                 "top1_ratio", "top3_ratio", "top5_ratio")


@dataclass
class CurveTarget:
    """Where one pattern's curve is measured: its evaluation loader and the clean predictions of it."""

    loader: Any
    clean_pred: torch.Tensor


def grid(start: int, factor: float, upto: int) -> list[int]:
    """The curve's pass counts up to ``upto``: ``start, start * factor, ...`` rounded to integers."""
    points, value = [], float(start)
    while round(value) <= upto:
        points.append(int(round(value)))
        value *= factor
    return points


class AnytimeCurve:
    """The loop's curve hook (:class:`~dominant_patterns.core.loops.budget.Curve`) for one fit.

    Args:
        model: the classifier the pattern attacks.
        targets: one :class:`CurveTarget` per pattern of the fit (K for a joint fit).
        start, factor: the grid (``start``, ``start * factor``, ... passes).
        samples: the pattern the loop offers is a generator's samples ``[Z, 3, S, S]`` (one target).
        on_point: called with (pattern index, point) for each point (the run's ``metrics.jsonl`` and W&B).
    """

    def __init__(self, model: ClassifierWrapper, targets: Sequence[CurveTarget], *, start: int, factor: float,
                 samples: bool = False, precision: str = "fp32", channels_last: bool = True,
                 on_point: Callable[[int, dict[str, Any]], None] | None = None) -> None:
        if start < 1 or factor <= 1:
            raise ValueError(f"a curve needs start >= 1 and factor > 1 (got {start}, {factor})")
        self.model, self.targets, self.samples = model, list(targets), samples
        self.start, self.factor = int(start), float(factor)
        self.precision, self.channels_last, self.on_point = precision, channels_last, on_point
        self.next = self.start
        self.points: list[list[dict[str, Any]]] = [[] for _ in self.targets]
        self.seconds = 0.0

    def due(self, passes: int) -> bool:
        return passes >= self.next

    def record(self, passes: int, pattern: torch.Tensor) -> None:
        started = time.perf_counter()
        patterns = [pattern] if pattern.dim() == 3 or self.samples else list(pattern.unbind(0))
        for index, (target, delta) in enumerate(zip(self.targets, patterns, strict=True)):
            point = {"passes": passes, **self.measure(target, delta)}
            self.points[index].append(point)
            if self.on_point is not None:
                self.on_point(index, point)
        while self.next <= passes:
            self.next = int(round(self.next * self.factor))
        self.seconds += time.perf_counter() - started

    def measure(self, target: CurveTarget, delta: torch.Tensor) -> dict[str, Any]:
        """The point metrics of one pattern (the mean over a generator's samples)."""
        scored = {f"sample_{i}": d for i, d in enumerate(delta)} if delta.dim() == 4 else {"pattern": delta}
        result = evaluate_patterns(self.model, scored, target.loader, precision=self.precision,
                                   channels_last=self.channels_last, progress=False, clean_pred=target.clean_pred)
        metrics = (result.patterns["pattern"] if len(scored) == 1 and "pattern" in scored
                   else mean_over_samples(list(result.patterns.values()))[0])
        return {k: metrics[k] for k in POINT_METRICS}

    def state_dict(self) -> dict[str, Any]:
        return {"next": self.next, "points": self.points, "seconds": self.seconds}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.next, self.points = int(state["next"]), [list(p) for p in state["points"]]
        self.seconds = float(state.get("seconds", 0.0))
