"""What the generator baselines (GAP, NAG, AAA) share: held-out validation with best-weights selection,
NAG's fooling and diversity losses, and their fit (:meth:`GeneratorAttack.train_generator`: one generator
update per step in :func:`~dominant_patterns.core.loops.run_steps`; the attack keeps its network, optimizer,
selection and counters on ``self`` and names them in ``fit_state``, the loop checkpoints them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from dominant_patterns.attacks.base import UniversalAttack
from dominant_patterns.attacks.validation import Validator, predict
from dominant_patterns.core.loops import Feed, run_steps

log = logging.getLogger(__name__)


def row_keys(x: torch.Tensor) -> torch.Tensor:
    """One int64 key per image of ``x`` (its 8-bit pixels hashed exactly), to recognise held-out rows."""
    q = (x.detach() * 255).round().to(torch.int64).flatten(1)
    weights = torch.randint(1, 2 ** 31, (q.shape[1],), generator=torch.Generator().manual_seed(0))
    return (q * weights.to(q.device)).sum(1)


class HeldOut:
    """Drops the validation images from the training stream (exact copies; augmented crops differ)."""

    def __init__(self, images: torch.Tensor) -> None:
        self.keys = row_keys(images)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x[~torch.isin(row_keys(x), self.keys.to(x.device))]


class Selection:
    """The best generator weights by held-out fooling rate, and patience-based early stopping.

    ``patience`` None: never stop early (GAP keeps the best of its fixed number of checks).
    """

    def __init__(self, validator: Validator, patience: int | None) -> None:
        self.validator, self.patience = validator, patience
        self.best_rate, self.bad_checks, self.checks = -1.0, 0, 0
        self.best: dict[str, torch.Tensor] | None = None

    def rate(self, patterns: torch.Tensor, target: int | None = None) -> float:
        """Fooling rate on the validation images, image i perturbed by ``patterns[i % Z]`` (NAG's validation:
        a batch of sampled perturbations over the images); with ``target``, the share predicted as it."""
        v = self.validator
        hits, step = 0, 128
        for i in range(0, v.images.shape[0], step):
            x = v.images[i:i + step]
            idx = torch.arange(i, i + x.shape[0], device=x.device) % patterns.shape[0]
            pred = predict(v.model, (x + patterns[idx]).clamp(0, 1), **v.kw)
            hits += int((pred == target).sum()) if target is not None else int((pred != v.clean[i:i + step]).sum())
        return hits / max(v.images.shape[0], 1)

    def check(self, rate: float, net: nn.Module) -> bool:
        """Keep ``net``'s weights if ``rate`` is the best so far; True when patience is exhausted."""
        self.checks += 1
        if rate > self.best_rate:
            self.best_rate, self.bad_checks = rate, 0
            self.best = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            self.bad_checks += 1
        return self.patience is not None and self.bad_checks >= self.patience

    def restore(self, net: nn.Module) -> None:
        if self.best is not None:
            net.load_state_dict(self.best)

    def state_dict(self) -> dict[str, Any]:
        return {"best_rate": self.best_rate, "bad_checks": self.bad_checks, "checks": self.checks, "best": self.best}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best_rate, self.bad_checks = float(state["best_rate"]), int(state["bad_checks"])
        self.checks = int(state["checks"])
        device = self.validator.images.device
        self.best = None if state["best"] is None else {k: v.to(device) for k, v in state["best"].items()}


def fit_set_size(loader: Any) -> int | None:
    """Images per pass of ``loader`` when it says (a DataLoader's dataset, a DeviceLoader's ``n``), else None."""
    for size in (lambda: len(loader.dataset), lambda: int(loader.n)):
        try:
            return int(size())
        except (AttributeError, TypeError):
            continue
    return None


def fooling_loss(probs: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """NAG's -log(1 - q_c), q_c the batch mean of the perturbed probability of each clean top-1 class."""
    q = probs.gather(1, clean[:, None]).mean()
    return -torch.log((1 - q).clamp_min(1e-6))


def diversity_loss(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """-mean squared distance between the features of x + delta_n and x + delta_n' (NAG's ``feature_loss``)."""
    return -F.mse_loss(f1.float(), f2.float())


class GeneratorAttack(UniversalAttack):
    """A universal attack whose result is a trained generator network ``self.net`` (Adam ``self.optimizer``).

    ``state_dict`` holds the network, the optimizer and the selection through ``fit_state``;
    :meth:`save_artifacts` writes ``generator.pt`` (weights, architecture and what the attack describes).
    """

    fit_state: ClassVar[tuple[str, ...]] = ("net", "optimizer", "selection", "steps_run")
    net: nn.Module
    optimizer: torch.optim.Optimizer
    selection: Selection | None
    batch_size: int

    def architecture(self) -> dict[str, Any]:
        """Constructor arguments of ``self.net`` (saved beside its weights)."""
        return {}

    def save_artifacts(self, out_dir: Path) -> list[str]:
        payload = {"class": type(self.net).__name__, "architecture": self.architecture(),
                   "state_dict": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
                   "attack_info": self.describe()}
        torch.save(payload, Path(out_dir) / "generator.pt")
        return ["generator.pt"]

    def train_generator(self, step: Callable[[torch.Tensor | None], bool], max_steps: int,
                        pattern: Callable[[], torch.Tensor], loader: Iterable[Any] | None = None) -> None:
        """``step(x)`` once per update in the shared loop until it returns True or ``max_steps`` ran (or the budget
        is spent); ``x``: batches of ``batch_size`` fit images, the validation images held out, or None without a
        loader (data-free). ``pattern()`` gives the current pattern(s) for anytime curves."""
        assert self.selection is not None, "train after validation()"
        feed = Feed() if loader is None else Feed(loader, self.device, batch_size=self.batch_size,
                                                  keep=HeldOut(self.selection.validator.images))
        run_steps(self, step, feed, max_steps=max_steps, pattern=pattern)

    def data_note(self) -> str:
        return f"fit crops ({self.held_out()} held out for val.)"

    def held_out(self) -> int:
        """Validation images actually used (the fit set may hold fewer than asked for); 0 before ``fit``."""
        return 0 if self.selection is None else int(self.selection.validator.images.shape[0])

    def validation(self, loader: Iterable[Any], count: int, patience: int | None) -> Selection:
        """Held-out validation on the first ``count`` fit images, at most half the fit set when its size is known."""
        total = fit_set_size(loader)
        if total is not None and count > total // 2:
            log.warning("%s: attack.val_images=%d of %d fit images; holding out %d (half) instead", self.name, count,
                        total, max(total // 2, 1))
            count = max(total // 2, 1)
        validator = Validator.from_loader(self.model, loader, self.device, count=count, patience=patience or 1,
                                          settings=self.trainer)
        return Selection(validator, patience)
