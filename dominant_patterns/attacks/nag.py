"""NAG: network for adversary generation (Mopuri, Ojha, Garg, Babu, CVPR 2018).

Paper: https://arxiv.org/abs/1712.03390 ; public code read: val-iisc/nag (``train_generator.py``,
``new_generator.py``; TF1).

Norm: l_inf (``xi``): the generator ends in ``xi * tanh``. A generator
(:class:`~dominant_patterns.attacks.generators.NAGGenerator`) maps z ~ U[-1, 1]^``z_dim`` (the
paper's 10; the code uses 100) plus, with ``scale_noise`` (the released code), fresh U[-1, 1] noise
channels at every resolution to a perturbation. Per batch of B images x_n with B sampled
perturbations delta_n:
    fooling loss   -log(1 - q_c), q_c the batch mean of softmax(f(x_n + delta_n))[c_n] with c_n the
                   clean top-1 (the code's batch-mean form);
    diversity loss -``diversity_weight`` * mean ||f_l(x_n + delta_n) - f_l(x_n + delta_n')||^2 with
                   delta_n' the same perturbations shifted by a random offset (n' != n) and f_l the
                   activations of ``feature_layer`` (the code: ``res4f`` of ResNet-50 and weight 10;
                   ``feature_layers`` maps model names to layers; other models take the ``relu``-group
                   layer at ``feature_depth`` of the depth, which is ``layer3.5`` = res4f for ResNet-50).
Defaults (released code): Adam lr 1e-3, batch 32, validation every 100 iterations on 1,000
held-out images (each image perturbed by one of ``val_samples`` fixed samples, as the code's
batch of sampled z), at most 60 epochs over 10k images (``iterations`` 18,750); we stop after
``patience`` checks without improvement (our choice; the code runs its 60 epochs) and keep the best
validated generator.

Evaluation: ``eval_samples`` perturbations from fixed z (seeded) are the result
(:meth:`sample_patterns`); the app reports mean +- std over them, never the best sample. ``fit``
returns the first sample (``pattern.pt``); ``generator.pt`` holds the weights.

BatchNorm normalises by batch statistics in training and when sampling, as the code's "virtual" BN
(each batch of 32 perturbations is its own reference batch): the evaluation and validation samples
are the first ``eval_samples`` / ``val_samples`` of a batch of at least ``batch_size`` fixed draws.

Departures: transposed convs are 4x4 (code: 5x5, TF "same") and the first map is 7x7 for 224 inputs (code: 4x4
then 7x7), 4x4 for 32; the paper's cosine diversity on softmax outputs is defined but unused in the
code, so we follow the code's feature distance. x + delta is clamped to [0, 1]. The validation
images are the first ``val_images`` of the fit loader, removed from the training stream when they
recur exactly (see ``generator_fit.HeldOut``). ``max_iterations`` caps the budget for CPU runs.

Usage::

    attack = NAG(model, xi=10 / 255, max_iterations=40, ngf=16)
    delta = attack.fit(loader)
    samples = attack.sample_patterns()  # [eval_samples, 3, S, S]
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import torch

from dominant_patterns.attacks.base import IterationBudget, capped
from dominant_patterns.attacks.card import AttackCard
from dominant_patterns.attacks.generator_fit import GeneratorAttack, diversity_loss, fooling_loss
from dominant_patterns.attacks.generators import NAGGenerator, init_weights
from dominant_patterns.core.checks import check_at_least, check_positive
from dominant_patterns.core.devices import autocast, to_memory_format
from dominant_patterns.core.errors import ConfigError
from dominant_patterns.models.classifier import ClassifierWrapper
from dominant_patterns.models.hooks import capture_activations, layer_names

log = logging.getLogger(__name__)


def pick_feature_layer(model: ClassifierWrapper, explicit: str | None, by_model: Mapping[str, str] | None,
                  depth: float) -> str:
    """The diversity layer: ``explicit``, else ``by_model[model.name]``, else the ``relu`` group at ``depth``."""
    name = explicit or (by_model or {}).get(model.name)
    if name is None:
        group = layer_names(model, "relu")
        return group[round(depth * (len(group) - 1))]
    try:
        model.net.get_submodule(name)
    except AttributeError:
        raise ConfigError(f"attack.feature_layer '{name}' is not a module of model '{model.name}'; give a dotted "
                          "name of model.net (e.g. layer3.5) or null for the default") from None
    return name


class NAG(IterationBudget, GeneratorAttack):
    """A latent-variable generator trained with NAG's fooling and diversity losses."""

    name: ClassVar[str] = "nag"
    card: ClassVar[AttackCard] = AttackCard(
        "NAG", "Mopuri et al., CVPR 2018 (val-iisc/nag)", 2018, "label-dependent", budget_unit="iterations",
        published_budget="about 60 epochs over 10k images, batch 32 (18,750 iterations)", published_passes=18750 * 32,
        published_source="Tables 3 and 5 of the paper (paper.csv)")

    def __init__(self, model: ClassifierWrapper, xi: float, *, lr: float = 1e-3, batch_size: int = 32,
                 iterations: int = 18750, max_iterations: int | None = None, z_dim: int = 10, ngf: int = 64,
                 scale_noise: bool = True, diversity_weight: float = 10.0, feature_layer: str | None = None,
                 feature_layers: Mapping[str, str] | None = None, feature_depth: float = 0.8,
                 val_every: int = 100, val_images: int = 1000, val_samples: int = 32, patience: int | None = 10,
                 eval_samples: int = 10, **kwargs: Any) -> None:
        super().__init__(model, xi, **kwargs)
        self.lr = check_positive("attack.lr", lr)
        self.batch_size = check_at_least("attack.batch_size", batch_size, 2)
        self.iterations, self.max_iterations = int(iterations), max_iterations
        self.run_iterations = capped(iterations, max_iterations, trainer_cap=self.trainer.max_iterations)
        self.z_dim, self.ngf = check_at_least("attack.z_dim", z_dim, 1), check_at_least("attack.ngf", ngf, 1)
        self.scale_noise, self.diversity_weight = bool(scale_noise), float(diversity_weight)
        if not 0 <= feature_depth <= 1:
            raise ConfigError(f"attack.feature_depth={feature_depth} must be in [0, 1] (share of the relu group)")
        self.feature_layer = pick_feature_layer(model, feature_layer, feature_layers, float(feature_depth))
        # folding BatchNorm into convs (fold.py) leaves block outputs and ReLUs unchanged, not a conv's output
        self._hooks_conv = self.feature_layer not in layer_names(model, "relu")
        self.val_every = check_at_least("attack.val_every", val_every, 1)
        self.val_images = check_at_least("attack.val_images", val_images, 1)
        self.val_samples = check_at_least("attack.val_samples", val_samples, 1)
        self.patience = None if patience is None else check_at_least("attack.patience", patience, 1)
        self.eval_samples = check_at_least("attack.eval_samples", eval_samples, 1)
        self.steps_run, self.val_rate = 0, float("nan")
        self.selection = None
        self.samples: torch.Tensor | None = None
        self.terms: dict[str, torch.Tensor] = {}

    # -- the generator ------------------------------------------------------------------------

    def architecture(self) -> dict[str, Any]:
        return {"size": self.model.input_size, "xi": self.xi, "z_dim": self.z_dim, "ngf": self.ngf,
                "scale_noise": self.scale_noise}

    def build_net(self) -> None:
        self.net = NAGGenerator(**self.architecture())
        init_weights(self.net, torch.Generator().manual_seed(self.seed))
        self.net.to(self.device).train()

    def fixed_samples(self, count: int, offset: int) -> torch.Tensor:
        """The first ``count`` perturbations [count, 3, S, S] of a batch (at least ``batch_size``, the batch the
        BatchNorm statistics were trained on) drawn with seed ``seed + offset``."""
        n = max(count, self.batch_size)
        with torch.no_grad():
            out = self.net(self.net.draw(n, torch.Generator().manual_seed(self.seed + offset), self.device))
        return self.project(out[:count])

    # -- one update ---------------------------------------------------------------------------

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Fooling + diversity loss of one batch ``x`` under freshly sampled perturbations."""
        s, b = self.trainer, x.shape[0]
        delta = self.net(self.net.draw(b, self.generator, self.device))  # fresh z (the attack's RNG)
        shift = int(torch.randint(1, b, (1,), generator=self.generator))
        shuffled = delta.roll(shift, dims=0)
        with torch.no_grad(), autocast(self.device, s.precision):
            clean = self.model(to_memory_format(x, s.channels_last)).argmax(1)
        both = torch.cat([self.apply(x, delta), self.apply(x, shuffled)])
        with capture_activations(self.model, [self.feature_layer]) as acts, autocast(self.device, s.precision):
            logits = self.model(to_memory_format(both, s.channels_last))
        feats = acts[self.feature_layer]
        fool = fooling_loss(logits[:b].float().softmax(1), clean)
        diversity = self.diversity_weight * diversity_loss(feats[:b], feats[b:])
        self.terms = {"train/fooling_loss": fool.detach(), "train/diversity_loss": diversity.detach()}
        return fool + diversity

    def update(self, x: torch.Tensor) -> bool:
        """One Adam step on the generator; validation every ``val_every``; True when finished or stopped."""
        loss = self.loss(x)
        if not torch.isfinite(loss):
            log.error("%s: non-finite loss at step %d; keeping the best validated generator", self.name,
                      self.steps_run + 1)
            return True
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.steps_run += 1
        if self.steps_run % self.trainer.log_every == 0:
            self.log({"train/loss": float(loss.detach()), **{k: float(v) for k, v in self.terms.items()}},
                     self.steps_run)
        stop, last = False, self.at_limit(self.steps_run, self.run_iterations)
        if self.steps_run % self.val_every == 0 or last:
            assert self.selection is not None
            stop = self.selection.check(self.selection.rate(self.fixed_samples(self.val_samples, 1)), self.net)
            self.log({"val/fooling_rate": self.selection.best_rate}, self.steps_run)
        return stop or last

    def start(self, loader: Iterable[Any]) -> None:
        """A fresh generator, optimizer and held-out selection (a resume then restores them)."""
        self.generator.manual_seed(self.seed)
        self.build_net()
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        self.selection = self.validation(loader, self.val_images, self.patience)
        self.steps_run, self.samples = 0, None

    def finish(self) -> torch.Tensor:
        """Back to the best validated weights; the evaluation samples; the first one is the result."""
        assert self.selection is not None
        self.selection.restore(self.net)
        self.val_rate = self.selection.best_rate
        self.samples = self.fixed_samples(self.eval_samples, 2)
        return self.samples[0]

    def current_samples(self) -> torch.Tensor:
        """The evaluation samples of the generator as it is now (anytime curves)."""
        return self.fixed_samples(self.eval_samples, 2)

    def fit(self, loader: Iterable[Any]) -> torch.Tensor:
        self.start(loader)
        self.train_generator(self.update, self.run_iterations, self.current_samples, loader)
        return self.finish()

    def sample_patterns(self) -> torch.Tensor | None:
        return self.samples

    @property
    def hooks_activations(self) -> bool:
        """True when the diversity layer is a convolution's output (BN folding would change it)."""
        return self._hooks_conv

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "lr": self.lr, "batch_size": self.batch_size, "iterations": self.iterations,
                "max_iterations": self.max_iterations, "run_iterations": self.run_iterations,
                "steps_run": self.steps_run, "z_dim": self.z_dim, "ngf": self.ngf, "scale_noise": self.scale_noise,
                "diversity_weight": self.diversity_weight, "feature_layer": self.feature_layer,
                "eval_samples": self.eval_samples, "val_images": self.held_out(), "val_fooling_rate": self.val_rate}
