"""DM-UAP: dynamic maximin optimization of a universal perturbation (Zhang et al., AAAI 2025).

Paper: "Improving Generalization of Universal Adversarial Perturbation via Dynamic Maximin Optimization",
https://arxiv.org/abs/2503.12793 ; public code read: yechao-zhang/DM-UAP (``attack_min_x_theta_adam.py``,
``PGDL2.py``, ``imagenet_attack.py``, ``run.sh``).

Norm: l_inf (``xi``), clipping after every step. Per batch x, with y = argmax f_theta(x) of the unmodified
model (no labels), one delta-step:
    1. min-theta: ``theta_steps`` (S = 10) steps theta <- theta - (rho_e / S) g / ||g||_2 on the smoothed
       cross-entropy (1 - s) CE + s mean_c(-log p_c) (``smooth_rate`` s), g the gradient over all weights at
       once, with the network in train mode (BatchNorm on batch statistics, updating its running stats;
       dropout on);
    2. min-x: ``x_steps`` (K = 10) l2-PGD steps of size eps_e / 8 that *lower* CE(f_theta~(x~), y), projected
       to ||x~ - x||_2 <= eps_e and [0, 1] (eval mode, the perturbed weights and BN statistics);
    3. max-delta: an AdamW step (lr 0.1, weight decay 0.01) on -mean min(CE(f_theta~(x~ + delta), y), beta).
The curriculum grows rho_e = e rho / E and eps_e = e aa / E with the epoch e = 1..E (E = the epochs run;
eps_e is an l2 radius on the [0, 1] scale).
The perturbed weights live in a per-batch copy that ``torch.func.functional_call`` feeds to the shared
model: its own parameters and BN buffers are never written (the copy is dropped after the step, which is
the code's restore), and its train/eval flags are set back after min-theta.
Defaults (README / ``run.sh``): batch 125, 20 epochs over 500 images (``max_images`` per epoch; the
code's default is 10k), delta ~ U[-xi, xi], rho 4, aa 25, S = K = 10, beta 9, smooth_rate 0.2 (the argparse
default is -0.2). The last delta is returned (the code saves it every epoch and evaluates the last).
The code feeds x~ + delta unclamped; here ``clamp(x~ + delta, 0, 1)`` (``clamp_inputs: false`` for the code's).
An epoch is ``images // batch_size`` delta-steps over re-batched passes of the fit loader (each pass's first
``max_images`` images); ``max_epochs`` / ``max_iterations`` (delta-steps; also ``trainer.max_iterations``) cap it.

Usage::

    attack = DMUAP(model, xi=10 / 255, batch_size=32, max_images=64, max_epochs=2)
    delta = attack.fit(loader)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from dominant_patterns.attacks.activations import uniform_init
from dominant_patterns.attacks.base import IterationBudget, UniversalAttack, capped, capped_epochs
from dominant_patterns.attacks.card import AttackCard
from dominant_patterns.core.batches import to_float_batch
from dominant_patterns.core.checks import check_at_least, check_positive
from dominant_patterns.core.devices import to_memory_format
from dominant_patterns.core.loops import optimize_iterations
from dominant_patterns.core.rng_state import loader_generators
from dominant_patterns.models.classifier import ClassifierWrapper

Weights = dict[str, torch.Tensor]


def smoothed_ce(logits: torch.Tensor, y: torch.Tensor, smooth_rate: float) -> torch.Tensor:
    """The code's ``loss_gls``: mean of (1 - s) * CE + s * mean_c(-log p_c)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    nll = -logp.gather(1, y[:, None])[:, 0]
    return ((1 - smooth_rate) * nll - smooth_rate * logp.mean(-1)).mean()


