"""FFF: Fast Feature Fool, a data-free UAP (Mopuri, Garg, Babu, BMVC 2017).

Paper: https://arxiv.org/abs/1707.05572 ; public code read: val-iisc/fast-feature-fool, giladfrid009/ulib.

Norm: l_inf (``xi``). Objective: maximize sum_l log mean |a_l(delta)| over the model's ``conv``
layer group (hooks.py), with delta alone as input: the mean image + delta, i.e. normalize(mean + delta)
= delta / std (the Caffe "mean image + delta"; not raw delta).
Defaults (published): delta ~ U[-xi, xi], Adam lr 0.1 on the 0-255 scale (``lr_255``), projection
after every step, delta halved every 300 iterations, validation every 300 iterations, stop after 5
checks without improvement, at most 10k iterations (``max_iterations`` caps that for CPU runs).

Data: none for the objective. The loader only provides the validation images (the first
``val_images``; fooling through ``metrics.fooling_rate``) used for the published early stopping and
to pick the best checked delta (the final delta is checked too).

Usage::

    attack = FFF(model, xi=10 / 255, max_iterations=600)
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
from dominant_patterns.core.checks import check_positive
from dominant_patterns.core.loops import optimize_iterations
from dominant_patterns.models.classifier import ClassifierWrapper
from dominant_patterns.models.hooks import capture_activations, layer_names


class FFF(IterationBudget, UniversalAttack):
    """Maximize the mean absolute conv activations of the pattern alone (batch 1)."""

    name: ClassVar[str] = "fff"
    card: ClassVar[AttackCard] = AttackCard(
        "FFF", "Mopuri et al., BMVC 2017 (val-iisc/fast-feature-fool)", 2017, "data-free", hooks_activations=True,
        budget_unit="iterations", published_budget="at most 10,000 iterations of delta alone, validation-based "
        "early stopping", published_passes=10000, published_source="Table 4 of the paper (paper.csv)")
    fit_state: ClassVar[tuple[str, ...]] = ("validator", "steps_run")

    def __init__(self, model: ClassifierWrapper, xi: float, *, lr_255: float = 0.1, iterations: int = 10000,
                 max_iterations: int | None = None, halve_every: int = 300, val_every: int = 300,
                 patience: int = 5, val_images: int = 1000, layers: str = "conv", **kwargs: Any) -> None:
        super().__init__(model, xi, **kwargs)
        self.lr_255 = check_positive("attack.lr_255", lr_255)
        self.iterations, self.max_iterations = int(iterations), max_iterations
        self.run_iterations = capped(iterations, max_iterations, trainer_cap=self.trainer.max_iterations)
        self.halve_every, self.val_every = int(halve_every), int(val_every)
        self.patience, self.val_images = int(patience), int(val_images)
        self.layer_group = layers
        self.layers = layer_names(model, layers)
        self.steps_run, self.val_rate = 0, float("nan")
        self.validator: Validator | None = None

    def loss(self, _x: torch.Tensor | None, delta: torch.Tensor) -> torch.Tensor:
        with capture_activations(self.model, self.layers) as acts:
            self.model(self.apply(mean_image(self.model).to(self.device), delta))
        return -log_activation_norms(acts, self.layers, "abs_mean")

    def fit(self, loader: Iterable[Any]) -> torch.Tensor:
        s = self.trainer
        self.steps_run = 0
        self.validator = validator = Validator.from_loader(self.model, loader, self.device, count=self.val_images,
                                                           patience=self.patience, settings=s)

        def after_step(step: int, delta: torch.Tensor) -> bool:
            self.steps_run = step
            stop = False
            if step % self.val_every == 0:
                stop = validator.check(delta)
                self.log({"val/fooling_rate": validator.best_rate}, step)
            if self.halve_every and step % self.halve_every == 0:
                delta.div_(2)
            return stop

        delta = optimize_iterations(
            self, uniform_init(self.shape, self.xi, self.generator, self.device), self.loss,
            optimizer=partial(torch.optim.Adam, lr=self.lr_255 / 255), iterations=self.run_iterations,
            after_step=after_step)
        best, self.val_rate = validator.final(delta)
        return best

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "lr_255": self.lr_255, "iterations": self.iterations,
                "max_iterations": self.max_iterations, "run_iterations": self.run_iterations,
                "steps_run": self.steps_run, "halve_every": self.halve_every, "layer_group": self.layer_group,
                "n_layers": len(self.layers), "val_fooling_rate": self.val_rate}
