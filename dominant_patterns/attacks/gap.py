"""GAP: generative adversarial perturbations, universal variant (Poursaeed et al., CVPR 2018).

Paper: https://arxiv.org/abs/1712.02328 ; public code read: OmidPoursaeed/Generative_Adversarial_Perturbations
(``GAP_clf.py``, ``material/models/generators.py``).

Norm: l_inf (``xi``), always used in full. A ResNet generator (``ngf`` 64, ``n_blocks`` 6, BatchNorm,
ReLU, tanh; :class:`~dominant_patterns.attacks.generators.ResnetGenerator`) maps one fixed
U[0, 255] noise image (fed unscaled, as published) to the pattern. The published
``normalize_and_scale`` (output -> [0, 1], ImageNet-normalised, each channel scaled by
min(1, (xi / sigma_c) / max|.|)) is, in our [0, 1] pixel space, ``p_c = (G + 1) / 2 - mean_c`` scaled by
``min(1, xi / max|p_c|)``: the channel's largest pixel sits at exactly xi.

Objective: minimise log CE(f(x + delta), t) with t the least-likely class of the clean x
(untargeted) or ``target_class``. Defaults (published): Adam lr 2e-4 (the help string says 0.002, the
default is 0.0002), beta1 0.5, batch 30, 10 epochs of 50 iterations (``iterations`` 500); after each
"epoch" (``val_every`` 50) the pattern is scored on held-out images and the best is kept (published:
160 test batches of 16; the loop never stops early).

Departures: x + delta is clamped to [0, 1] like every method here (published: to each channel's
[min, max] over the clean batch, in normalised space); the generator runs on one copy of the noise
(the published code tiles it over the batch; BatchNorm sees the same statistics either way); the
validation images are the first ``val_images`` of the fit loader, removed from the training stream
when they recur exactly (tensor-backed sets; augmented crops of a file set differ each pass).
BatchNorm normalises by the statistics of the generator's input also when the pattern is read
out: the published code reads it in eval mode (running averages), which for its one fixed input
converge to exactly these statistics, but lag far behind them after the tens of iterations of a CPU
run (the read-out pattern then has almost no contrast). ``max_iterations`` caps the 500 for CPU runs.

Usage::

    attack = GAP(model, xi=10 / 255, max_iterations=60)
    delta = attack.fit(loader)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from dominant_patterns.attacks.base import IterationBudget, capped
from dominant_patterns.attacks.card import AttackCard
from dominant_patterns.attacks.generator_fit import GeneratorAttack
from dominant_patterns.attacks.generators import ResnetGenerator, init_weights
from dominant_patterns.core.checks import check_at_least, check_class, check_positive
from dominant_patterns.core.devices import autocast, to_memory_format
from dominant_patterns.models.classifier import ClassifierWrapper

log = logging.getLogger(__name__)


class GAP(IterationBudget, GeneratorAttack):
    """A ResNet generator from fixed noise to one full-budget pattern, trained towards the least-likely class."""

    name: ClassVar[str] = "gap"
    card: ClassVar[AttackCard] = AttackCard(
        "GAP", "Poursaeed et al., CVPR 2018 (OmidPoursaeed/Generative_Adversarial_Perturbations)", 2018,
        "label-dependent", budget_unit="iterations", published_budget="10 epochs x 50 iterations x batch 30",
        published_passes=10 * 50 * 30, published_source="Tables 3 and 5 of the paper (paper.csv)")

    def __init__(self, model: ClassifierWrapper, xi: float, *, lr: float = 2e-4, beta1: float = 0.5,
                 batch_size: int = 30, iterations: int = 500, max_iterations: int | None = None, val_every: int = 50,
                 val_images: int = 2576, ngf: int = 64, n_blocks: int = 6, target_class: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(model, xi, **kwargs)
        self.lr, self.beta1 = check_positive("attack.lr", lr), float(beta1)
        self.batch_size = check_at_least("attack.batch_size", batch_size, 1)
        self.iterations, self.max_iterations = int(iterations), max_iterations
        self.run_iterations = capped(iterations, max_iterations, trainer_cap=self.trainer.max_iterations)
        self.val_every = check_at_least("attack.val_every", val_every, 1)
        self.val_images = check_at_least("attack.val_images", val_images, 1)
        self.ngf = check_at_least("attack.ngf", ngf, 1)
        self.n_blocks = check_at_least("attack.n_blocks", n_blocks, 0)
        self.target_class = check_class("attack.target_class", target_class, model.num_classes)
        self.steps_run, self.val_rate = 0, float("nan")
        self.selection = None
        # the one fixed U[0, 255] input (published: np.random.uniform(0, 255, 3 x S x S))
        self.noise = (torch.rand(self.shape, generator=torch.Generator().manual_seed(self.seed)) * 255)[None]

    def architecture(self) -> dict[str, Any]:
        return {"ngf": self.ngf, "n_blocks": self.n_blocks, "input_noise": self.noise[0].clone()}

    def scale(self, out: torch.Tensor) -> torch.Tensor:
        """``normalize_and_scale`` in pixel space: (out + 1) / 2 - mean, each channel scaled to l_inf = xi."""
        p = (out + 1) / 2 - self.model.mean.to(out.dtype)
        peak = p.abs().amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)
        return p * torch.clamp(self.xi / peak, max=1.0)

    def pattern(self) -> torch.Tensor:
        """The generator's pattern [3, S, S] for its fixed input."""
        with torch.no_grad():
            return self.project(self.scale(self.net(self.noise.to(self.device)))[0])

    def targets(self, x: torch.Tensor) -> torch.Tensor:
        if self.target_class is not None:
            return torch.full((x.shape[0],), self.target_class, dtype=torch.long, device=x.device)
        with torch.no_grad(), autocast(self.device, self.trainer.precision):
            return self.model(to_memory_format(x, self.trainer.channels_last)).argmin(1)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        delta = self.scale(self.net(self.noise.to(self.device)))
        target = self.targets(x)
        with autocast(self.device, self.trainer.precision):
            logits = self.model(to_memory_format(self.apply(x, delta), self.trainer.channels_last))
        return torch.log(F.cross_entropy(logits.float(), target))

    def fit(self, loader: Iterable[Any]) -> torch.Tensor:
        self.net = ResnetGenerator(self.ngf, self.n_blocks)
        init_weights(self.net, torch.Generator().manual_seed(self.seed))
        self.net.to(self.device).train()
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.lr, betas=(self.beta1, 0.999))
        self.selection = selection = self.validation(loader, self.val_images, patience=None)
        self.steps_run = 0

        def step(x: torch.Tensor | None) -> bool:
            assert x is not None
            loss = self.loss(x)
            if not torch.isfinite(loss):
                log.error("gap: non-finite loss at step %d; keeping the best validated generator", self.steps_run + 1)
                return True
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.steps_run += 1
            if self.steps_run % self.trainer.log_every == 0:
                self.log({"train/loss": float(loss.detach())}, self.steps_run)
            last = self.at_limit(self.steps_run, self.run_iterations)
            if self.steps_run % self.val_every == 0 or last:
                selection.check(selection.rate(self.pattern()[None], self.target_class), self.net)
                self.log({"val/fooling_rate": selection.best_rate}, self.steps_run)
            return last

        self.train_generator(step, self.run_iterations, self.pattern, loader)
        selection.restore(self.net)
        self.val_rate = selection.best_rate
        return self.pattern()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "lr": self.lr, "beta1": self.beta1, "batch_size": self.batch_size,
                "iterations": self.iterations, "max_iterations": self.max_iterations,
                "run_iterations": self.run_iterations, "steps_run": self.steps_run, "ngf": self.ngf,
                "n_blocks": self.n_blocks, "target_class": self.target_class, "val_images": self.held_out(),
                "val_fooling_rate": self.val_rate}
