"""AAA: Ask, Acquire, and Attack, a data-free generative UAP (Mopuri, Uppala, Babu, ECCV 2018).

Paper: https://arxiv.org/abs/1807.10548 ; public code read: val-iisc/AAA (``pd_b1.py``, ``pd_di.py``,
``gen_adv.py``, ``generator.py``).

Norm: l_inf (``xi``; ``xi * tanh`` output). Data-free: the network never sees a fit image.
Stage 1 ("ask, acquire"): class impressions synthesised from the model alone
(:mod:`dominant_patterns.attacks.impressions`: ascend a class logit from the mean image + noise under
random noise/colour/zoom/rotation jitter, stop at a random confidence in (0.55, 0.99) or after
``ci_steps``; published: 10 impressions for each of the 1,000 classes, at most 1,500 steps each).
Stage 2 ("attack"): the NAG generator (:class:`~dominant_patterns.attacks.nag.NAG`; z of dimension 10,
``xi * tanh``) trained on batches of impressions with the paper's losses: NAG's fooling loss
-log(1 - q_c) on the impressions' clean top-1 plus the feature diversity loss. Defaults
(published): Adam lr 2e-4, batch 32, validation every 100 iterations on 1,000 images, the best
validated generator kept. The released ``gen_adv.py`` minimises only a GD-UAP activation loss on
Gaussian range images and merely logs the fooling loss; we follow the paper instead, as the issue
asked. The code has no iteration limit (``max_iter`` 1e6); ``iterations`` (20,000) and ``patience``
(20 checks) are our choices, ``max_iterations`` caps them for CPU runs (``trainer.max_iterations``
caps them and ``ci_steps`` at once, for smoke runs).

Impressions are cached under ``cache_dir`` (the app passes ``paths.cache_dir``; null: no cache),
keyed by the model's fingerprint (``cache.model_fingerprint``) and every stage-1 setting, and reused
by later runs; they are stored as 8-bit images in both paths, so a cached and a fresh run train on
the same data. Stage 1 draws from its own seeded RNG, so stage 2 does not depend on the cache.
The loader only provides the validation images. Evaluation as NAG: ``eval_samples`` patterns,
mean +- std; ``fit`` returns the first. With fewer classes (``num_classes``) they are spread evenly
over the model's classes.

Usage::

    attack = AAA(model, xi=10 / 255, num_classes=10, per_class=1, ci_steps=40, max_iterations=40)
    delta = attack.fit(loader)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import torch

from dominant_patterns.attacks.base import capped
from dominant_patterns.attacks.card import AttackCard
from dominant_patterns.attacks.impressions import ClassImpressions, cache_path, impression_classes
from dominant_patterns.attacks.nag import NAG
from dominant_patterns.core.atomic import atomic_write
from dominant_patterns.core.checks import check_at_least, check_positive
from dominant_patterns.core.errors import ConfigError
from dominant_patterns.models.classifier import ClassifierWrapper

log = logging.getLogger(__name__)


class AAA(NAG):
    """Class impressions from the model, then a NAG generator trained on them."""

    name: ClassVar[str] = "aaa"
    card: ClassVar[AttackCard] = AttackCard(
        "AAA", "Mopuri et al., ECCV 2018 (val-iisc/AAA)", 2018, "data-free", budget_unit="iterations",
        published_budget="10 class impressions per class (up to 1,500 steps each), then a NAG-style generator",
        published_source="Table 4 of the paper (paper.csv)")
    fit_state: ClassVar[tuple[str, ...]] = (*NAG.fit_state, "synth", "from_cache")

    def __init__(self, model: ClassifierWrapper, xi: float, *, num_classes: int | None = None, per_class: int = 10,
                 ci_steps: int = 1500, ci_lr_255: float = 10.0, ci_batch: int = 32, tv_weight: float = 0.0,
                 min_confidence: float = 0.55, max_confidence: float = 0.99, cache_dir: str | None = None,
                 lr: float = 2e-4, iterations: int = 20000, patience: int | None = 20, **kwargs: Any) -> None:
        super().__init__(model, xi, lr=lr, iterations=iterations, patience=patience, **kwargs)
        if num_classes is not None:
            check_at_least("attack.num_classes", num_classes, 1)
        self.per_class = check_at_least("attack.per_class", per_class, 1)
        self.classes = impression_classes(model.num_classes, num_classes, self.per_class)
        if len(self.classes) < 2:
            raise ConfigError("attack.num_classes x attack.per_class must give at least 2 impressions (NAG's "
                              "diversity term pairs each impression with another)")
        # trainer.max_iterations (smoke runs of attack sweeps) caps the synthesis steps too
        self.ci_steps = capped(ci_steps, None, key="ci_steps", trainer_cap=self.trainer.max_iterations)
        self.ci_lr_255 = check_positive("attack.ci_lr_255", ci_lr_255)
        self.ci_batch = check_at_least("attack.ci_batch", ci_batch, 1)
        self.tv_weight = float(tv_weight)
        if not 0 <= min_confidence <= max_confidence <= 1:
            raise ConfigError(f"attack.min_confidence={min_confidence} and max_confidence={max_confidence} must "
                              "satisfy 0 <= min <= max <= 1")
        self.confidence = (float(min_confidence), float(max_confidence))
        if cache_dir is not None and "${" in str(cache_dir):
            raise ConfigError(f"attack.cache_dir={cache_dir} is an unresolved interpolation; give a path or null")
        self.cache_dir = cache_dir
        self.synth = self.new_synth()
        self.from_cache = False

    def new_synth(self) -> ClassImpressions:
        return ClassImpressions(self.model, self.classes, steps=self.ci_steps, lr_255=self.ci_lr_255,
                                batch=self.ci_batch, tv_weight=self.tv_weight, confidence=self.confidence,
                                seed=self.seed + 3, settings=self.trainer)

    def impression_settings(self) -> dict[str, Any]:
        return {"version": 1, "classes": self.classes, "steps": self.ci_steps, "lr_255": self.ci_lr_255,
                "batch": self.ci_batch, "tv_weight": self.tv_weight, "confidence": list(self.confidence),
                "seed": self.seed + 3, "size": self.model.input_size, "precision": self.trainer.precision}

    def cache_file(self) -> Path | None:
        return None if self.cache_dir is None else cache_path(self.cache_dir, self.model, self.impression_settings())

    def load_cached(self) -> bool:
        path = self.cache_file()
        if path is None or not path.is_file():
            return False
        images = torch.load(path, map_location="cpu", weights_only=True)
        if images.shape != self.synth.images.shape or images.dtype != torch.uint8:
            log.warning("ignoring the class-impression cache %s (shape %s)", path, tuple(images.shape))
            return False
        self.synth.images, self.synth.done = images, len(self.classes)
        log.info("class impressions: %d read from the cache %s", len(self.classes), path)
        return True

    def save_cached(self) -> None:
        path = self.cache_file()
        if path is None or path.is_file():
            return
        atomic_write(path, lambda f: torch.save(self.synth.images, f))

    def impression_batch(self) -> torch.Tensor:
        """``batch_size`` distinct impressions (fewer if there are fewer), float [0, 1], from the attack's RNG."""
        n = len(self.classes)
        idx = torch.randperm(n, generator=self.generator)[: min(self.batch_size, n)]
        return self.synth.images[idx].to(self.device).float() / 255

    def fit(self, loader: Iterable[Any]) -> torch.Tensor:
        self.start(loader)
        self.synth = self.new_synth()
        self.from_cache = self.load_cached()
        max_steps = self.synth.max_units() + self.run_iterations

        def step(_x: torch.Tensor | None) -> bool:
            if not self.synth.finished:
                if self.synth.step():
                    log.info("class impressions: %d in %d steps (%d stopped at their confidence)",
                             len(self.classes), self.synth.units, self.synth.early)
                    self.save_cached()
                elif self.synth.units % self.trainer.log_every == 0:
                    self.log({"impressions/done": float(self.synth.done)}, self.synth.units)
                return False
            return self.update(self.impression_batch())

        self.train_generator(step, max_steps, self.current_samples)
        return self.finish()

    def budget_note(self) -> str:
        return (f"{len(self.classes)} impressions x <={self.ci_steps} steps ({self.synth.units} run), then "
                f"{self.steps_run or self.run_iterations} it (cap {self.run_iterations} of {self.iterations})")

    def data_note(self) -> str:
        return "none (class impressions; val. only)"

    def describe(self) -> dict[str, Any]:
        n_classes = len(set(self.classes))
        return {**super().describe(), "num_classes": n_classes, "per_class": self.per_class,
                "impressions": len(self.classes), "ci_batch": self.ci_batch, "ci_steps": self.ci_steps,
                "ci_steps_run": self.synth.units,
                "ci_stopped_at_confidence": self.synth.early, "impressions_from_cache": self.from_cache,
                "published_impressions": 10 * self.model.num_classes, "published_ci_steps": 1500}
