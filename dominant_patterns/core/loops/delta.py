"""The steps of the attacks that optimize one pattern tensor directly, each run by :func:`run_steps`.

* :func:`optimize_pattern`: Adam on delta over ``trainer.epochs`` passes (the dominant pattern,
  Cosine-UAP, K patterns at once), no host sync per step, a sticky non-finite guard.
* :func:`optimize_iterations`: ``iterations`` steps of any optimizer (TUAP, GD-UAP, FFF, PD-UA and the
  newer baselines) over endless passes of a re-batched loader, synthesized inputs or no data.
* :func:`signed_gradient_epochs`: one signed-gradient update per batch for ``trainer.epochs`` passes
  (SGD-UAP, FT-UAP).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from dominant_patterns.core.checkpoint import StateFns
from dominant_patterns.core.devices import autocast, to_memory_format
from dominant_patterns.core.loops.core import LoopOwner, NonFiniteLossError, run_steps
from dominant_patterns.core.loops.feeds import Feed

log = logging.getLogger(__name__)


def delta_fields(delta: torch.Tensor, optimizer: torch.optim.Optimizer, more: dict[str, Any] | None = None,
                 load_more: Callable[[Mapping[str, Any]], None] | None = None) -> StateFns:
    """Checkpoint fields of a loop on ``delta``: delta, its optimizer and ``more`` (read back by ``load_more``)."""

    def get_state() -> dict[str, Any]:
        return {"delta": delta.detach().clone(), "optimizer": optimizer.state_dict(), **(more or {})}

    def put_state(state: Mapping[str, Any]) -> None:
        with torch.no_grad():
            delta.copy_(state["delta"].to(delta.device))
        optimizer.load_state_dict(state["optimizer"])
        if load_more is not None:
            load_more(state)

    return StateFns(get_state, put_state)


class LossWindow:
    """The loss summed on the device and a sticky non-finite flag, read with one host sync per :meth:`check`."""

    def __init__(self, device: torch.device) -> None:
        self.bad = torch.zeros((), dtype=torch.bool, device=device)
        self.total = torch.zeros((), device=device)
        self.checked = 0  # the step of the last check

    def check(self, epoch: int, step: int, delta: torch.Tensor) -> float:
        """Raise if a loss since the last check was non-finite, else the window's mean loss (up to ``step``)."""
        is_bad, total = torch.stack([self.bad.float(), self.total]).tolist()
        if is_bad:
            raise NonFiniteLossError(f"non-finite loss in epoch {epoch} between steps {self.checked} and {step}; "
                                     "keeping the last good pattern", pattern=delta.detach().clone())
        mean = total / max(step - self.checked, 1)
        self.total = torch.zeros((), device=self.total.device)
        self.checked = step
        return mean


