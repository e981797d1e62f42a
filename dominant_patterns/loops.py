"""The optimisation loops every attack runs in, and the settings they share.

* :func:`optimize_pattern`: Adam on delta over ``settings.epochs`` passes (the dominant pattern,
  Cosine-UAP, K patterns at once), no host sync per step, a sticky non-finite guard.
* :func:`optimize_iterations`: an iteration budget (TUAP, GD-UAP, FFF, PD-UA) over endless passes of
  a loader re-batched by :class:`Rebatcher`, over synthesized inputs, or over no data at all.
* :func:`signed_gradient_epochs`: one signed-gradient update per batch for ``settings.epochs``
  passes (SGD-UAP, FT-UAP).

Each loop is typed against :class:`LoopOwner`, what it needs from its attack: a name, the trainer
settings, the projection, a logger and the checkpointer that saves and restores everything the loop
changes plus the owner's own ``state_dict`` (see :mod:`dominant_patterns.checkpoint`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from dominant_patterns.checkpoint import Checkpointer, StateFns
from dominant_patterns.checks import check_choice
from dominant_patterns.data import iterate_images
from dominant_patterns.devices import PRECISIONS, autocast, to_memory_format
from dominant_patterns.errors import ConfigError

log = logging.getLogger(__name__)

LogFn = Callable[[dict[str, float], int], None]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; ``pattern`` holds the last good pattern (before that step)."""

    def __init__(self, message: str, pattern: torch.Tensor | None = None) -> None:
        super().__init__(message)
        self.pattern = pattern


@dataclass
class TrainerSettings:
    """How the loop runs (not what it optimizes)."""

    epochs: int = 10
    batch_size: int = 32
    eval_batch_size: int = 128
    device: str = "auto"
    precision: str = "fp32"
    channels_last: bool = True
    compile: bool = False
    #: Fold frozen BatchNorm layers into the convolutions before them (dominant_patterns.fold); the run app
    #: does so only for attacks that do not hook activations inside the network (``hooks_activations``).
    fold_bn: bool = True
    progress: bool = True
    log_every: int = 20
    #: Caps the iteration-budget baselines (TUAP, GD-UAP, FFF, PD-UA) for smoke runs; null = their own budget.
    max_iterations: int | None = None

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None) -> TrainerSettings:
        known = {k: v for k, v in (cfg or {}).items() if k in cls.__dataclass_fields__}
        settings = cls(**known)
        check_choice("trainer.precision", settings.precision, PRECISIONS)
        return settings


class LoopOwner(Protocol):
    """What a loop needs from the attack that runs it."""

    name: str
    trainer: TrainerSettings
    checkpointer: Checkpointer
    on_log: LogFn | None

    def project(self, delta: torch.Tensor) -> torch.Tensor: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


def pattern_loop_state(delta: torch.Tensor, optimizer: torch.optim.Optimizer, owner: LoopOwner,
                       save_more: Callable[[], dict[str, Any]],
                       load_more: Callable[[Mapping[str, Any]], None]) -> StateFns:
    """Checkpoint state of a loop that optimizes ``delta``: delta, the optimizer, the owner's own state
    (under ``"attack"``) and the loop's own fields (``save_more``/``load_more``)."""

    def get_state() -> dict[str, Any]:
        return {"delta": delta.detach().clone(), "optimizer": optimizer.state_dict(), **save_more(),
                "attack": owner.state_dict()}

    def put_state(state: Mapping[str, Any]) -> None:
        with torch.no_grad():
            delta.copy_(state["delta"].to(delta.device))
        optimizer.load_state_dict(state["optimizer"])
        load_more(state)
        if "attack" in state:
            owner.load_state_dict(state["attack"])

    return StateFns(get_state, put_state)


