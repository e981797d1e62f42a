"""GD-UAP: generalizable data-free UAP (Mopuri, Ganeshan, Babu, TPAMI 2018).

Paper: https://arxiv.org/abs/1801.08092 ; public code read: val-iisc/GD-UAP (classification),
psandovalsegura/pytorch-gd-uap.

Norm: l_inf (``xi``). Objective: maximize sum_l log(||a_l||^2 / 2) over the model's ``conv``
layer group (hooks.py; ``layers=relu`` gives block outputs, the paper's choice for ResNets).
Defaults (published): delta ~ U[-xi, xi], Adam lr 0.1 on the 0-255 scale (``lr_255``; 0.1/255 in
[0, 1] pixels), batch 25, adaptive rescaling (halve delta when more than 50% of its pixels sit at
+-xi and that share moved by less than 1e-5 since the previous step), validation every 400
iterations (200 after a rescale), stop after 10 checks without improvement, at most 40k iterations.

Priors (what the network sees during optimization):
    ``none``: the mean image + delta (delta alone after normalization), batch 1;
    ``range``: Gaussian noise images N(mean, 1/6) clipped to [0, 1] + delta, a fresh batch per step
        (stands in for random crops of one noise image);
    ``data``: fit-loader images + delta.
The loader always provides the validation images (fooling rate on the first ``val_images`` of it,
through ``metrics.fooling_rate``); with ``none``/``range`` it is used for nothing else. With ``data``
the validation images are also training images (the paper holds out 1k). ``max_iterations`` caps
the 40k for CPU runs; the best validated delta (the final one is validated too) is returned.

Usage::

    attack = GDUAP(model, xi=10 / 255, prior="data", max_iterations=300)
    delta = attack.fit(loader)
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import Any, ClassVar

import torch

from dominant_patterns.attacks.activations import log_activation_norms, mean_image, uniform_init
from dominant_patterns.attacks.base import IterationBudget, UniversalAttack, capped
from dominant_patterns.attacks.card import AttackCard
from dominant_patterns.attacks.validation import Validator
from dominant_patterns.core.checks import check_choice, check_positive
from dominant_patterns.core.loops import optimize_iterations
from dominant_patterns.models.classifier import ClassifierWrapper
from dominant_patterns.models.hooks import capture_activations, layer_names

PRIORS = ("none", "range", "data")


class GDUAP(IterationBudget, UniversalAttack):
    """Activation-norm maximization with the none / range / data priors and adaptive rescaling."""

    name: ClassVar[str] = "gd_uap"
    card: ClassVar[AttackCard] = AttackCard(
        "GD-UAP", "Mopuri, Ganeshan, Babu, TPAMI 2018 (val-iisc/GD-UAP)", 2018, "data-free", hooks_activations=True,
        budget_unit="iterations", published_budget="at most 40,000 iterations x batch 25 (data prior), with "
        "validation-based early stopping", published_passes=40000 * 25,
        published_source="Table 4 of the paper (paper.csv)")
    fit_state: ClassVar[tuple[str, ...]] = ("validator", "schedule", "rescales", "steps_run")

    def __init__(self, model: ClassifierWrapper, xi: float, *, prior: str = "data", lr_255: float = 0.1,
                 batch_size: int = 25, iterations: int = 40000, max_iterations: int | None = None,
                 val_every: int = 400, val_every_after_rescale: int = 200, patience: int = 10,
                 val_images: int = 1000, saturation: float = 0.5, saturation_change: float = 1e-5,
                 layers: str = "conv", range_std: float = 1 / 6, **kwargs: Any) -> None:
        super().__init__(model, xi, **kwargs)
        self.prior = check_choice("attack.prior", prior, PRIORS)
        self.lr_255, self.batch_size = check_positive("attack.lr_255", lr_255), int(batch_size)
        self.iterations, self.max_iterations = int(iterations), max_iterations
        self.run_iterations = capped(iterations, max_iterations, trainer_cap=self.trainer.max_iterations)
        self.val_every, self.val_every_after_rescale = int(val_every), int(val_every_after_rescale)
        self.patience, self.val_images = int(patience), int(val_images)
        self.saturation, self.saturation_change = float(saturation), float(saturation_change)
        self.range_std = float(range_std)
        self.layers = layer_names(model, layers)
        self.layer_group = layers
        self.rescales, self.steps_run, self.val_rate = 0, 0, float("nan")
        self.validator: Validator | None = None
        #: adaptive rescaling: the saturated share at the last step and the step of the next validation
        self.schedule: dict[str, float] = {"sat": 0.0, "next_val": self.val_every}

    @property
    def data_setting(self) -> str:
        """The data prior fits on unlabeled images (label-free); none and range use no image (data-free)."""
        return "label-free" if self.prior == "data" else "data-free"

    @property
    def display_name(self) -> str:
        return f"{self.card.display_name} ({self.prior} prior)"

    def noise(self) -> torch.Tensor:
        """A batch of the ``range`` prior: N(mean, range_std) images clipped to [0, 1] (from ``self.generator``)."""
        base = mean_image(self.model, self.batch_size)
        z = torch.randn(base.shape, generator=self.generator).to(self.device)
        return (base + self.range_std * z).clamp(0, 1)

    def loss(self, x: torch.Tensor | None, delta: torch.Tensor) -> torch.Tensor:
        x = mean_image(self.model).to(self.device) if x is None else x
        with capture_activations(self.model, self.layers) as acts:
            self.model(self.apply(x, delta))
        return -log_activation_norms(acts, self.layers, "l2")

    def fit(self, loader: Iterable[Any]) -> torch.Tensor:
        s = self.trainer
        self.validator = validator = Validator.from_loader(self.model, loader, self.device, count=self.val_images,
                                                           patience=self.patience, settings=s)
        self.rescales, self.steps_run = 0, 0
        self.schedule = {"sat": 0.0, "next_val": self.val_every}

        def after_step(step: int, delta: torch.Tensor) -> bool:
            self.steps_run = step
            sat = float((delta.abs() >= self.xi * (1 - 1e-6)).float().mean())
            if sat > self.saturation and abs(sat - self.schedule["sat"]) < self.saturation_change:
                delta.div_(2)
                self.rescales += 1
                self.schedule["next_val"] = step + self.val_every_after_rescale
                sat = float((delta.abs() >= self.xi * (1 - 1e-6)).float().mean())
            self.schedule["sat"] = sat
            if step >= self.schedule["next_val"]:
                self.schedule["next_val"] = step + self.val_every
                stop = validator.check(delta)
                self.log({"val/fooling_rate": validator.best_rate, "train/saturation": sat}, step)
                return stop
            return False

        delta = optimize_iterations(
            self, uniform_init(self.shape, self.xi, self.generator, self.device), self.loss,
            loader=loader if self.prior == "data" else None, batch_size=self.batch_size,
            draw=self.noise if self.prior == "range" else None,
            optimizer=partial(torch.optim.Adam, lr=self.lr_255 / 255), iterations=self.run_iterations,
            after_step=after_step, desc=f"{self.name}[{self.prior}]")
        best, self.val_rate = validator.final(delta)
        return best

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "prior": self.prior, "lr_255": self.lr_255, "batch_size": self.batch_size,
                "iterations": self.iterations, "max_iterations": self.max_iterations,
                "run_iterations": self.run_iterations, "steps_run": self.steps_run, "rescales": self.rescales,
                "layer_group": self.layer_group, "n_layers": len(self.layers), "val_fooling_rate": self.val_rate}
