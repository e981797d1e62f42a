"""The one step-driven loop every attack's fit runs in (:func:`run_steps`), and the settings loops share.

An attack supplies a step (one update from one input, returning True to stop early) and the state the
step changes (on itself, in its ``state_dict``); :func:`run_steps` owns the rest: passes over the data
(:class:`~dominant_patterns.core.loops.feeds.Feed`), the step and epoch limits or ``trainer.budget``, the pass
count (:class:`~dominant_patterns.core.loops.budget.PassMeter`), the anytime-curve hook, checkpoints and
resume (:mod:`dominant_patterns.core.checkpoint`), and the progress bar.
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

from dominant_patterns.core.checkpoint import Checkpointer, Stateful
from dominant_patterns.core.checks import check_at_least, check_choice
from dominant_patterns.core.devices import PRECISIONS
from dominant_patterns.core.errors import ConfigError
from dominant_patterns.core.loops.budget import Curve, PassMeter, record_curve
from dominant_patterns.core.loops.feeds import Feed

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
    #: Fold frozen BatchNorm layers into the convolutions before them (dominant_patterns.models.fold); the run app
    #: does so only for attacks that do not hook activations inside the network (``hooks_activations``).
    fold_bn: bool = True
    progress: bool = True
    log_every: int = 20
    #: Caps the iteration-budget baselines (TUAP, GD-UAP, FFF, PD-UA) for smoke runs; null = their own budget.
    max_iterations: int | None = None
    #: Stops every attack at this many passes (loops.budget), in place of its epochs/iterations; null = those.
    budget: int | None = None
    #: Anytime curve: score the current pattern on the evaluation set at curve_start, x curve_factor, ... passes
    #: (analysis.curves); null = no curve. Changes no result (left out of the fingerprint).
    curve_start: int | None = None
    curve_factor: float = 2.0

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None) -> TrainerSettings:
        known = {k: v for k, v in (cfg or {}).items() if k in cls.__dataclass_fields__}
        settings = cls(**known)
        check_choice("trainer.precision", settings.precision, PRECISIONS)
        if settings.budget is not None:
            settings.budget = check_at_least("trainer.budget", settings.budget, 1)
        if settings.curve_start is not None:
            settings.curve_start = check_at_least("trainer.curve_start", settings.curve_start, 1)
        if not float(settings.curve_factor) > 1:
            raise ConfigError(f"trainer.curve_factor={settings.curve_factor} must be > 1 (a geometric grid of passes)")
        return settings


class LoopOwner(Protocol):
    """What a loop needs from the attack that runs it.

    Optional attributes, read when present: ``model`` (the classifier whose passes are counted),
    ``meter`` (the :class:`PassMeter` the loop fills; the attack reports it) and ``curve`` (a
    :class:`~dominant_patterns.core.loops.budget.Curve`, or None).
    """

    name: str
    trainer: TrainerSettings
    checkpointer: Checkpointer
    on_log: LogFn | None

    def project(self, delta: torch.Tensor) -> torch.Tensor: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


def loop_meter(owner: LoopOwner) -> PassMeter:
    """The owner's meter (attacks carry one); a fresh one for owners without."""
    meter = getattr(owner, "meter", None)
    return meter if isinstance(meter, PassMeter) else PassMeter()


