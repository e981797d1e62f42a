"""UAP: universal adversarial perturbations by DeepFool accumulation (Moosavi-Dezfooli et al., CVPR 2017).

Paper: https://arxiv.org/abs/1610.08401 ; public code read: LTS4/universal (``universal_pert.py``,
``deepfool.py``) and ART's ``UniversalPerturbation``.

Norm: l_inf (``xi``), projection by clipping. Defaults (published): DeepFool (l2) over the 10
top-scoring classes, overshoot 0.02 applied at every DeepFool iteration, at most 10 DeepFool
iterations, and a step is added to v only when DeepFool converged within them; passes over the
data until the fooling rate on those images reaches 1 - delta = 0.8 (``target_fooling``), or
``max_passes``.

Differences from the public code: DeepFool runs on a mini-batch of ``deepfool_batch`` images at the
same v, then their steps are added one by one, each followed by the projection (batch 1 = the
published sequential loop); x + v is clamped to [0, 1] like every method here; ``max_images``
caps the images per pass for CPU runs (null = all). The model's own predictions are used (no labels).

Usage::

    attack = UAP(model, xi=10 / 255, max_passes=2, max_images=256)
    delta = attack.fit(loader)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

import torch

from dominant_patterns.analysis.metrics import fooling_rate
from dominant_patterns.attacks.base import UniversalAttack
from dominant_patterns.attacks.card import AttackCard
from dominant_patterns.attacks.validation import predict
from dominant_patterns.core.batches import iterate_images
from dominant_patterns.core.errors import ConfigError
from dominant_patterns.core.loops import Feed, run_steps
from dominant_patterns.models.classifier import ClassifierWrapper


def deepfool(model: ClassifierWrapper, x: torch.Tensor, *, num_candidates: int = 10, overshoot: float = 0.02,
             max_iter: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched l2 DeepFool on images ``x`` (pixel space).

    Returns ``(1 + overshoot) * r_tot`` per image and a mask of images fooled within
    ``max_iter - 1`` iterations (the public UAP code keeps only those steps).
    """
    with torch.no_grad():
        logits0 = model(x).float()
    k = min(num_candidates, logits0.shape[1])
    top = logits0.topk(k, dim=1).indices
    orig = top[:, 0]
    r_tot = torch.zeros_like(x)
    active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    iters = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    for _ in range(max_iter):
        xp = (x + (1 + overshoot) * r_tot).requires_grad_(True)
        logits = model(xp).float()
        active &= logits.argmax(1) == orig
        if not active.any():
            break
        picked = logits.gather(1, top)  # [B, k]
        grads = [torch.autograd.grad(picked[:, j].sum(), xp, retain_graph=j < k - 1)[0] for j in range(k)]
        g = torch.stack(grads, 1)  # [B, k, 3, S, S]
        w = (g[:, 1:] - g[:, :1]).flatten(2)  # [B, k-1, D]
        f = (picked[:, 1:] - picked[:, :1]).detach()  # [B, k-1]
        w_norm = w.norm(dim=2) + 1e-12
        pert = f.abs() / w_norm
        best = pert.argmin(1)
        rows = torch.arange(x.shape[0], device=x.device)
        r_i = ((pert[rows, best] + 1e-4) / w_norm[rows, best])[:, None] * w[rows, best]
        r_tot = r_tot + (r_i.view_as(x) * active.view(-1, 1, 1, 1))
        iters += active.long()
    # LTS4 keeps a step when DeepFool's loop count is below max_iter - 1
    converged = ~active & (iters < max_iter - 1)
    return ((1 + overshoot) * r_tot).detach(), converged