def optimize_pattern(owner: LoopOwner, delta: torch.Tensor, loader: Iterable[Any],
                     step_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, lr: float,
                     weight_decay: float = 0.0) -> torch.Tensor:
    """Minimize ``step_loss(x, delta)`` over ``owner.trainer.epochs`` passes with Adam.

    ``delta`` is fp32 and so is the Adam state (the loss may run under autocast). After every
    step ``delta`` is replaced by ``owner.project(delta)``. Returns the final delta (detached).
    The host syncs only every ``log_every`` steps; a non-finite loss raises
    :class:`NonFiniteLossError` carrying delta from before the first bad step.
    """
    settings, ck, on_log = owner.trainer, owner.checkpointer, owner.on_log
    device = delta.device
    delta = delta.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([delta], lr=lr, weight_decay=weight_decay, fused=device.type == "cuda")
    loss_fn = torch.compile(step_loss) if settings.compile else step_loss
    try:
        total = settings.epochs * len(loader)  # type: ignore[arg-type]
    except TypeError:
        total = None
    bar = tqdm(total=total, desc=owner.name, disable=not settings.progress, unit="batch", leave=False)
    # No host sync per step: the loss is summed on the device, and a sticky device flag keeps delta at
    # its last good value from the first non-finite loss on; both are read every log_every steps.
    bad = torch.zeros((), dtype=torch.bool, device=device)
    window_loss = torch.zeros((), device=device)
    step, checked_step = 0, 0

    def check(epoch: int) -> float:
        """Sync once: raise if a non-finite loss was seen since the last check, else the window's mean loss."""
        nonlocal window_loss, checked_step
        is_bad, total_loss = torch.stack([bad.float(), window_loss]).tolist()
        if is_bad:
            raise NonFiniteLossError(f"non-finite loss in epoch {epoch} between steps {checked_step} and {step}; "
                                     "keeping the last good pattern", pattern=delta.detach().clone())
        mean = total_loss / max(step - checked_step, 1)
        window_loss = torch.zeros((), device=device)
        checked_step = step
        return mean

    stats: dict[str, Any] = {"epoch_loss": 0.0, "epoch_start": 0}

    def load_stats(state: Mapping[str, Any]) -> None:
        nonlocal step, checked_step
        stats.update(epoch_loss=float(state["epoch_loss"]), epoch_start=int(state["epoch_start"]))
        step = checked_step = ck.step
        bar.update(step)

    state = pattern_loop_state(delta, optimizer, owner, lambda: dict(stats), load_stats)
    try:
        # log lines (the epoch losses) print above the progress bar instead of after it on its line
        with logging_redirect_tqdm() if settings.progress else nullcontext():
            for epoch, batches in ck.epochs(state, loader, settings.epochs):
                if ck.batch == 0:
                    stats.update(epoch_loss=0.0, epoch_start=step)
                for x, _ in iterate_images(batches, device):
                    x = to_memory_format(x, settings.channels_last)
                    with autocast(device, settings.precision):
                        loss = loss_fn(x, delta)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    with torch.no_grad():
                        before = delta.detach().clone()
                    optimizer.step()
                    with torch.no_grad():
                        loss = loss.detach().float()
                        bad |= ~torch.isfinite(loss)
                        delta.copy_(torch.where(bad, before, owner.project(delta)))
                        window_loss += loss
                    step += 1
                    bar.update(1)
                    logging_step = step % settings.log_every == 0
                    if logging_step or ck.save_due():  # a checkpoint must never hold a non-finite state
                        window_steps = step - checked_step
                        value = check(epoch)
                        stats["epoch_loss"] += value * window_steps
                        if on_log and logging_step:
                            on_log({"train/loss": value, "train/epoch": epoch}, step)
                        bar.set_postfix(epoch=f"{epoch + 1}/{settings.epochs}", loss=f"{value:.4f}")
                    ck.step_done()
                window_steps = step - checked_step
                stats["epoch_loss"] += check(epoch) * window_steps
                epoch_loss, epoch_start = stats["epoch_loss"], stats["epoch_start"]
                epoch_batches = step - epoch_start
                if on_log and epoch_batches:
                    on_log({"train/epoch_loss": epoch_loss / epoch_batches, "train/epoch": epoch + 1}, step)
                log.info("epoch %d/%d: mean loss %.5f", epoch + 1, settings.epochs, epoch_loss / max(epoch_batches, 1))
    except NonFiniteLossError:
        log.error("non-finite loss: stopping with the last good pattern")
        raise
    finally:
        bar.close()
    return delta.detach()


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


def optimize_iterations(
    owner: LoopOwner,
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
    ``draw()`` (synthesized inputs, e.g. noise; its randomness must live in the owner's state or the
    global RNG), else it is None (data-free). After each step ``delta`` is projected in place;
    ``after_step(step, delta)`` may edit it in place (rescaling) and returns True to stop early.
    Returns the final delta (detached).

    The checkpointer saves and restores delta, the optimizer state, the step, the early-stop flag,
    the rows the re-batching carries, the RNGs and the owner's own state (its generator, validator,
    counters); each pass over ``loader`` is one checkpoint epoch (resumed mid-pass by replaying its
    batch order), a data-free fit is one epoch of ``iterations`` steps.
    """
    s, ck, on_log = owner.trainer, owner.checkpointer, owner.on_log
    desc = desc or owner.name
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

    state = pattern_loop_state(delta, opt, owner, save_loop, load_loop)
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
                    delta.copy_(owner.project(delta))
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


def signed_gradient_epochs(
    owner: LoopOwner,
    loader: Iterable[Any],
    *,
    variable: Callable[[], torch.Tensor],
    loss_fn: Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor], torch.Tensor],
    update: Callable[[torch.Tensor, torch.Tensor], None],
    after_epoch: Callable[[int], None] | None = None,
) -> None:
    """``owner.trainer.epochs`` passes of one signed-gradient step per batch (SGD-UAP, FT-UAP).

    Per batch ``(x, y)``: ``v = variable()``, ``g = sign(d loss_fn(x, y, v) / d v)``, then ``update(v, g)``
    stores the new value on the owner (whose ``state_dict`` the checkpointer saves every N steps).
    ``after_epoch(epoch)`` runs at each epoch end (e.g. a step decay).
    """
    s, ck, on_log = owner.trainer, owner.checkpointer, owner.on_log
    device = variable().device
    bar = tqdm(desc=owner.name, disable=not s.progress, unit="batch", leave=False)
    try:
        for epoch, batches in ck.epochs(owner, loader, s.epochs):  # resumes mid-epoch after a restore
            bar.update(ck.step - bar.n)
            for x, y in iterate_images(batches, device):
                x = to_memory_format(x, s.channels_last)
                current = variable()
                v = current.clone().requires_grad_(True)
                loss = loss_fn(x, y, v)
                (grad,) = torch.autograd.grad(loss, v)
                update(current, grad.sign())
                bar.update(1)
                if on_log is not None and (ck.step + 1) % s.log_every == 0:
                    on_log({"train/loss": float(loss.detach()), "train/epoch": epoch}, ck.step + 1)
                ck.step_done()  # saves every N steps; stops cleanly on SIGTERM/SIGUSR1
            if after_epoch is not None:
                after_epoch(epoch)
    finally:
        bar.close()
