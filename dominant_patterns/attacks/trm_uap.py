"""TRM-UAP: truncated ratio maximization, a data-free UAP (Liu, Feng, Wang, Yang, Ming, ICCV 2023).

Paper: "TRM-UAP: Enhancing the Transferability of Data-Free Universal Adversarial Perturbation via
Truncated Ratio Maximization", ICCV 2023 (openaccess.thecvf.com, ``Liu_TRM-UAP_Enhancing_the_Transferability``);
public code read: RandolphCarter0/TRMUAP (``trmuap.py``, ``strategy.py``, ``functions.py``, ``train.py``).

Norm: l_inf (``xi``). Objective (minimized), over the outputs A_l of the ``conv`` layer group in execution
order (pre-BN, pre-ReLU, each over the whole prior batch)::

    L = lam * sum_{l < int(n L)} log(||min(A_l, 0)||_2 / 2 + 1e-9)
        - sum_{l < int(p L)} log(||max(A_l, 0)||_2^2 / 2 + 1e-9)

(the positive part squared, the negative part not: the code's choice). The network sees delta + z, z a
batch of artificial images (the range prior), fed *without* the wrapper's normalization (``network_input:
raw``, as the code feeds the torchvision model), or as pixels through it (``pixels``).

Priors (their curricula are functions of the iteration, so they need no state of their own):
    ``gauss``: N(127.5, [s + 20, s + 10, s]) noise (RGB), GD-UAP augmentation (scale, flip, rotation, blur,
        crop), short side to 256/224 of the input, centre crop, minus 127.5, / 255 (z in [-0.5, 0.5]);
        s = 10 + gamma every 400 iterations (at most 127); the batch doubles at 1600, 2400, 3200.
    ``jigsaw`` / ``jigsaw_resnet152`` / ``jigsaw_googlenet``: a grid of random cells cut at f random points
        per axis (f + 2 rows for GoogLeNet), a random colour per cell and channel, median-filtered with a
        disk of radius 5 (at 224 px), / 255 (z in [0, 1]); f and the batch grow on the schedule named.
    ``none``: delta alone.
Defaults (code): delta ~ U[-xi, xi], Adam lr 0.1, at most 10k iterations, projection after every step;
when more than 50% of the pixels sit at +-xi and that share moved by less than 1e-5, delta is halved (x0.8
once patience is nearly spent); the fooling rate on ``val_images`` fit images is checked after more than
400 iterations since the last check (200 when a rescale is due); the fit stops after ``patience`` checks
without improvement in total (not in a row). The code returns the *last* delta (``return_best: false``).
Per-architecture p / n / lambda / prior come from ``per_model`` (``conf/attack/trm_uap.yaml``), else
``fallback`` (the code's argparse defaults); a non-null top-level key overrides both.

Usage::

    attack = TRMUAP(model, xi=10 / 255, max_iterations=400)   # fit images: validation only
    delta = attack.fit(loader)
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import Any, ClassVar

import torch

from dominant_patterns.attacks.activations import uniform_init
from dominant_patterns.attacks.base import IterationBudget, UniversalAttack, capped
from dominant_patterns.attacks.card import AttackCard
from dominant_patterns.attacks.priors import TRM_CURRICULA, Curriculum, gauss_prior, jigsaw_prior
from dominant_patterns.attacks.validation import Validator
from dominant_patterns.core.checks import check_at_least, check_choice, check_positive
from dominant_patterns.core.devices import to_memory_format
from dominant_patterns.core.errors import ConfigError
from dominant_patterns.core.loops import optimize_iterations
from dominant_patterns.models.classifier import ClassifierWrapper
from dominant_patterns.models.hooks import capture_activations, layer_names

NETWORK_INPUTS = ("raw", "pixels")


# ---------------------------------------------------------------------------------------------
# Curricula


def resolve_settings(model_name: str, per_model: Mapping[str, Mapping[str, Any]], fallback: Mapping[str, Any],
                     overrides: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The settings for ``model_name``: its ``per_model`` entry (else ``fallback``), non-null ``overrides`` on top.

    Returns the settings and where they came from (``per_model[name]`` or ``fallback``).
    """
    entry = per_model.get(model_name)
    settings = dict(fallback if entry is None else entry)
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return settings, ("fallback" if entry is None else f"per_model[{model_name}]")