def clamped_ce(logits: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    """mean_i min(CE(logits_i, y_i), beta)."""
    return F.cross_entropy(logits.float(), y, reduction="none").clamp(max=beta).mean()


@contextmanager
def train_mode(model: nn.Module) -> Iterator[None]:
    """``model.train()`` within the block; every module's own flag is set back afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.train()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


class FirstImages:
    """The first ``count`` images of each pass over ``loader`` (the loader's generators drive the order)."""

    def __init__(self, loader: Iterable[Any], count: int) -> None:
        self.loader, self.count = loader, count

    def rng_generators(self) -> dict[str, torch.Generator]:
        return loader_generators(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        seen = 0
        for batch in self.loader:
            x, y = to_float_batch(batch, "cpu")
            take = min(x.shape[0], self.count - seen)
            yield x[:take], None if y is None else y[:take]
            seen += take
            if seen >= self.count:
                return


def count_images(loader: Iterable[Any]) -> int:
    """Images in one pass of ``loader`` (its dataset's length when it has one)."""
    dataset = getattr(loader, "dataset", None)
    if dataset is not None and hasattr(dataset, "__len__"):
        return len(dataset)
    return sum(to_float_batch(batch, "cpu")[0].shape[0] for batch in loader)


class DMUAP(IterationBudget, UniversalAttack):
    """Max-delta AdamW steps against a worst-case (min-theta, min-x) model and images per batch.

    Args:
        lr, weight_decay: AdamW on delta (0.1, 0.01).
        epochs: published epochs (20); ``max_epochs`` / ``max_iterations`` cap them for CPU runs.
        batch_size: images per delta-step (125), re-batched from the fit loader.
        max_images: images per epoch, the first of each pass (null = the whole fit set; README: 500).
        beta: cap of the per-image cross-entropy (9).
        rho, aa: final l2 radii of the weight and image perturbations (4, 25; reached in the last epoch).
        theta_steps, x_steps: S and K inner steps (10, 10).
        smooth_rate: label smoothing of the min-theta loss (0.2, README; the argparse default is -0.2).
        clamp_inputs: clamp x~ + delta to [0, 1] (the framework's rule; the code does not).
    """

    name: ClassVar[str] = "dm_uap"
    #: targets are the frozen model's own clean top-1 predictions (pseudo-labels, as in SGA, which the paper groups
    #: with the label-dependent methods trained on the in-distribution set); no ground-truth label is read. BatchNorm
    #: must stay unfolded: min-theta runs the network in train mode.
    card: ClassVar[AttackCard] = AttackCard(
        "DM-UAP", "Zhang et al.: Improving Generalization of Universal Adversarial Perturbation via Dynamic Maximin "
        "Optimization, AAAI 2025 (yechao-zhang/DM-UAP)", 2025, "label-dependent", hooks_activations=True,
        budget_unit="epochs", published_budget="20 epochs x 500 images, batch 125: 80 delta-steps, each with 10 "
        "weight and 10 image steps: ~210k image passes (F+B) + 10k forward", published_passes=210_000,
        published_source="none per model: the abstract reports only an average gain (+12.108 points, 500 images)")
    fit_state: ClassVar[tuple[str, ...]] = ("steps_run", "images_seen")

    def __init__(self, model: ClassifierWrapper, xi: float, *, lr: float = 0.1, weight_decay: float = 0.01,
                 epochs: int = 20, max_epochs: int | None = None, max_iterations: int | None = None,
                 batch_size: int = 125, max_images: int | None = None, beta: float = 9.0, rho: float = 4.0,
                 aa: float = 25.0, theta_steps: int = 10, x_steps: int = 10, smooth_rate: float = 0.2,
                 clamp_inputs: bool = True, **kwargs: Any) -> None:
        super().__init__(model, xi, **kwargs)
        self.lr, self.weight_decay = check_positive("attack.lr", lr), float(weight_decay)
        self.epochs, self.max_epochs, self.max_iterations = int(epochs), max_epochs, max_iterations
        self.run_epochs = capped_epochs(epochs, max_epochs)
        self.batch_size = check_at_least("attack.batch_size", batch_size, 1)
        self.max_images = None if max_images is None else check_at_least("attack.max_images", max_images, 1)
        self.beta, self.rho, self.aa = check_positive("attack.beta", beta), float(rho), float(aa)
        self.theta_steps = check_at_least("attack.theta_steps", theta_steps, 0)
        self.x_steps = check_at_least("attack.x_steps", x_steps, 0)
        self.smooth_rate, self.clamp_inputs = float(smooth_rate), bool(clamp_inputs)
        self.steps_per_epoch = self.iterations = self.run_iterations = self.images_per_epoch = 0
        self.steps_run = self.images_seen = 0

    # -- the inner problems -----------------------------------------------------------------------

    def weights(self) -> Weights:
        """A private copy of the model's parameters and buffers (the perturbed model of one batch)."""
        return {**{n: p.detach().clone() for n, p in self.model.named_parameters()},
                **{n: b.detach().clone() for n, b in self.model.named_buffers()}}

    def call(self, weights: Weights, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, weights, (to_memory_format(x, self.trainer.channels_last),))

    def min_theta(self, x: torch.Tensor, y: torch.Tensor, rho: float) -> Weights:
        """S normalized descent steps of total length rho on the smoothed CE, in train mode (BN statistics of
        ``x`` are used and folded into the copy's running stats). Returns the perturbed weights."""
        weights = self.weights()
        names = [n for n, _ in self.model.named_parameters()]
        if not self.theta_steps or rho == 0:
            return weights
        step = rho / self.theta_steps
        with train_mode(self.model):
            for _ in range(self.theta_steps):
                for n in names:
                    weights[n].requires_grad_(True)
                loss = smoothed_ce(self.call(weights, x), y, self.smooth_rate)
                grads = torch.autograd.grad(loss, [weights[n] for n in names], allow_unused=True)
                norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads
                                                             if g is not None]))
                scale = -step / (norm + 1e-12)
                for n, g in zip(names, grads, strict=True):
                    weights[n] = weights[n].detach() if g is None else (weights[n] + scale * g).detach()
        return weights

    def min_x(self, x: torch.Tensor, y: torch.Tensor, eps: float, weights: Weights) -> torch.Tensor:
        """K l2-PGD steps (size eps / 8) lowering CE(f(x~), y) on the perturbed model, within ||x~ - x|| <= eps."""
        x_adv, alpha = x.clone(), eps / 8
        for _ in range(self.x_steps):
            x_adv.requires_grad_(True)
            cost = -F.cross_entropy(self.call(weights, x_adv).float(), y)
            (grad,) = torch.autograd.grad(cost, x_adv)
            grad = grad / (grad.flatten(1).norm(dim=1) + 1e-10).view(-1, 1, 1, 1)
            step = x_adv.detach() + alpha * grad - x
            factor = (eps / step.flatten(1).norm(dim=1)).clamp(max=1).view(-1, 1, 1, 1)
            x_adv = (x + step * factor).clamp(0, 1).detach()
        return x_adv

    def curriculum(self, step: int) -> tuple[float, float]:
        """(rho_e, eps_e) at delta-step ``step`` (1-based): epoch e of E grows both linearly to rho / aa."""
        e = min(self.run_epochs, 1 + (step - 1) // max(self.steps_per_epoch, 1))
        return e * self.rho / self.run_epochs, e * self.aa / self.run_epochs

    def loss(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """One delta-step's loss: min-theta, min-x, then -mean min(CE(f~(x~ + delta), y), beta) (to minimize)."""
        rho, eps = self.curriculum(self.steps_run + 1)
        with torch.no_grad():
            y = self.model(to_memory_format(x, self.trainer.channels_last)).argmax(1)
        weights = self.min_theta(x, y, rho)
        x_adv = self.min_x(x, y, eps, weights)
        adv = self.apply(x_adv, delta) if self.clamp_inputs else x_adv + delta
        self.images_seen += x.shape[0]
        return -clamped_ce(self.call(weights, adv), y, self.beta)

    # -- the fit ----------------------------------------------------------------------------------

    def fit(self, loader: Iterable[Any]) -> torch.Tensor:
        images = count_images(loader)
        self.images_per_epoch = images if self.max_images is None else min(images, self.max_images)
        batch = min(self.batch_size, max(self.images_per_epoch, 1))
        self.steps_per_epoch = max(1, self.images_per_epoch // batch)
        self.iterations = self.epochs * self.steps_per_epoch  # the published epochs over this fit set
        self.run_iterations = capped(self.run_epochs * self.steps_per_epoch, self.max_iterations,
                                     trainer_cap=self.trainer.max_iterations)
        self.steps_run = self.images_seen = 0

        def after_step(step: int, _delta: torch.Tensor) -> bool:
            self.steps_run = step
            return False

        source = loader if self.max_images is None else FirstImages(loader, self.max_images)
        return optimize_iterations(
            self, uniform_init(self.shape, self.xi, self.generator, self.device), self.loss, loader=source,
            batch_size=batch, optimizer=partial(torch.optim.AdamW, lr=self.lr, weight_decay=self.weight_decay),
            iterations=self.run_iterations, after_step=after_step)

    def describe(self) -> dict[str, Any]:
        rho, eps = self.curriculum(max(self.steps_run, 1))
        return {**super().describe(), "lr": self.lr, "weight_decay": self.weight_decay, "epochs": self.epochs,
                "max_epochs": self.max_epochs, "run_epochs": self.run_epochs, "max_iterations": self.max_iterations,
                "batch_size": self.batch_size, "max_images": self.max_images,
                "images_per_epoch": self.images_per_epoch, "steps_per_epoch": self.steps_per_epoch,
                "iterations": self.iterations, "run_iterations": self.run_iterations, "steps_run": self.steps_run,
                "beta": self.beta, "rho": self.rho, "aa": self.aa, "last_rho": rho, "last_eps": eps,
                "theta_steps": self.theta_steps, "x_steps": self.x_steps, "smooth_rate": self.smooth_rate,
                "clamp_inputs": self.clamp_inputs,
                "image_passes": self.images_seen * (self.theta_steps + self.x_steps + 1)}