class StepLoop:
    """One run of :func:`run_steps`: its limits, what its checkpoints hold and when it is done.

    The checkpointed state is ``fields`` (the loop's own tensors, e.g. delta and its optimizer), the owner's
    ``state_dict`` (under ``"attack"``), the feed's carried rows, the early-stop flag, the pass count and the
    curve's state. A checkpoint of an earlier version of a loop (the owner's state at the top level, no pass
    count) still resumes.
    """

    def __init__(self, owner: LoopOwner, feed: Feed, *, epochs: int | None, max_steps: int | None,
                 fields: Stateful | None, patterns: int) -> None:
        self.owner, self.feed, self.fields, self.ck = owner, feed, fields, owner.checkpointer
        self.budget = owner.trainer.budget
        # a budget replaces the attack's own epochs and steps
        self.epochs, self.max_steps = (None, None) if self.budget is not None else (epochs, max_steps)
        self.meter = loop_meter(owner)
        self.meter.start(self.budget, patterns)
        self.curve: Curve | None = getattr(owner, "curve", None)
        self.stopped = False

    def state_dict(self) -> dict[str, Any]:
        state = {**(self.fields.state_dict() if self.fields else {}), **self.feed.state_dict(),
                 "stopped": self.stopped, "meter": self.meter.state_dict(), "attack": self.owner.state_dict()}
        return {**state, "curve": self.curve.state_dict()} if hasattr(self.curve, "state_dict") else state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.owner.load_state_dict(state["attack"] if "attack" in state else state)
        if self.fields is not None:
            self.fields.load_state_dict(state)
        self.feed.load_state_dict(state)
        self.stopped = bool(state.get("stopped", False))
        self.meter.load_state_dict(state.get("meter"), self.ck.step)
        if state.get("curve") is not None and hasattr(self.curve, "load_state_dict"):
            self.curve.load_state_dict(state["curve"])  # type: ignore[union-attr]

    @property
    def endless(self) -> bool:
        """Passes over the loader until a step limit, an early stop or the budget ends the fit."""
        return self.feed.loader is not None and self.epochs is None

    def passes(self) -> Iterator[tuple[int, Iterable[Any]]]:
        """The checkpointer's epochs: passes over the loader, or one epoch of ``max_steps`` steps without one."""
        if self.feed.loader is None:
            return self.ck.epochs(self, self.max_steps if self.max_steps is not None else sys.maxsize, 1)
        return self.ck.epochs(self, self.feed.loader, self.epochs if self.epochs is not None else sys.maxsize)

    def idle(self, passes_before: int, whole: bool) -> bool:
        """True when a whole pass under a budget made no pass at all: the budget would never be reached."""
        if self.budget is None or not whole or self.meter.passes > passes_before:
            return False
        log.warning("%s: a whole pass over the fit data made no classifier pass; stopping at %d of the budget "
                    "of %d", self.owner.name, self.meter.passes, self.budget)
        return True

    def finished(self) -> bool:
        return self.stopped or (self.max_steps is not None and self.ck.step >= self.max_steps) or \
            self.meter.exhausted()

    def after_step(self, pattern: Callable[[], torch.Tensor] | None) -> None:
        """The anytime-curve hook: a point when the curve says one is due at the passes spent."""
        if self.curve is not None and pattern is not None and self.curve.due(self.meter.passes):
            record_curve(self.curve, self.meter.passes, pattern, self.meter, self.feed.loader)

    def progress_bar(self, desc: str, unit: str) -> tqdm:
        """Counts passes under a budget, else steps (of a known total where the loop has one)."""
        if self.budget is not None:
            total, unit = self.budget, "pass"
        elif self.feed.loader is None or self.epochs is None:
            total = self.max_steps
        else:
            per_pass = self.feed.steps_per_pass()
            total = per_pass * self.epochs if per_pass is not None else None
        return tqdm(total=total, desc=desc, disable=not self.owner.trainer.progress, unit=unit, leave=False)

    def progress(self, bar: tqdm, postfix: dict[str, str] | None) -> None:
        bar.update((self.meter.passes if self.budget is not None else self.ck.step) - bar.n)
        if postfix:
            bar.set_postfix(postfix, refresh=False)


def run_steps(
    owner: LoopOwner,
    step: Callable[[Any], bool | None],
    feed: Feed,
    *,
    epochs: int | None = None,
    max_steps: int | None = None,
    fields: Stateful | None = None,
    pattern: Callable[[], torch.Tensor] | None = None,
    epoch_start: Callable[[int], None] | None = None,
    epoch_end: Callable[[int], bool | None] | None = None,
    patterns: int = 1,
    postfix: dict[str, str] | None = None,
    desc: str | None = None,
    unit: str = "it",
) -> None:
    """Call ``step(item)`` for each item of ``feed`` until the fit is done; True from the step stops it early.

    Done means: ``epochs`` passes over the feed's loader ran (None: endless), or ``max_steps`` steps, or a
    step or ``epoch_end(epoch)`` (run after each pass, also a partial last one) returned True. With
    ``trainer.budget`` = N the loop instead runs until the first step that brings the passes to N (a step
    is never split); early stops still apply. ``epoch_start(epoch)`` runs before each pass (``ck.batch``
    > 0 when resumed mid-pass). A data-free feed makes one checkpoint epoch of ``max_steps`` steps.

    ``fields`` are the loop's own checkpointed tensors (see :class:`StepLoop`). After each step the owner's
    ``curve`` (if any) is offered the current ``pattern()``; ``patterns`` > 1 fits that many patterns in one
    batch (passes are per pattern). ``postfix`` (updated by the step) is shown on the progress bar.
    """
    loop = StepLoop(owner, feed, epochs=epochs, max_steps=max_steps, fields=fields, patterns=patterns)
    ck = owner.checkpointer
    bar = loop.progress_bar(desc or owner.name, unit)
    broke = False
    try:
        # log lines print above the progress bar instead of after it on its line
        with logging_redirect_tqdm() if owner.trainer.progress else nullcontext(), \
                loop.meter.counting(getattr(owner, "model", None)):
            for epoch, batches in loop.passes():
                loop.progress(bar, postfix)
                if loop.finished():  # resumed a finished or early-stopped fit
                    broke = True
                    break
                if epoch_start is not None:
                    epoch_start(epoch)
                whole, passes_before = ck.batch == 0, loop.meter.passes
                for item in feed(batches, fresh=whole, check=whole and loop.endless):
                    if step(item):
                        loop.stopped = True
                    loop.after_step(pattern)
                    loop.progress(bar, postfix)
                    ck.step_done()  # saves every N steps; stops cleanly on SIGTERM/SIGUSR1
                    if loop.finished():
                        break
                if (epoch_end is not None and epoch_end(epoch)) or loop.idle(passes_before, whole):
                    loop.stopped = True
                if loop.finished():
                    broke = True
                    break
            if broke:
                ck.save()  # the final state: a rerun (e.g. after a kill during evaluation) returns it at once
    finally:
        bar.close()