def optimize_pattern(owner: LoopOwner, delta: torch.Tensor, loader: Iterable[Any],
                     step_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, lr: float,
                     weight_decay: float = 0.0) -> torch.Tensor:
    """Minimize ``step_loss(x, delta)`` over ``owner.trainer.epochs`` passes with Adam (or ``trainer.budget``).

    ``delta`` is fp32 and so is the Adam state (the loss may run under autocast); ``[K, 3, S, S]`` fits K
    patterns at once (passes per pattern). After every step ``delta`` is replaced by ``owner.project(delta)``.
    Returns the final delta (detached). The host syncs only every ``log_every`` steps and before a checkpoint;
    a non-finite loss raises :class:`NonFiniteLossError` carrying delta from before the first bad step.
    """
    s, ck, on_log = owner.trainer, owner.checkpointer, owner.on_log
    device = delta.device
    delta = delta.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([delta], lr=lr, weight_decay=weight_decay, fused=device.type == "cuda")
    loss_fn = torch.compile(step_loss) if s.compile else step_loss
    window = LossWindow(device)
    stats: dict[str, Any] = {"epoch_loss": 0.0, "epoch_start": 0}
    postfix: dict[str, str] = {}

    def of_epochs(epoch: int) -> str:
        return f"{epoch + 1}" if s.budget is not None else f"{epoch + 1}/{s.epochs}"

    def step(x: torch.Tensor) -> None:
        x = to_memory_format(x, s.channels_last)
        with autocast(device, s.precision):
            loss = loss_fn(x, delta)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            before = delta.detach().clone()
        optimizer.step()
        with torch.no_grad():  # no host sync: a bad loss keeps delta at its last good value until the check
            loss = loss.detach().float()
            window.bad |= ~torch.isfinite(loss)
            delta.copy_(torch.where(window.bad, before, owner.project(delta)))
            window.total += loss
        n = ck.step + 1
        logging_step = n % s.log_every == 0
        if logging_step or ck.save_due():  # a checkpoint must never hold a non-finite state
            window_steps = n - window.checked
            value = window.check(ck.epoch, n, delta)
            stats["epoch_loss"] += value * window_steps
            if on_log and logging_step:
                on_log({"train/loss": value, "train/epoch": ck.epoch}, n)
            postfix.update(epoch=of_epochs(ck.epoch), loss=f"{value:.4f}")

    def epoch_start(_epoch: int) -> None:
        if ck.batch == 0:
            stats.update(epoch_loss=0.0, epoch_start=ck.step)

    def epoch_end(epoch: int) -> None:
        window_steps = ck.step - window.checked
        stats["epoch_loss"] += window.check(epoch, ck.step, delta) * window_steps
        epoch_loss, batches = stats["epoch_loss"], ck.step - stats["epoch_start"]
        if on_log and batches:
            on_log({"train/epoch_loss": epoch_loss / batches, "train/epoch": epoch + 1}, ck.step)
        log.info("epoch %s: mean loss %.5f", of_epochs(epoch), epoch_loss / max(batches, 1))

    def load_stats(state: Mapping[str, Any]) -> None:
        stats.update(epoch_loss=float(state["epoch_loss"]), epoch_start=int(state["epoch_start"]))
        window.checked = ck.step

    try:
        run_steps(owner, step, Feed(loader, device), epochs=s.epochs, fields=delta_fields(
            delta, optimizer, stats, load_stats), pattern=delta.detach, epoch_start=epoch_start,
            epoch_end=epoch_end, patterns=delta.shape[0] if delta.dim() == 4 else 1, postfix=postfix, unit="batch")
    except NonFiniteLossError:
        log.error("non-finite loss: stopping with the last good pattern")
        raise
    return delta.detach()


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
    """Minimize ``loss_fn(x, delta)`` for ``iterations`` steps (or ``trainer.budget`` passes).

    ``x`` comes from endless passes over ``loader`` re-batched to ``batch_size``, else from ``draw()``
    (synthesized inputs; their randomness must live in the owner's state or the global RNG), else it is
    None (data-free). After each step ``delta`` is projected in place; ``after_step(step, delta)`` may edit
    it in place (rescaling) and returns True to stop early; a non-finite loss stops the fit before its
    update. Returns the final delta (detached).
    """
    s, ck, on_log = owner.trainer, owner.checkpointer, owner.on_log
    desc = desc or owner.name
    device = delta.device
    delta = delta.detach().clone().requires_grad_(True)
    opt = optimizer([delta])

    def step(x: torch.Tensor | None) -> bool:
        n = ck.step + 1
        with autocast(device, s.precision):
            loss = loss_fn(x, delta)
        if not torch.isfinite(loss):
            log.error("%s: non-finite loss at step %d; keeping the last pattern", desc, n)
            return True
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_filter is not None and delta.grad is not None:
            delta.grad.copy_(grad_filter(delta.grad))
        opt.step()
        with torch.no_grad():
            delta.copy_(owner.project(delta))
        if on_log is not None and n % s.log_every == 0:
            on_log({"train/loss": float(loss.detach())}, n)
        if after_step is None:
            return False
        with torch.no_grad():
            stop = bool(after_step(n, delta))
        if stop:
            log.info("%s: early stop at step %d", desc, n)
        return stop

    run_steps(owner, step, Feed(loader, device, batch_size=batch_size, draw=draw), max_steps=iterations,
              fields=delta_fields(delta, opt), pattern=delta.detach, desc=desc)
    return delta.detach()


def signed_gradient_epochs(
    owner: LoopOwner,
    loader: Iterable[Any],
    *,
    variable: Callable[[], torch.Tensor],
    loss_fn: Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor], torch.Tensor],
    update: Callable[[torch.Tensor, torch.Tensor], None],
    after_epoch: Callable[[int], None] | None = None,
    pattern: Callable[[], torch.Tensor] | None = None,
) -> None:
    """``owner.trainer.epochs`` passes (or ``trainer.budget`` passes) of one signed-gradient step per batch.

    Per batch ``(x, y)``: ``v = variable()``, ``g = sign(d loss_fn(x, y, v) / d v)``, then ``update(v, g)``
    stores the new value on the owner (whose ``state_dict`` holds it). ``after_epoch(epoch)`` runs at each
    epoch end (e.g. a step decay); ``pattern()`` is the current pattern (default: ``variable()``).
    """
    s, ck, on_log = owner.trainer, owner.checkpointer, owner.on_log

    def step(batch: tuple[torch.Tensor, torch.Tensor | None]) -> None:
        x, y = batch
        x = to_memory_format(x, s.channels_last)
        current = variable()
        v = current.clone().requires_grad_(True)
        loss = loss_fn(x, y, v)
        (grad,) = torch.autograd.grad(loss, v)
        update(current, grad.sign())
        n = ck.step + 1
        if on_log is not None and n % s.log_every == 0:
            on_log({"train/loss": float(loss.detach()), "train/epoch": ck.epoch}, n)

    run_steps(owner, step, Feed(loader, variable().device, labels=True), epochs=s.epochs, epoch_end=after_epoch,
              pattern=pattern or variable, unit="batch")