class UAP(UniversalAttack):
    """DeepFool-driven accumulation with l_inf projection (label-free: uses predictions).

    Args:
        overshoot: DeepFool overshoot (0.02).
        num_candidates: DeepFool candidate classes (10 top-scoring).
        max_iter_df: DeepFool iterations (10).
        target_fooling: stop when the pass's fooling rate reaches it (1 - 0.2).
        max_passes: pass limit (ART uses 20; LTS4 has none).
        max_images: images per pass (null = the whole fit set).
        deepfool_batch: images DeepFool handles at once at the same v (1 = published).
    """

    name: ClassVar[str] = "uap"
    card: ClassVar[AttackCard] = AttackCard(
        "UAP", "Moosavi-Dezfooli et al., CVPR 2017 (LTS4/universal)", 2017, "label-dependent",
        budget_unit="passes", published_budget="passes over 10k ImageNet images until 80% fooling; DeepFool (<= 10 "
        "iterations, top-10 classes) per image not yet fooled", published_source="Table 3 of the paper (paper.csv)")
    fit_state: ClassVar[tuple[str, ...]] = ("v", "passes_run", "train_fooling", "steps_added")

    def __init__(self, model: ClassifierWrapper, xi: float, *, overshoot: float = 0.02, num_candidates: int = 10,
                 max_iter_df: int = 10, target_fooling: float = 0.8, max_passes: int = 20,
                 max_images: int | None = None, deepfool_batch: int = 8, **kwargs: Any) -> None:
        super().__init__(model, xi, **kwargs)
        if max_passes < 1 or max_iter_df < 2 or deepfool_batch < 1 or num_candidates < 2:
            raise ConfigError("attack.max_passes, deepfool_batch >= 1 and max_iter_df, num_candidates >= 2 required")
        if max_images is not None and max_images < 1:
            raise ConfigError(f"attack.max_images={max_images} must be >= 1 or null")
        self.overshoot, self.num_candidates, self.max_iter_df = float(overshoot), int(num_candidates), int(max_iter_df)
        self.target_fooling, self.max_passes = float(target_fooling), int(max_passes)
        self.max_images, self.deepfool_batch = max_images, int(deepfool_batch)
        self.passes_run, self.train_fooling, self.steps_added = 0, float("nan"), 0
        self.v = self.zeros()  # the perturbation

    def chunks(self, loader: Iterable[Any]) -> Iterator[torch.Tensor]:
        seen = 0
        for x, _ in iterate_images(loader, self.device):
            if self.max_images is not None:
                x = x[: self.max_images - seen]
            for i in range(0, x.shape[0], self.deepfool_batch):
                yield x[i:i + self.deepfool_batch]
            seen += x.shape[0]
            if self.max_images is not None and seen >= self.max_images:
                return

    def pass_fooling(self, loader: Iterable[Any], v: torch.Tensor) -> float:
        clean, adv = [], []
        for x in self.chunks(loader):
            clean.append(predict(self.model, x, channels_last=self.trainer.channels_last))
            adv.append(predict(self.model, self.apply(x, v), channels_last=self.trainer.channels_last))
        return fooling_rate(torch.cat(clean), torch.cat(adv))

    def add_steps(self, x: torch.Tensor) -> None:
        """DeepFool on the images of ``x`` that ``v`` does not fool yet; add its converged steps to ``v``."""
        v = self.v
        with torch.no_grad():
            clean = self.model(x).argmax(1)
            still = self.model(self.apply(x, v)).argmax(1) == clean
        if not still.any():
            return
        xv = self.apply(x[still], v)
        dr, ok = deepfool(self.model, xv, num_candidates=self.num_candidates, overshoot=self.overshoot,
                          max_iter=self.max_iter_df)
        for i in torch.nonzero(ok).flatten().tolist():
            v = self.project(v + dr[i])
            self.steps_added += 1
        self.v = v

    def add_batch(self, x: torch.Tensor) -> None:
        """One step: the images of ``x``, ``deepfool_batch`` at a time at the same ``v``."""
        for i in range(0, x.shape[0], self.deepfool_batch):
            self.add_steps(x[i:i + self.deepfool_batch])

    def end_pass(self, p: int, loader: Iterable[Any]) -> bool:
        """After pass ``p``: its fooling rate at the current ``v``; True once it reaches ``target_fooling``."""
        self.passes_run = p + 1
        self.train_fooling = self.pass_fooling(loader, self.v)
        self.log({"train/fooling_rate": self.train_fooling, "train/pass": p + 1}, p + 1)
        return self.train_fooling >= self.target_fooling

    def fit(self, loader: Iterable[Any]) -> torch.Tensor:
        self.v = self.zeros()
        self.passes_run, self.train_fooling, self.steps_added = 0, float("nan"), 0
        # one checkpoint epoch per pass (its first max_images images), one step per loader batch
        run_steps(self, self.add_batch, Feed(loader, self.device, per_pass=self.max_images), epochs=self.max_passes,
                  epoch_end=lambda p: self.end_pass(p, loader), pattern=lambda: self.v, unit="batch")
        return self.v.detach()

    def budget_note(self) -> str:
        return (f"{self.passes_run} pass x {self.max_images or 'all'} img (until {100 * self.target_fooling:.0f}% "
                "fooling)")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "overshoot": self.overshoot, "num_candidates": self.num_candidates,
                "max_iter_df": self.max_iter_df, "target_fooling": self.target_fooling, "max_passes": self.max_passes,
                "max_images": self.max_images, "deepfool_batch": self.deepfool_batch, "passes_run": self.passes_run,
                "steps_added": self.steps_added, "train_fooling": self.train_fooling}