def kept_layers(total: int, rate: float) -> int:
    """``int(total * rate)``, at least one layer unless ``rate`` is 0 (the code's truncation)."""
    kept = int(total * rate)
    return 1 if kept <= 0 and rate != 0 else min(kept, total)


def truncated_ratio_loss(acts: Sequence[torch.Tensor], p_rate: float, n_rate: float, lam: float) -> torch.Tensor:
    """TRM's loss: lam * sum log(||min(A, 0)||_2 / 2 + 1e-9) - sum log(||max(A, 0)||_2^2 / 2 + 1e-9)."""
    pos = [torch.log(a.float().clamp(min=0).square().sum() / 2 + 1e-9) for a in acts[:kept_layers(len(acts), p_rate)]]
    neg = [torch.log(torch.linalg.vector_norm(a.float().clamp(max=0)) / 2 + 1e-9)
           for a in acts[:kept_layers(len(acts), n_rate)]]
    zero = acts[0].new_zeros((), dtype=torch.float32)
    return lam * sum(neg, zero) - sum(pos, zero)


# ---------------------------------------------------------------------------------------------
# Priors: random decisions from the attack's generator (CPU), image work on the target device


# ---------------------------------------------------------------------------------------------


class PriorUAP(IterationBudget, UniversalAttack):
    """The loop TRM-UAP and PSP-UAP share: Adam on delta against artificial prior images (data-free), with
    the code's saturation rescaling and validation-based stopping; subclasses define :meth:`loss`.

    Everything the fit changes is in ``fit_state`` (the validator, the rescale/validation counters, the
    steps run) or ``self.generator`` (all prior randomness); the curricula are functions of the step.
    """

    fit_state: ClassVar[tuple[str, ...]] = ("validator", "schedule", "steps_run", "rescales")
    curricula: ClassVar[Mapping[str, Curriculum]] = TRM_CURRICULA

    def __init__(self, model: ClassifierWrapper, xi: float, *, settings: Mapping[str, Any], settings_source: str,
                 lr: float = 0.1, iterations: int = 10000, max_iterations: int | None = None, prior_batch: int = 1,
                 network_input: str = "raw", val_every: int = 400, val_every_after_rescale: int = 200,
                 patience: int = 5, val_images: int = 1000, saturation: float = 0.5,
                 saturation_change: float = 1e-5, rescale: float = 0.5, rescale_late: float = 0.8,
                 return_best: bool = False, **kwargs: Any) -> None:
        super().__init__(model, xi, **kwargs)
        self.settings, self.settings_source = dict(settings), settings_source
        self.lr = check_positive("attack.lr", lr)
        self.iterations, self.max_iterations = int(iterations), max_iterations
        self.run_iterations = capped(iterations, max_iterations, trainer_cap=self.trainer.max_iterations)
        self.prior_name = check_choice("attack.prior", self.settings["prior"], tuple(self.curricula))
        self.curriculum = self.curricula[self.prior_name]
        if self.settings.get("gauss_gamma") is not None:
            self.curriculum = replace(self.curriculum, gamma=float(self.settings["gauss_gamma"]))
        self.prior_batch = check_at_least("attack.prior_batch", prior_batch, 1)
        self.network_input = check_choice("attack.network_input", network_input, NETWORK_INPUTS)
        self.val_every, self.val_every_after_rescale = int(val_every), int(val_every_after_rescale)
        self.patience, self.val_images = check_at_least("attack.patience", patience, 1), int(val_images)
        self.saturation, self.saturation_change = float(saturation), float(saturation_change)
        self.rescale, self.rescale_late, self.return_best = float(rescale), float(rescale_late), bool(return_best)
        self.layers = layer_names(model, "conv")
        self.validator: Validator | None = None
        self.schedule: dict[str, float] = {}
        self.steps_run = self.rescales = 0
        self.val_rate = float("nan")

    def rate(self, key: str) -> float:
        value = self.settings.get(key)
        if value is None:
            raise ConfigError(f"attack.{key} is not set for model '{self.model.name}' (no per_model entry or "
                              "fallback value)")
        return float(value)

    # -- what the network sees ------------------------------------------------------------------

    def centre(self) -> torch.Tensor | float:
        """The pixel value of a raw 0 (``pixels`` input): the gauss prior is centred, jigsaw is not."""
        return {"gauss": 0.5, "jigsaw": 0.0}.get(self.curriculum.prior, self.model.mean.float())

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Logits for raw inputs ``t`` (delta + z): straight into the network (``raw``, the code) or as pixels
        ``clamp(t + centre, 0, 1)`` through the wrapper's normalization (``pixels``)."""
        t = to_memory_format(t, self.trainer.channels_last)
        if self.network_input == "raw":
            return self.model.net(t)
        return self.model((t + self.centre()).clamp(0, 1))

    def conv_outputs(self, t: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The conv outputs in execution order (a dict keeps the order the hooks fired in) and the logits."""
        with capture_activations(self.model, self.layers) as acts:
            logits = self.forward(t)
        return list(acts.values()), logits

    def draw(self) -> torch.Tensor | None:
        """The prior batch of the coming iteration (raw scale, the code's z), or None for ``none``."""
        step, c, size = self.steps_run + 1, self.curriculum, self.model.input_size
        n = c.batch(step, self.prior_batch)
        if c.prior == "gauss":
            std = c.std(step)
            return torch.stack([gauss_prior(size, std, self.generator, self.device) - 0.5 for _ in range(n)])
        if c.prior == "jigsaw":
            f = c.fre(step)
            return torch.stack([jigsaw_prior(size, f + c.extra_rows, f, self.generator, self.device)
                                for _ in range(n)])
        return None

    def prior_images(self, step: int) -> int:
        """Prior images drawn at iteration ``step`` (1 for ``none``)."""
        return 1 if self.curriculum.prior == "none" else self.curriculum.batch(step, self.prior_batch)

    # -- the loop ---------------------------------------------------------------------------------

    def after_step(self, step: int, delta: torch.Tensor) -> bool:
        """Saturation rescaling and validation-based stopping, in the code's order; True stops the fit."""
        sch, validator = self.schedule, self.validator
        assert validator is not None
        self.steps_run = step
        sch["since_val"] += 1
        sat = float((delta.abs() >= self.xi * (1 - 1e-6)).float().mean())
        rescale = abs(sat - sch["sat"]) < self.saturation_change and sat > self.saturation
        sch["sat"] = sat
        if sch["since_val"] > self.val_every or (rescale and sch["since_val"] > self.val_every_after_rescale):
            sch["since_val"] = 0
            before = max(validator.best_rate, 0.0)
            validator.check(delta)
            if validator.best_rate <= before:
                sch["fails"] += 1
            self.log({"val/fooling_rate": validator.best_rate, "train/saturation": sat}, step)
            if sch["fails"] >= self.patience:
                return True
        if rescale:
            delta.mul_(self.rescale if sch["fails"] < self.patience - 1 else self.rescale_late)
            self.rescales += 1
        return False

    def fit(self, loader: Iterable[Any]) -> torch.Tensor:
        self.validator = Validator.from_loader(self.model, loader, self.device, count=self.val_images,
                                               patience=sys.maxsize, settings=self.trainer)
        self.schedule = {"sat": 0.0, "since_val": 0, "fails": 0}
        self.steps_run = self.rescales = 0
        delta = optimize_iterations(
            self, uniform_init(self.shape, self.xi, self.generator, self.device), self.loss,
            optimizer=partial(torch.optim.Adam, lr=self.lr), iterations=self.run_iterations, draw=self.draw,
            after_step=self.after_step, desc=f"{self.name}[{self.prior_name}]")
        if self.return_best:
            delta, self.val_rate = self.validator.final(delta)
        else:
            self.val_rate = self.validator.best_rate if self.validator.best_delta is not None else float("nan")
        return delta

    def loss(self, z: torch.Tensor | None, delta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def image_passes(self) -> int:
        """Prior images through the network with a gradient so far (forward + backward)."""
        return sum(self.prior_images(k) for k in range(1, self.steps_run + 1))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.settings, "settings_from": self.settings_source, "lr": self.lr,
                "iterations": self.iterations, "max_iterations": self.max_iterations,
                "run_iterations": self.run_iterations, "steps_run": self.steps_run, "rescales": self.rescales,
                "network_input": self.network_input, "prior_batch": self.prior_batch, "n_layers": len(self.layers),
                "val_checks_failed": int(self.schedule.get("fails", 0)), "return_best": self.return_best,
                "val_fooling_rate": self.val_rate, "image_passes": self.image_passes()}


#: ``train.py`` L74-82 (the README shows VGG16 only); mirrored by ``conf/attack/trm_uap.yaml``.
TRM_PER_MODEL: dict[str, dict[str, Any]] = {
    "alexnet": {"p_rate": 1.0, "n_rate": 0.2, "lam": 1.0, "prior": "gauss", "gauss_gamma": 10},
    "vgg16": {"p_rate": 0.8, "n_rate": 0.7, "lam": 1.0, "prior": "gauss", "gauss_gamma": 2},
    "vgg19": {"p_rate": 0.8, "n_rate": 0.8, "lam": 0.5, "prior": "gauss", "gauss_gamma": 10},
    "resnet152": {"p_rate": 0.3, "n_rate": 0.2, "lam": 1.5, "prior": "jigsaw_resnet152"},
    "googlenet": {"p_rate": 0.65, "n_rate": 0.2, "lam": 1.0, "prior": "jigsaw_googlenet"},
}
#: The code's argparse defaults (``--p_rate 0.8 --n_rate 0.8 --lam 1 --prior gauss --gauss_gamma 10``).
TRM_FALLBACK: dict[str, Any] = {"p_rate": 0.8, "n_rate": 0.8, "lam": 1.0, "prior": "gauss", "gauss_gamma": 10}


class TRMUAP(PriorUAP):
    """Truncated ratio maximization of positive over negative conv activations on artificial priors.

    Args:
        p_rate, n_rate, lam, prior, gauss_gamma: null = from ``per_model[model.name]``, else ``fallback``.
        per_model: per-architecture settings (default: the code's, :data:`TRM_PER_MODEL`).
        fallback: settings for other models (default: the code's argparse defaults, :data:`TRM_FALLBACK`).
        **kwargs: the loop's settings (:class:`PriorUAP`).
    """

    name: ClassVar[str] = "trm_uap"
    card: ClassVar[AttackCard] = AttackCard(
        "TRM-UAP", "Liu, Feng, Wang, Yang, Ming: TRM-UAP: Enhancing the Transferability of Data-Free Universal "
        "Adversarial Perturbation via Truncated Ratio Maximization, ICCV 2023 (RandolphCarter0/TRMUAP)", 2023,
        "data-free", hooks_activations=True, budget_unit="iterations",
        published_budget="<= 10,000 iterations of a prior batch growing 1 -> 8, early stop (patience 5): <= 61k "
        "image passes (F+B)", published_passes=60_807,
        published_fooling={"vgg16": 94.30, "vgg19": 91.35, "resnet152": 67.46, "googlenet": 85.32},
        published_source="UNCONFIRMED: a third-party summary of the PSP-UAP paper, not the TRM paper itself")

    def __init__(self, model: ClassifierWrapper, xi: float, *, p_rate: float | None = None,
                 n_rate: float | None = None, lam: float | None = None, prior: str | None = None,
                 gauss_gamma: float | None = None, per_model: Mapping[str, Mapping[str, Any]] | None = None,
                 fallback: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        settings, source = resolve_settings(
            model.name, TRM_PER_MODEL if per_model is None else per_model,
            TRM_FALLBACK if fallback is None else fallback,
            {"p_rate": p_rate, "n_rate": n_rate, "lam": lam, "prior": prior, "gauss_gamma": gauss_gamma})
        super().__init__(model, xi, settings=settings, settings_source=source, **kwargs)
        self.p_rate, self.n_rate, self.lam = self.rate("p_rate"), self.rate("n_rate"), self.rate("lam")

    def loss(self, z: torch.Tensor | None, delta: torch.Tensor) -> torch.Tensor:
        acts, _ = self.conv_outputs(delta[None] if z is None else delta + z)
        return truncated_ratio_loss(acts, self.p_rate, self.n_rate, self.lam)
