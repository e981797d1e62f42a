"""Base class shared by the dominant pattern and every universal-attack baseline.

Contract: ``attack.fit(loader) -> delta`` where ``loader`` yields image batches in [0, 1]
(uint8 is accepted and scaled), and ``delta`` is a float tensor [3, S, S] in pixel space with
``||delta||_inf <= xi``. Perturbed images are ``clamp(x + delta, 0, 1)`` for every method.

Loops: every attack fits in the loops of :mod:`dominant_patterns.core.loops` (it is their
:class:`~dominant_patterns.core.loops.LoopOwner`) and supplies only its step: ``optimize_pattern``,
``optimize_iterations`` and ``signed_gradient_epochs`` take a loss, others pass a step to ``run_steps``.
The loops checkpoint and resume (``self.checkpointer``, a disabled
:class:`~dominant_patterns.core.checkpoint.Checkpointer` unless the app set one), so an attack keeps
what its step changes beyond delta and the optimizer (generator weights, counters, a ``Validator``) on
``self`` and names those attributes in ``fit_state`` (tensors, plain values, or objects with their own
``state_dict``). They count what the fit spends in ``self.meter`` (classifier passes, reported by
:meth:`UniversalAttack.describe`), stop at ``trainer.budget`` passes when set, and offer the current
pattern to ``self.curve`` (anytime curves; None by default).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch

from dominant_patterns.attacks.card import AttackCard
from dominant_patterns.core.checkpoint import Checkpointer
from dominant_patterns.core.checks import check_at_least, check_positive, check_xi
from dominant_patterns.core.devices import to_memory_format
from dominant_patterns.core.loops import Curve, LogFn, PassMeter, TrainerSettings, optimize_pattern
from dominant_patterns.models.classifier import ClassifierWrapper

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


def capped_epochs(epochs: int, max_epochs: int | None) -> int:
    """The epochs actually run: the published ``epochs``, capped by ``attack.max_epochs`` (None: uncapped)."""
    run = check_at_least("attack.epochs", epochs, 1)
    return run if max_epochs is None else min(run, check_at_least("attack.max_epochs", max_epochs, 1))


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
    #: What the attack says about itself (display name, data setting, needs, budget, published numbers).
    card: ClassVar[AttackCard]
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
        #: what the fit spent (filled by the loops) and the anytime-curve hook (loops.budget)
        self.meter = PassMeter()
        self.curve: Curve | None = None

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

    @property
    def display_name(self) -> str:
        """The name tables print (an instance may qualify its card's, e.g. with a prior)."""
        return self.card.display_name

    @property
    def data_setting(self) -> str:
        """The card's data setting, unless this instance's options change it."""
        return self.card.data_setting

    @property
    def data_free(self) -> bool:
        """True when the attack fits on no image (fit images serve its validation at most)."""
        return self.data_setting == "data-free"

    @property
    def hooks_activations(self) -> bool:
        """True when the objective reads activations inside the network (BatchNorm is then not folded)."""
        return self.card.hooks_activations

    def describe(self) -> dict[str, Any]:
        """What the record says about the attack: its card, this instance's settings and what it ran."""
        return {"name": self.name, "display_name": self.display_name, "xi": self.xi, "data_free": self.data_free,
                "data_setting": self.data_setting, "card": self.card.describe(), **self.meter.report(),
                "budget_note": self.spent_note(), "data_note": self.data_note()}

    def spent_note(self) -> str:
        """The record's budget note: under ``trainer.budget`` the passes run of it (the budget replaces the
        attack's own epochs, iterations or caps, so their note would misstate the run); else :meth:`budget_note`."""
        budget = self.trainer.budget
        if budget is None:
            return self.budget_note()
        return f"{self.meter.passes:,} of {budget:,} passes (trainer.budget)"

    def budget_note(self) -> str:
        """What the fit ran in the attack's own unit (the embedded comparison's budget column)."""
        return f"{self.trainer.epochs} epochs" if self.card.budget_unit == "epochs" else "-"

    def data_note(self) -> str:
        """Which images the fit used (the embedded comparison's data column)."""
        return "none (val. only)" if self.data_free else "fit crops"

    def at_limit(self, steps: int, limit: int) -> bool:
        """True at the fit's last step: ``limit`` steps ran or, under ``trainer.budget``, the passes reached it."""
        return self.meter.exhausted() if self.trainer.budget is not None else steps >= limit

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


class IterationBudget:
    """Mixin of the iteration-budget attacks: ``steps_run`` of ``run_iterations`` (their cap of the published
    ``iterations``) is what they report having run."""

    iterations: int
    run_iterations: int
    steps_run: int

    def budget_note(self) -> str:
        return f"{self.steps_run or self.run_iterations} it (cap {self.run_iterations} of {self.iterations})"


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
