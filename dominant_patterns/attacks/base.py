"""Base class shared by the dominant pattern and every universal-attack baseline.

Contract: ``attack.fit(loader) -> delta`` where ``loader`` yields image batches in [0, 1]
(uint8 is accepted and scaled), and ``delta`` is a float tensor [3, S, S] in pixel space with
``||delta||_inf <= xi``. Perturbed images are ``clamp(x + delta, 0, 1)`` for every method.

Checkpoints (resume after a kill or preemption): every attack has ``self.checkpointer`` (a
disabled :class:`~dominant_patterns.checkpoint.Checkpointer` unless the app set one) and a
``state_dict()``/``load_state_dict()`` pair. An attack with its own loop keeps everything the
loop changes (delta, optimizer, generator weights, counters, a ``Validator``) on ``self``, names
those attributes in ``fit_state`` (tensors, plain values, or objects with their own
``state_dict``), and drives the loop like this::

    for epoch, batches in self.checkpointer.epochs(self, loader, self.trainer.epochs):
        for x, _ in iterate_images(batches, self.device):   # resumes mid-epoch
            ...one update...
            self.checkpointer.step_done()   # saves every N steps; stops cleanly on SIGTERM/SIGUSR1

Data-free loops pass an int (steps per epoch) instead of the loader. Attacks that run one of the
shared loops of :mod:`dominant_patterns.loops` need none of this: ``optimize_pattern``,
``optimize_iterations`` and ``signed_gradient_epochs`` checkpoint delta and the optimizer state,
plus this state (an attack is the loops' :class:`~dominant_patterns.loops.LoopOwner`).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch

from dominant_patterns.checkpoint import Checkpointer
from dominant_patterns.checks import check_at_least, check_positive, check_xi
from dominant_patterns.devices import to_memory_format
from dominant_patterns.loops import LogFn, TrainerSettings, optimize_pattern
from dominant_patterns.models import ClassifierWrapper

log = logging.getLogger(__name__)


def to_device(value: Any, device: torch.device) -> Any:
    """``value`` with its tensors (also inside dicts and lists) moved to ``device`` (checkpoints load on CPU)."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device) for v in value)
    return value


def capped(iterations: int, max_iterations: int | None, key: str = "iterations",
           trainer_cap: int | None = None) -> int:
    """The iteration count actually run: the published ``iterations``, capped by ``max_iterations``.

    ``trainer_cap`` (``trainer.max_iterations``) caps every iteration-budget attack at once, e.g. in a
    smoke run of a sweep over attacks, where attack-specific keys cannot be set for all of them.
    """
    run = check_at_least(f"attack.{key}", int(iterations), 1)
    for name, cap in {"attack.max_iterations": max_iterations, "trainer.max_iterations": trainer_cap}.items():
        if cap is not None:
            run = min(run, check_at_least(name, int(cap), 1))
    return run


class UniversalAttack(ABC):
    """One universal perturbation for a frozen classifier.

    Args:
        model: the wrapped classifier (normalization inside; it is frozen here).
        xi: l_inf budget in [0, 1] pixel units.
        trainer: loop settings (epochs, batch size, precision, ...).
        seed: seed for any randomness the attack owns.
        on_log: callback ``(metrics, step)`` for training curves.
    """

    name: ClassVar[str] = "universal"
    #: True when the attack uses no images at all (it is still given the loader).
    data_free: ClassVar[bool] = False
    #: Attributes ``fit`` changes (tensors, plain values, or objects with ``state_dict``/``load_state_dict``
    #: such as a ``Validator``): checkpointed with ``generator`` and restored on resume.
    fit_state: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: ClassifierWrapper, xi: float, *, trainer: TrainerSettings | None = None,
                 seed: int = 0, on_log: LogFn | None = None) -> None:
        self.model = model.freeze()
        self.xi = check_xi(xi)
        self.trainer = trainer or TrainerSettings()
        self.seed = seed
        self.on_log = on_log
        self.generator = torch.Generator().manual_seed(seed)
        self.checkpointer = Checkpointer()

    def state_dict(self) -> dict[str, Any]:
        """The attack's resumable state beyond its loop's: the generator and the ``fit_state`` attributes."""
        state: dict[str, Any] = {"generator": self.generator.get_state()}
        for name in self.fit_state:
            value = getattr(self, name)
            state[name] = value.state_dict() if hasattr(value, "state_dict") else value
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "generator" in state:
            self.generator.set_state(state["generator"])
        for name in self.fit_state:
            if name not in state:
                continue
            current = getattr(self, name, None)
            if hasattr(current, "load_state_dict"):
                current.load_state_dict(state[name])
            else:
                setattr(self, name, to_device(state[name], self.device))

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def shape(self) -> tuple[int, int, int]:
        return (3, self.model.input_size, self.model.input_size)

    def zeros(self) -> torch.Tensor:
        return torch.zeros(self.shape, device=self.device)

    def project(self, delta: torch.Tensor) -> torch.Tensor:
        """Projection onto the l_inf ball of radius xi."""
        return delta.clamp(-self.xi, self.xi)

    @staticmethod
    def apply(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """Perturbed images, kept in [0, 1]."""
        return (x + delta).clamp(0.0, 1.0)

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.on_log is not None:
            self.on_log(metrics, step)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "xi": self.xi, "data_free": self.data_free}

    def sample_patterns(self) -> torch.Tensor | None:
        """Patterns ``[Z, 3, S, S]`` to evaluate instead of the one ``fit`` returned (its first row), for
        attacks whose result is a distribution (a generator); the app reports mean +- std over them.
        ``None`` (the default): the fitted pattern is the result."""
        return None

    def save_artifacts(self, out_dir: Path) -> list[str]:
        """Write what the attack learned beyond the pattern (e.g. ``generator.pt``) into ``out_dir``;
        returns the file names. Nothing by default."""
        return []

    @abstractmethod
    def fit(self, loader: Iterable[Any]) -> torch.Tensor:
        """Return the universal perturbation [3, S, S] (fp32, on the model's device)."""


class GradientAttack(UniversalAttack):
    """An attack that minimizes a per-batch loss on delta with Adam, projecting after each step.

    Subclasses implement :meth:`loss`; the loop (precision, channels-last, logging) is shared.
    """

    def __init__(self, model: ClassifierWrapper, xi: float, *, lr: float = 0.01, weight_decay: float = 0.0,
                 **kwargs: Any) -> None:
        super().__init__(model, xi, **kwargs)
        self.lr = check_positive("attack.lr", lr)
        self.weight_decay = float(weight_decay)

    def init_delta(self) -> torch.Tensor:
        return self.zeros()

    @abstractmethod
    def loss(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """Scalar loss to minimize for a batch ``x`` in [0, 1]."""

    def fit(self, loader: Iterable[Any]) -> torch.Tensor:
        return optimize_pattern(self, self.init_delta(), loader, self.loss, lr=self.lr,
                                weight_decay=self.weight_decay)

    def pattern_and_perturbed(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """One batch ``[delta, clamp(x_1 + delta), ...]``: f(delta) costs one extra row, not a pass."""
        both = torch.cat([delta.unsqueeze(0), self.apply(x, delta)])
        return to_memory_format(both, self.trainer.channels_last)
