"""What a fit spends, counted where it happens, and the hook for anytime curves.

The compute unit of every attack is the **pass**: one image row through the classifier while autograd
records it (a gradient flows back through it: to the input, the pattern, a generator or, for DM-UAP, the
weights), the pattern row included. Rows forwarded without autograd (validation checks, clean predictions)
are ``forward_passes``, counted apart. :class:`PassMeter` counts both with a forward hook on the
classifier's network while a loop runs, so an attack reports what it actually makes without bookkeeping
of its own; ``trainer.budget`` = N stops the loop at the first step that reaches N passes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from dominant_patterns.core.rng_state import capture_rng, restore_rng

log = logging.getLogger(__name__)


def first_tensor(output: Any) -> torch.Tensor | None:
    """A network's output tensor (the logits of a tuple such as a head with auxiliary outputs)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return next((o for o in output if isinstance(o, torch.Tensor)), None)
    return None


class PassMeter:
    """Passes and forward-only passes of one fit (per pattern when ``patterns`` are fitted in one batch)."""

    def __init__(self) -> None:
        self.rows = self.forward_rows = 0
        self.patterns = 1
        self.budget: int | None = None
        #: the step the count starts from (> 0 after resuming a checkpoint written before passes were counted)
        self.from_step = 0
        self._paused = False

    @property
    def passes(self) -> int:
        return self.rows // self.patterns

    @property
    def forward_passes(self) -> int:
        return self.forward_rows // self.patterns

    def start(self, budget: int | None, patterns: int = 1) -> None:
        """A fresh count for a fit of ``patterns`` patterns at once that stops at ``budget`` passes (None: never)."""
        self.rows = self.forward_rows = self.from_step = 0
        self.budget, self.patterns = budget, max(int(patterns), 1)

    def exhausted(self) -> bool:
        return self.budget is not None and self.passes >= self.budget

    def _count(self, _module: nn.Module, _args: Any, output: Any) -> None:
        if self._paused:
            return
        out = first_tensor(output)
        if out is None or out.dim() == 0:
            return
        if out.requires_grad:
            self.rows += out.shape[0]
        else:
            self.forward_rows += out.shape[0]

    @contextmanager
    def counting(self, model: nn.Module | None) -> Iterator[None]:
        """Count the rows through ``model``'s network (``model.net`` of a classifier wrapper: the module every
        path runs through, also raw-input and ``functional_call`` ones) for the duration of a ``with`` block."""
        if model is None:
            yield
            return
        handle = getattr(model, "net", model).register_forward_hook(self._count)
        try:
            yield
        finally:
            handle.remove()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Rows forwarded inside the block count nowhere (measurements such as curve points)."""
        self._paused = True
        try:
            yield
        finally:
            self._paused = False

    def state_dict(self) -> dict[str, int]:
        return {"rows": self.rows, "forward_rows": self.forward_rows, "from_step": self.from_step}

    def load_state_dict(self, state: Mapping[str, Any] | None, step: int) -> None:
        """Restore the count; ``None`` (a checkpoint from before pass counting) counts on from ``step``."""
        if state is None:
            self.rows = self.forward_rows = 0
            self.from_step = step
            log.warning("the checkpoint predates pass counting: passes are counted from step %d on", step)
            return
        self.rows, self.forward_rows = int(state["rows"]), int(state["forward_rows"])
        self.from_step = int(state.get("from_step", 0))

    def report(self) -> dict[str, int]:
        """What the attack spent, for its ``describe()`` (``passes_from_step`` only when the count is partial)."""
        out = {"passes": self.passes, "forward_passes": self.forward_passes}
        return {**out, "passes_from_step": self.from_step} if self.from_step else out


@runtime_checkable
class Curve(Protocol):
    """The anytime-curve hook an attack may carry as ``attack.curve`` (None: no curve).

    After every step the loop asks ``due(passes)``; when True it calls ``record(passes, pattern)`` with the
    current pattern ``[3, S, S]`` (or ``[K, 3, S, S]``: K patterns, a generator's samples) under
    ``torch.no_grad()``, with the meter paused and every RNG restored afterwards, so a curve costs the fit no
    passes and no randomness. ``record`` must leave the fit's state alone. A curve with
    ``state_dict``/``load_state_dict`` is checkpointed with the loop (its points survive a resume).
    """

    def due(self, passes: int) -> bool: ...

    def record(self, passes: int, pattern: torch.Tensor) -> None: ...


def record_curve(curve: Curve, passes: int, pattern: Callable[[], torch.Tensor], meter: PassMeter,
                 loader: Any = None) -> None:
    """``curve.record(passes, pattern())`` outside autograd, uncounted, leaving every RNG as it found it."""
    rng = capture_rng(loader)
    try:
        with torch.no_grad(), meter.paused():
            curve.record(passes, pattern().detach())
    finally:
        restore_rng(rng, loader)
