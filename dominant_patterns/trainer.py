"""The gradient loop shared by optimization-based attacks: Adam on delta, project after each step."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from dominant_patterns.checkpoint import Checkpointer, StateFns, Stateful
from dominant_patterns.data import iterate_images
from dominant_patterns.errors import ConfigError

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


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
    progress: bool = True
    log_every: int = 20
    #: Caps the iteration-budget baselines (TUAP, GD-UAP, FFF, PD-UA) for smoke runs; null = their own budget.
    max_iterations: int | None = None

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None) -> TrainerSettings:
        known = {k: v for k, v in (cfg or {}).items() if k in cls.__dataclass_fields__}
        settings = cls(**known)
        if settings.precision not in PRECISIONS:
            raise ConfigError(f"trainer.precision={settings.precision} is not valid. "
                              f"Valid choices: {', '.join(PRECISIONS)}")
        return settings


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name} but no CUDA device is available. Valid choices here: auto, cpu")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"trainer.device={name} is not a device. "
                          "Valid choices: auto, cpu, cuda, cuda:N, mps") from exc


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """Autocast for bf16/fp16; a no-op for fp32."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def pattern_loop_state(delta: torch.Tensor, optimizer: torch.optim.Optimizer, extra_state: Stateful | None,
                       save_more: Callable[[], dict[str, Any]],
                       load_more: Callable[[Mapping[str, Any]], None]) -> StateFns:
    """Checkpoint state of a loop that optimizes ``delta``: delta, the optimizer, the attack's own state
    (``extra_state``, under ``"attack"``) and the loop's own fields (``save_more``/``load_more``)."""

    def get_state() -> dict[str, Any]:
        extra = {"attack": extra_state.state_dict()} if extra_state is not None else {}
        return {"delta": delta.detach().clone(), "optimizer": optimizer.state_dict(), **save_more(), **extra}

    def put_state(state: Mapping[str, Any]) -> None:
        with torch.no_grad():
            delta.copy_(state["delta"].to(delta.device))
        optimizer.load_state_dict(state["optimizer"])
        load_more(state)
        if extra_state is not None and "attack" in state:
            extra_state.load_state_dict(state["attack"])

    return StateFns(get_state, put_state)


def optimize_pattern(
    delta: torch.Tensor,
    loader: Iterable[Any],
    step_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    project: Callable[[torch.Tensor], torch.Tensor],
    settings: TrainerSettings,
    lr: float,
    weight_decay: float = 0.0,
    on_log: Callable[[dict[str, float], int], None] | None = None,
    desc: str = "fit",
    checkpointer: Checkpointer | None = None,
    extra_state: Stateful | None = None,
) -> torch.Tensor:
    """Minimize ``step_loss(x, delta)`` over ``settings.epochs`` passes with Adam.

    ``delta`` is fp32 and so is the Adam state (the loss may run under autocast). After every
    step ``delta`` is replaced by ``project(delta)``. Returns the final delta (detached).
    The host syncs only every ``log_every`` steps; a non-finite loss raises
    :class:`NonFiniteLossError` carrying delta from before the first bad step.
    ``checkpointer`` saves/restores delta, the Adam state and ``extra_state`` (the attack's own
    state) every N steps and at epoch ends (see :mod:`dominant_patterns.checkpoint`).
    """
    device = delta.device
    delta = delta.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([delta], lr=lr, weight_decay=weight_decay, fused=device.type == "cuda")
    loss_fn = torch.compile(step_loss) if settings.compile else step_loss
    try:
        total = settings.epochs * len(loader)  # type: ignore[arg-type]
    except TypeError:
        total = None
    bar = tqdm(total=total, desc=desc, disable=not settings.progress, unit="batch", leave=False)
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

    ck = checkpointer or Checkpointer()
    stats: dict[str, Any] = {"epoch_loss": 0.0, "epoch_start": 0}

    def load_stats(state: Mapping[str, Any]) -> None:
        nonlocal step, checked_step
        stats.update(epoch_loss=float(state["epoch_loss"]), epoch_start=int(state["epoch_start"]))
        step = checked_step = ck.step
        bar.update(step)

    state = pattern_loop_state(delta, optimizer, extra_state, lambda: dict(stats), load_stats)
    try:
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
                    delta.copy_(torch.where(bad, before, project(delta)))
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
