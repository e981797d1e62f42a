"""Checkpoints, resume and stop signals for every attack's training loop.

A :class:`Checkpointer` owns ``checkpoint.ckpt`` (and the one before it, ``checkpoint.prev.ckpt``)
in a run's output dir. It saves the loop state every ``every`` steps and at each epoch end,
restores it on resume, and turns SIGTERM/SIGUSR1 (under submitit: SIGUSR1 and its preemption
signal USR2; SIGTERM is left to submitit) into a checkpoint followed by :class:`Interrupted`.

The protocol for a loop (the shared loops of :mod:`dominant_patterns.core.loops` follow it for every attack
that runs in them)::

    ck = self.checkpointer                     # disabled (no files) unless the app set one
    for epoch, batches in ck.epochs(self, loader, self.trainer.epochs):
        for x, _ in iterate_images(batches, self.device):   # resumes mid-epoch after a restore
            ...one update...
            ck.step_done()                     # may save; raises Interrupted after a stop signal
    return self.delta

``self`` (any object with ``state_dict()``/``load_state_dict()``) must hold everything the loop
changes: delta, optimizer state, generator weights, counters. Its state must hold tensors and
plain Python values only (it is loaded with ``torch.load(weights_only=True)``).

Reproducibility: the checkpoint stores the RNG states (torch, CUDA, numpy, random and the
loader's generator) at the epoch start and at the checkpoint. On resume the epoch's loader is
re-created from the epoch-start state and the batches already used are drawn and dropped, so
the data order and per-batch augmentation (in-process or in workers) match an uninterrupted
run; on CPU the resumed pattern equals it bitwise.

File format: one header line ``DPCKPT1 <sha256 of the rest>`` followed by a ``torch.save`` zip.
Truncated or corrupted files fail the checksum and are never half-loaded; the previous
checkpoint is used instead, or the run starts over with a message.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import signal
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from dominant_patterns.core.checkpoint_file import FORMAT, CheckpointError, read_checkpoint, write_checkpoint
from dominant_patterns.core.checks import check_choice
from dominant_patterns.core.errors import ConfigError, UserInputError
from dominant_patterns.core.rng_state import capture_rng, restore_rng

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.ckpt"
PREVIOUS = "checkpoint.prev.ckpt"
RESUME_MODES = ("auto", "true", "false")


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


class StateFns:
    """Adapts a getter/setter pair (e.g. closures over a loop's locals) to :class:`Stateful`."""

    def __init__(self, get: Any, put: Any) -> None:
        self.get, self.put = get, put

    def state_dict(self) -> dict[str, Any]:
        return self.get()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.put(state)


class Interrupted(Exception):  # noqa: N818 - it is a normal outcome, not an error
    """A stop signal arrived; the state was checkpointed (``path``) and the run should exit."""

    def __init__(self, signum: int, path: Path | None, epoch: int, step: int, previous_handler: Any = None) -> None:
        self.signum, self.path, self.epoch, self.step = signum, path, epoch, step
        self.previous_handler = previous_handler
        where = f"checkpoint saved to {path}" if path else "no checkpoint yet (a rerun starts this fit over)"
        super().__init__(f"interrupted by {signal.Signals(signum).name} at epoch {epoch}, step {step}; {where}")


# ---------------------------------------------------------------------------------------------
# Files


def fingerprint(flat: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(dict(sorted(flat.items()))).encode()).hexdigest()[:16]


def config_differences(old: Mapping[str, str], new: Mapping[str, str], limit: int = 6) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    parts = [f"{k}: {old.get(k, '<absent>')} -> {new.get(k, '<absent>')}" for k in keys[:limit]]
    return "; ".join(parts) + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


# ---------------------------------------------------------------------------------------------

class Checkpointer:
    """Saves and restores a loop's state in ``directory`` (``None``: disabled, nothing is written).

    Args:
        directory: the run's output dir.
        every: save every ``every`` optimizer steps (0: only at epoch ends).
        config: the run's flattened config (see :func:`flat_config`); a checkpoint of a different
            config is refused, naming the keys that differ.
        resume: ``auto`` continues from a usable checkpoint and starts fresh otherwise; ``true``
            requires one; ``false`` sets existing ones aside and starts over.
    """

    def __init__(self, directory: Path | None = None, *, every: int = 0, config: Mapping[str, str] | None = None,
                 resume: str | bool = "auto") -> None:
        self.directory = Path(directory) if directory is not None else None
        self.every = int(every)
        self.config = dict(config or {})
        self.fingerprint = fingerprint(self.config)
        self.resume = check_choice("resume", str(resume).lower(), RESUME_MODES)
        self.epoch = self.batch = self.step = 0
        self.loaded: dict[str, Any] | None = None
        self.stop_signal: int | None = None
        self._previous_handlers: dict[int, Any] = {}
        self._in_loop = False
        self._state: Stateful | None = None
        self._loader: Any = None
        self._epoch_rng: dict[str, Any] | None = None
        self._write_failed = False
        #: Fit seconds and segments (process runs) of the checkpointed fit before this one, read on resume.
        self.seconds_before = 0.0
        self.segments_before = 0
        self._clock: float | None = None

    @property
    def enabled(self) -> bool:
        return self.directory is not None

    @property
    def path(self) -> Path:
        assert self.directory is not None
        return self.directory / CHECKPOINT

    @property
    def previous_path(self) -> Path:
        assert self.directory is not None
        return self.directory / PREVIOUS

    # -- loading ------------------------------------------------------------------------------

    def prepare(self) -> dict[str, Any] | None:
        """Find the checkpoint to resume from (per ``resume``); call before the loop starts."""
        if not self.enabled:
            return None
        candidates = [p for p in (self.path, self.previous_path) if p.exists()]
        if self.resume == "false":
            for p in candidates:
                p.replace(p.with_name(p.name + ".discarded"))
                log.info("resume=false: set %s aside and starting over", p)
            return None
        problems = []
        for p in candidates:
            try:
                payload = read_checkpoint(p)
            except CheckpointError as exc:
                problems.append(str(exc))
                log.warning("%s", exc)
                continue
            if payload["fingerprint"] != self.fingerprint:
                diff = config_differences(payload.get("config", {}), self.config)
                raise ConfigError(f"the checkpoint {p} belongs to a different config ({diff}). Rerun with the "
                                  "old settings to continue it, or add resume=false to start over in this dir")
            if problems:
                log.warning("falling back to the previous checkpoint %s (epoch %d, step %d)", p, payload["epoch"],
                            payload["step"])
            self.loaded = payload
            self.epoch, self.batch, self.step = payload["epoch"], payload["batch"], payload["step"]
            self.seconds_before = float(payload.get("fit_seconds", 0.0))  # absent from checkpoints before it existed
            self.segments_before = int(payload.get("segments", 1))
            log.info("resuming from %s: epoch %d, batch %d, step %d", p, self.epoch, self.batch, self.step)
            return payload
        if problems:
            for p in candidates:
                p.replace(p.with_name(p.name + ".corrupt"))
            msg = f"no usable checkpoint ({'; '.join(problems)}); the bad files were renamed *.corrupt"
            if self.resume == "true":
                raise UserInputError(f"resume=true but {msg}")
            log.warning("%s; starting over", msg)
            print(f"warning: {msg}; starting over", flush=True)
        elif self.resume == "true":
            raise UserInputError(f"resume=true but {self.directory} holds no checkpoint ({CHECKPOINT}); "
                                 "point hydra.run.dir (or hydra.sweep.dir) at the interrupted run's dir")
        return None

    # -- fit time across segments ----------------------------------------------------------------

    def start_clock(self) -> None:
        """Start timing this segment of the fit (a resumed fit adds the seconds its checkpoint stored)."""
        self._clock = time.perf_counter()

    def elapsed(self) -> float:
        """Fit seconds so far: earlier segments (from the checkpoint) plus this one since :meth:`start_clock`."""
        return self.seconds_before + (time.perf_counter() - self._clock if self._clock is not None else 0.0)

    @property
    def segments(self) -> int:
        """How many process runs this fit took (1 for an uninterrupted one)."""
        return self.segments_before + 1

    # -- the loop -----------------------------------------------------------------------------

    def epochs(self, state: Stateful, loader: Iterable[Any] | int, num_epochs: int
               ) -> Iterator[tuple[int, Iterable[Any]]]:
        """Yield ``(epoch, batches)`` from the resume point on; ``loader`` may be an int (steps per epoch).

        Restores ``state`` (and the RNGs) from the checkpoint found by :meth:`prepare`, saves at
        each epoch end and checks for stop signals there.
        """
        self._state, self._loader = state, loader
        payload, self.loaded = self.loaded, None
        if payload is not None:
            state.load_state_dict(payload["state"])
        else:  # nothing to resume: a fresh fit (also when the same attack fits a second time)
            self.epoch = self.batch = self.step = 0
        start = self.epoch
        self._in_loop = True
        try:
            for epoch in range(start, num_epochs):
                self.epoch = epoch
                if payload is not None and self.batch > 0:  # mid-epoch: replay the epoch's order
                    self._epoch_rng = payload["epoch_rng"]
                    restore_rng(self._epoch_rng, loader)
                    batches = self._counted(loader, skip=self.batch)
                    restore_rng(payload["rng"], loader)
                else:
                    if payload is not None:
                        restore_rng(payload["rng"], loader)
                    self.batch = 0
                    self._epoch_rng = capture_rng(loader)
                    batches = self._counted(loader, skip=0)
                payload = None
                yield epoch, batches
                self.epoch, self.batch = epoch + 1, 0
                if self.enabled:
                    self.save()
                self._check_stop()
            if payload is not None:  # resumed a finished fit: nothing left to do
                restore_rng(payload["rng"], loader)
        finally:
            self._in_loop = False

    def _counted(self, loader: Iterable[Any] | int, skip: int) -> Iterator[Any]:
        source: Iterator[Any] = iter(range(loader) if isinstance(loader, int) else loader)
        if skip:
            dropped = sum(1 for _ in itertools.islice(source, skip))
            if dropped < skip:
                raise CheckpointError(f"the checkpoint is at batch {skip} of the epoch but the loader has only "
                                      f"{dropped}; the data changed since it was written")
        return self._count(source)

    def _count(self, source: Iterator[Any]) -> Iterator[Any]:
        for item in source:
            self.batch += 1
            yield item

    def save_due(self) -> bool:
        """True when the coming :meth:`step_done` will write a checkpoint (loops sync before it)."""
        return self.enabled and (self.stop_signal is not None or (self.every > 0 and (self.step + 1) % self.every == 0))

    def step_done(self) -> None:
        """Call after every update: counts the step, saves every ``every`` steps, honours stop signals."""
        self.step += 1
        if self.enabled and self.every > 0 and self.step % self.every == 0 and self.stop_signal is None:
            self.save()
        self._check_stop()

    def _check_stop(self) -> None:
        if self.stop_signal is None:
            return
        path = self.save() if self.enabled and self._state is not None else None
        signum = self.stop_signal
        raise Interrupted(signum, path, self.epoch, self.step, self._previous_handlers.get(signum))

    def save(self) -> Path | None:
        """Write the current state now (atomically); returns the path, or None when disabled."""
        if not self.enabled or self._state is None:
            return None
        assert self.directory is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        payload = {"format": FORMAT, "fingerprint": self.fingerprint, "config": self.config, "epoch": self.epoch,
                   "batch": self.batch, "step": self.step, "state": self._state.state_dict(),
                   "rng": capture_rng(self._loader), "epoch_rng": self._epoch_rng, "time": time.time(),
                   "fit_seconds": self.elapsed(), "segments": self.segments}
        try:
            write_checkpoint(self.path, payload, previous=self.previous_path)
        except OSError as exc:  # e.g. a full disk: keep fitting, the older checkpoint stays valid
            if not self._write_failed:
                log.warning("could not write checkpoint %s (%s); continuing, older checkpoints are kept", self.path,
                            exc)
                self._write_failed = True
            return None
        return self.path

    # -- signals ------------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """Turn SIGTERM/SIGUSR1 (under submitit: SIGUSR1 and its preemption signal USR2) into a checkpoint and
        :class:`Interrupted`.

        Inside the loop the signal is honoured at the next step end (the state is consistent
        there); elsewhere it raises at once. The previous handler (e.g. submitit's requeue) is
        kept on the exception so the caller can chain to it. Undo with :meth:`restore_signal_handlers`.
        """
        if threading.current_thread() is not threading.main_thread() or self._previous_handlers:
            return
        signums = [signal.SIGTERM, signal.SIGUSR1]
        usr2 = signal.getsignal(signal.SIGUSR2)
        if callable(usr2) and usr2 is not signal.default_int_handler:  # submitit's checkpoint-and-requeue
            # SIGTERM stays submitit's (it ignores it): SLURM sends it before USR2 when preempting and before
            # SIGKILL when cancelling; exiting on it ended a preempted job before its requeue
            signums = [signal.SIGUSR1, signal.SIGUSR2]
        for s in signums:
            self._previous_handlers[s] = signal.signal(s, self._on_signal)

    def restore_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for s, handler in self._previous_handlers.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        self._previous_handlers = {}

    @contextlib.contextmanager
    def handle_signals(self) -> Iterator[None]:
        """:meth:`install_signal_handlers` for the duration of a ``with`` block."""
        self.install_signal_handlers()
        try:
            yield
        finally:
            self.restore_signal_handlers()

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stop_signal = signum
        if not self._in_loop:
            saved = self.path if self.enabled and self.path.exists() else None
            raise Interrupted(signum, saved, self.epoch, self.step, self._previous_handlers.get(signum))
