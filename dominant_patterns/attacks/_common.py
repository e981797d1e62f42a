"""Helpers shared by the baseline attacks: the checkpointed iteration loop, validation fooling, iteration caps.

Kept private (not an attack): each baseline module still holds its whole objective.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from tqdm.auto import tqdm

from dominant_patterns.attacks.base import UniversalAttack
from dominant_patterns.data import iterate_images
from dominant_patterns.errors import ConfigError
from dominant_patterns.metrics import fooling_rate
from dominant_patterns.models import ClassifierWrapper
from dominant_patterns.trainer import TrainerSettings, autocast, pattern_loop_state, to_memory_format

log = logging.getLogger(__name__)


def capped(iterations: int, max_iterations: int | None, key: str = "iterations",
           trainer_cap: int | None = None) -> int:
    """The iteration count actually run: the published ``iterations``, capped by ``max_iterations``.

    ``trainer_cap`` (``trainer.max_iterations``) caps every iteration-budget attack at once, e.g. in a
    smoke run of a sweep over attacks, where attack-specific keys cannot be set for all of them.
    """
    if int(iterations) < 1:
        raise ConfigError(f"attack.{key}={iterations} must be an integer >= 1")
    caps = {"attack.max_iterations": max_iterations, "trainer.max_iterations": trainer_cap}
    run = int(iterations)
    for name, cap in caps.items():
        if cap is None:
            continue
        if int(cap) < 1:
            raise ConfigError(f"{name}={cap} must be >= 1 (or null for no cap)")
        run = min(run, int(cap))
    return run


class Rebatcher:
    """Re-batches image batches to ``batch_size`` rows (``None``: as they come).

    The rows left over after a batch are carried to the next one, across passes of the loader;
    ``state()``/``load()`` keep them in a checkpoint so a resumed stream continues identically.
    """

    def __init__(self, batch_size: int | None = None) -> None:
        self.batch_size = batch_size
        self.rest: torch.Tensor | None = None

    def __call__(self, images: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        for x in images:
            if self.batch_size is None:
                yield x
                continue
            joined = x if self.rest is None else torch.cat([self.rest, x])
            while joined.shape[0] >= self.batch_size:
                out, joined = joined[: self.batch_size], joined[self.batch_size:]
                self.rest = joined if joined.shape[0] else None
                yield out
            self.rest = joined if joined.shape[0] else None

    def state(self) -> torch.Tensor | None:
        return None if self.rest is None else self.rest.detach().clone()

    def load(self, rest: torch.Tensor | None, device: torch.device) -> None:
        self.rest = None if rest is None else rest.to(device)


def take_images(loader: Iterable[Any], device: torch.device, count: int) -> torch.Tensor:
    """The first ``count`` images of ``loader`` (fewer if it holds fewer), float [0, 1]."""
    parts, held = [], 0
    for x, _ in iterate_images(loader, device):
        parts.append(x[: count - held])
        held += parts[-1].shape[0]
        if held >= count:
            break
    if not parts:
        raise ConfigError("the fit loader yielded no images")
    return torch.cat(parts)


@torch.no_grad()
def predict(model: ClassifierWrapper, x: torch.Tensor, *, batch_size: int = 128, channels_last: bool = True,
            precision: str = "fp32") -> torch.Tensor:
    """Top-1 predictions for images in [0, 1], in chunks."""
    out = []
    for i in range(0, x.shape[0], batch_size):
        with autocast(x.device, precision):
            out.append(model(to_memory_format(x[i:i + batch_size], channels_last)).argmax(1))
    return torch.cat(out)


class Validator:
    """Fooling rate of a pattern on fixed held-out images, with patience-based early stopping.

    The clean predictions are computed once; the rate itself is ``metrics.fooling_rate``.
    """

    def __init__(self, model: ClassifierWrapper, images: torch.Tensor, *, patience: int,
                 channels_last: bool = True, precision: str = "fp32") -> None:
        self.model, self.images, self.patience = model, images, int(patience)
        self.kw = {"channels_last": channels_last, "precision": precision}
        self.clean = predict(model, images, **self.kw)
        self.best_rate, self.best_delta, self.bad_checks = -1.0, None, 0

    @classmethod
    def from_loader(cls, model: ClassifierWrapper, loader: Iterable[Any], device: torch.device, *, count: int,
                    patience: int, settings: TrainerSettings) -> Validator:
        """A validator on the first ``count`` images of ``loader``, run with the trainer's precision/layout."""
        return cls(model, take_images(loader, device, count), patience=patience,
                   channels_last=settings.channels_last, precision=settings.precision)

    def state_dict(self) -> dict[str, Any]:
        return {"best_rate": self.best_rate, "best_delta": self.best_delta, "bad_checks": self.bad_checks}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        best = state["best_delta"]
        self.best_rate, self.bad_checks = float(state["best_rate"]), int(state["bad_checks"])
        self.best_delta = None if best is None else best.to(self.images.device)

    def rate(self, delta: torch.Tensor) -> float:
        return fooling_rate(self.clean, predict(self.model, (self.images + delta).clamp(0, 1), **self.kw))

    def check(self, delta: torch.Tensor) -> bool:
        """Score ``delta``; keep it if best so far. True when patience is exhausted (stop)."""
        rate = self.rate(delta)
        if rate > self.best_rate:
            self.best_rate, self.best_delta, self.bad_checks = rate, delta.detach().clone(), 0
        else:
            self.bad_checks += 1
        return self.bad_checks >= self.patience

    def best(self, fallback: torch.Tensor) -> torch.Tensor:
        return fallback.detach() if self.best_delta is None else self.best_delta

    def final(self, delta: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Check the final ``delta`` too; return the best checked pattern and its fooling rate."""
        self.check(delta)
        return self.best(delta), self.best_rate


def mean_image(model: ClassifierWrapper, batch: int = 1) -> torch.Tensor:
    """The dataset-mean image in [0, 1] pixels ("no data": it normalizes to zero)."""
    s = model.input_size
    return model.mean.float().view(1, 3, 1, 1).expand(batch, 3, s, s).clone()


def log_activation_norms(acts: dict[str, torch.Tensor], names: list[str], kind: str) -> torch.Tensor:
    """Sum over layers of log(||a_l||^2 / 2) (``l2``, GD-UAP) or log mean |a_l| (``abs_mean``, FFF).

    Each norm is taken over the whole batch tensor of a layer, as in the public TF code.
    """
    terms = []
    for name in names:
        a = acts[name].float()
        if kind == "l2":
            terms.append(torch.log(a.pow(2).sum() / 2 + 1e-12))
        elif kind == "abs_mean":
            terms.append(torch.log(a.abs().mean() + 1e-12))
        else:
            raise ValueError(f"unknown activation objective {kind}")
    return torch.stack(terms).sum()


def uniform_init(shape: tuple[int, ...], xi: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """delta ~ U[-xi, xi] (FFF, GD-UAP initialization), drawn on CPU for reproducibility."""
    return ((torch.rand(shape, generator=generator) * 2 - 1) * xi).to(device)


def optimize_iterations(
    attack: UniversalAttack,
    delta: torch.Tensor,
    loss_fn: Callable[[torch.Tensor | None, torch.Tensor], torch.Tensor],
    *,
    optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
    iterations: int,
    loader: Iterable[Any] | None = None,
    batch_size: int | None = None,
    draw: Callable[[], torch.Tensor] | None = None,
    after_step: Callable[[int, torch.Tensor], bool] | None = None,
    grad_filter: Callable[[torch.Tensor], torch.Tensor] | None = None,
    desc: str | None = None,
) -> torch.Tensor:
    """Minimize ``loss_fn(x, delta)`` for ``iterations`` steps.

    ``x`` comes from passes over ``loader`` (endless, re-batched to ``batch_size``), else from
    ``draw()`` (synthesized inputs, e.g. noise; its randomness must live in ``extra_state`` or the
    global RNG), else it is None (data-free). After each step ``delta`` is projected in place;
    ``after_step(step, delta)`` may edit it in place (rescaling) and returns True to stop early.
    Returns the final delta (detached).

    ``attack`` supplies the projection, the trainer settings (precision, logging, progress), the
    logger and the checkpointer, which saves and restores delta, the optimizer state, the step, the
    early-stop flag, the rows the re-batching carries, the RNGs and the attack's own state (its
    generator, validator, counters); each pass over ``loader`` is one checkpoint epoch (resumed
    mid-pass by replaying its batch order), a data-free fit is one epoch of ``iterations`` steps.
    """
    s, ck, project, on_log = attack.trainer, attack.checkpointer, attack.project, attack.on_log
    desc = desc or attack.name
    device = delta.device
    delta = delta.detach().clone().requires_grad_(True)
    opt = optimizer([delta])
    rebatch = Rebatcher(batch_size)
    flags = {"stopped": False}
    bar = tqdm(total=iterations, desc=desc, disable=not s.progress, unit="it", leave=False)

    def save_loop() -> dict[str, Any]:
        return {"stopped": flags["stopped"], "rest": rebatch.state()}

    def load_loop(state: Mapping[str, Any]) -> None:
        flags["stopped"] = bool(state["stopped"])
        rebatch.load(state["rest"], device)
        bar.update(ck.step)

    def done() -> bool:
        return flags["stopped"] or ck.step >= iterations

    def inputs(batches: Iterable[Any]) -> Iterator[torch.Tensor | None]:
        if loader is None:
            return (draw() if draw is not None else None for _ in batches)
        fresh = ck.batch == 0

        def images() -> Iterator[torch.Tensor]:
            empty = True
            for x, _ in iterate_images(batches, device):
                empty = False
                yield x
            if empty and fresh:
                raise ConfigError("the fit loader yielded no images")

        return rebatch(images())

    state = pattern_loop_state(delta, opt, attack, save_loop, load_loop)
    passes = ck.epochs(state, iterations, 1) if loader is None else ck.epochs(state, loader, sys.maxsize)
    try:
        for _, batches in passes:
            if done():  # resumed a finished or early-stopped fit
                break
            for x in inputs(batches):
                step = ck.step + 1
                with autocast(device, s.precision):
                    loss = loss_fn(x, delta)
                if not torch.isfinite(loss):
                    log.error("%s: non-finite loss at step %d; keeping the last pattern", desc, step)
                    flags["stopped"] = True
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if grad_filter is not None and delta.grad is not None:
                    delta.grad.copy_(grad_filter(delta.grad))
                opt.step()
                with torch.no_grad():
                    delta.copy_(project(delta))
                bar.update(1)
                if on_log is not None and step % s.log_every == 0:
                    on_log({"train/loss": float(loss.detach())}, step)
                if after_step is not None:
                    with torch.no_grad():
                        if after_step(step, delta):
                            log.info("%s: early stop at step %d", desc, step)
                            flags["stopped"] = True
                ck.step_done()
                if done():
                    break
            if done():  # no new pass once finished
                break
        ck.save()  # the final state: a rerun (e.g. after a kill during evaluation) returns it at once
    finally:
        bar.close()
    return delta.detach()
