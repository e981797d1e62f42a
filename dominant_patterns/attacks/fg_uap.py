"""FG-UAP: feature-gathering universal adversarial perturbation (Ye, Cheng, Huang, arXiv 2022).

Paper: "FG-UAP: Feature-Gathering Universal Adversarial Perturbation", https://arxiv.org/abs/2209.13113
(by the authors of the dominant-pattern paper); public code read: yzx1213/FG-UAP (``find_uap.py``, ``utils.py``).

Norm: l_inf (``xi``), projection after every step. Objective (minimized, label-free)::

    L(v) = mean_x cos(phi(x + v), phi(x))

phi = the input of the network's last ``nn.Linear`` (``feature_layer``: the code's ``classifier.6`` for VGG
and AlexNet, i.e. post-ReLU fc7, ``fc`` for ResNet / GoogLeNet, ``head`` for DeiT; ``_fc`` for
EfficientNet-Lite, ``head`` for the tiny test model), the clean features without gradient. Targeted mode
adds ``target_weight`` (0.1) * CE(f(x + v), t).
Defaults (code): v from zero, Adam lr 0.02 with weight decay 1e-5, batch 32 (the loader's batches:
``trainer.batch_size``), 2 epochs, no schedule. After each epoch the fooling rate is checked and the best
v is returned; the code checks on its test set, here on the first ``val_images`` fit images
(``val_images: 0``: the last v). The code feeds x + v unclamped; here ``clamp(x + v, 0, 1)``, the
framework's rule (``clamp_inputs: false`` for the code's).
``max_epochs`` / ``max_iterations`` (steps; also ``trainer.max_iterations``) cap the budget for CPU runs.

Usage::

    attack = FGUAP(model, xi=10 / 255, max_epochs=1)
    delta = attack.fit(loader)
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from dominant_patterns.attacks.base import IterationBudget, UniversalAttack, capped, capped_epochs
from dominant_patterns.attacks.card import AttackCard
from dominant_patterns.attacks.validation import Validator
from dominant_patterns.core.checks import check_class, check_positive
from dominant_patterns.core.devices import to_memory_format
from dominant_patterns.core.errors import ConfigError
from dominant_patterns.core.loops import optimize_iterations
from dominant_patterns.models.classifier import ClassifierWrapper


def last_linear(net: nn.Module) -> str:
    """Dotted name of the last ``nn.Linear`` registered in ``net`` (the classifier's final layer)."""
    names = [name for name, module in net.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise ConfigError("FG-UAP needs a linear classifier layer; set attack.feature_layer to the module whose "
                          "input is the feature")
    return names[-1]


@contextmanager
def capture_input(net: nn.Module, name: str) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, each forward stores the (flattened) input of ``net.<name>`` as ``out["feature"]``."""
    out: dict[str, torch.Tensor] = {}

    def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        out["feature"] = args[0].flatten(1)

    handle = net.get_submodule(name).register_forward_pre_hook(hook)
    try:
        yield out
    finally:
        handle.remove()


class FGUAP(IterationBudget, UniversalAttack):
    """Adam on v minimizing the cosine similarity of perturbed and clean last-layer features."""

    name: ClassVar[str] = "fg_uap"
    #: no labels: the clean features (of the model's own forward pass) are the reference
    card: ClassVar[AttackCard] = AttackCard(
        "FG-UAP", "Ye, Cheng, Huang: FG-UAP: Feature-Gathering Universal Adversarial Perturbation, arXiv 2209.13113 "
        "(yzx1213/FG-UAP)", 2022, "label-free", budget_unit="epochs",
        published_budget="2 epochs over an ImageNet train subset of N images (N unset in the code), batch 32: "
        "2N image passes (F+B) + 2N forward",
        published_source="none found (the README gives none; the paper's tables could not be checked)")
    fit_state: ClassVar[tuple[str, ...]] = ("validator", "steps_run", "images_seen")

    def __init__(self, model: ClassifierWrapper, xi: float, *, lr: float = 0.02, weight_decay: float = 1e-5,
                 epochs: int = 2, max_epochs: int | None = None, max_iterations: int | None = None,
                 feature_layer: str | None = None, val_images: int = 1000, clamp_inputs: bool = True,
                 target_class: int | None = None, target_weight: float = 0.1, **kwargs: Any) -> None:
        super().__init__(model, xi, **kwargs)
        self.lr, self.weight_decay = check_positive("attack.lr", lr), float(weight_decay)
        self.epochs, self.max_epochs, self.max_iterations = int(epochs), max_epochs, max_iterations
        self.run_epochs = capped_epochs(epochs, max_epochs)
        self.feature_layer = feature_layer or last_linear(model.net)
        self.val_images, self.clamp_inputs = int(val_images), bool(clamp_inputs)
        self.target_class = check_class("attack.target_class", target_class, model.num_classes)
        self.target_weight = float(target_weight)
        self.validator: Validator | None = None
        self.steps_run = self.iterations = self.run_iterations = self.images_seen = 0
        self.val_rate = float("nan")

    def perturb(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        return self.apply(x, delta) if self.clamp_inputs else x + delta

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The feature phi(x) (input of ``feature_layer``) and the logits."""
        with capture_input(self.model.net, self.feature_layer) as out:
            logits = self.model(to_memory_format(x, self.trainer.channels_last))
        return out["feature"], logits

    def loss(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            clean, _ = self.features(x)
        adv, logits = self.features(self.perturb(x, delta))
        self.images_seen += x.shape[0]
        loss = F.cosine_similarity(adv.float(), clean.float(), dim=1).mean()
        if self.target_class is not None:
            target = torch.full((x.shape[0],), self.target_class, device=x.device, dtype=torch.long)
            loss = loss + self.target_weight * F.cross_entropy(logits.float(), target)
        return loss

    def fit(self, loader: Iterable[Any]) -> torch.Tensor:
        try:
            per_epoch = len(loader)  # type: ignore[arg-type]
        except TypeError as exc:
            raise ConfigError("FG-UAP counts its epochs in loader batches: the fit loader needs a length") from exc
        self.iterations = self.epochs * max(per_epoch, 1)
        self.run_iterations = capped(self.run_epochs * max(per_epoch, 1), self.max_iterations,
                                     trainer_cap=self.trainer.max_iterations)
        self.validator = validator = (
            Validator.from_loader(self.model, loader, self.device, count=self.val_images, patience=sys.maxsize,
                                  settings=self.trainer) if self.val_images > 0 else None)
        self.steps_run = self.images_seen = 0

        def after_step(step: int, delta: torch.Tensor) -> bool:
            self.steps_run = step
            if validator is not None and (step % per_epoch == 0 or step == self.run_iterations):
                validator.check(delta)  # the code: after every epoch, keep the best
                self.log({"val/fooling_rate": validator.best_rate, "train/epoch": step / per_epoch}, step)
            return False

        delta = optimize_iterations(
            self, self.zeros(), self.loss, loader=loader,
            optimizer=partial(torch.optim.Adam, lr=self.lr, weight_decay=self.weight_decay),
            iterations=self.run_iterations, after_step=after_step)
        if validator is None:
            return delta
        self.val_rate = validator.best_rate
        return validator.best(delta)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "lr": self.lr, "weight_decay": self.weight_decay, "epochs": self.epochs,
                "max_epochs": self.max_epochs, "run_epochs": self.run_epochs, "max_iterations": self.max_iterations,
                "iterations": self.iterations, "run_iterations": self.run_iterations, "steps_run": self.steps_run,
                "feature_layer": self.feature_layer, "clamp_inputs": self.clamp_inputs,
                "target_class": self.target_class, "val_images": self.val_images, "val_fooling_rate": self.val_rate,
                "image_passes": self.images_seen}
