"""Class impressions: images synthesised from a classifier alone (AAA's stage 1; Mopuri et al., ECCV 2018).

From the mean image plus N(0, 1) noise (0-255 scale), each impression ascends its class's pre-softmax
logit with Adam (lr 10 on the 0-255 scale), every step under a random augmentation (val-iisc/AAA
``pd_b1.py``): additive U[-10, 10] noise, a per-channel colour shift U[-16, 16], a zoom in
{0.95, 0.975, 1, 1.025, 1.05}, a rotation of -5..5 whole degrees, a second colour shift U[-8, 8]
(reflection at the borders, as the published reflect-pad 16 then crop), the image clipped to the
valid range after each step. An impression stops when the softmax confidence of its class exceeds
a threshold drawn from U(0.55, 0.99), or after ``steps`` (published 1,500). Impressions are
synthesised ``batch`` at a time (``pd_di.py`` batches 32 classes; each image's augmentation and
gradient are its own, so batching changes nothing but speed) and stored as 8-bit images.

:class:`ClassImpressions` advances one optimisation step per :meth:`~ClassImpressions.step` and
holds all its state (finished images, the current batch, its Adam state, its RNG) in
``state_dict()``, so a checkpointed loop resumes it bitwise. :func:`cache_path` names the file a
finished set is cached in, keyed by the model's fingerprint and every setting.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dominant_patterns.core.devices import autocast, to_memory_format
from dominant_patterns.core.loops import TrainerSettings
from dominant_patterns.models.classifier import ClassifierWrapper, model_fingerprint

ZOOMS = (0.95, 0.975, 1.0, 1.025, 1.05)


def impression_classes(num_model_classes: int, num_classes: int | None, per_class: int) -> list[int]:
    """``per_class`` copies of ``num_classes`` evenly spaced classes (None: every class), class-major."""
    n = num_model_classes if num_classes is None else min(int(num_classes), num_model_classes)
    return [c * num_model_classes // n for c in range(n) for _ in range(per_class)]


def cache_path(cache_dir: str | Path, model: ClassifierWrapper, settings: Mapping[str, Any]) -> Path:
    """``<cache_dir>/class_impressions/<model>-<key>.pt``, the key hashing the model's weights and ``settings``."""
    key = hashlib.sha256(json.dumps({"model": model_fingerprint(model), **settings}, sort_keys=True,
                                    default=str).encode()).hexdigest()[:20]
    return Path(cache_dir).expanduser() / "class_impressions" / f"{model.name}-{key}.pt"


def total_variation(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).abs().sum() + (x[..., :, 1:] - x[..., :, :-1]).abs().sum()


class ClassImpressions:
    """Synthesises one impression per entry of ``classes``, ``batch`` at a time, one Adam step per call."""

    def __init__(self, model: ClassifierWrapper, classes: list[int], *, steps: int = 1500, lr_255: float = 10.0,
                 batch: int = 32, tv_weight: float = 0.0, confidence: tuple[float, float] = (0.55, 0.99),
                 seed: int = 0, settings: TrainerSettings | None = None) -> None:
        self.model, self.classes = model, torch.tensor(classes, dtype=torch.long)
        self.steps, self.lr, self.batch = int(steps), float(lr_255) / 255, int(batch)
        self.tv_weight, self.confidence = float(tv_weight), (float(confidence[0]), float(confidence[1]))
        self.settings = settings or TrainerSettings()
        self.rng = torch.Generator().manual_seed(seed)
        s = model.input_size
        self.images = torch.zeros(len(classes), 3, s, s, dtype=torch.uint8)
        self.done, self.units, self.early = 0, 0, 0
        self.current: torch.Tensor | None = None
        self.optimizer: torch.optim.Adam | None = None
        self.batch_step = 0
        self.thresholds = torch.zeros(0)
        self.active = torch.zeros(0, dtype=torch.bool)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def finished(self) -> bool:
        return self.done >= len(self.classes)

    def max_units(self) -> int:
        """Optimisation steps if no impression stops early."""
        return math.ceil(len(self.classes) / self.batch) * self.steps

    def uniform(self, shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
        return (low + (high - low) * torch.rand(shape, generator=self.rng)).to(self.device)

    def start_batch(self) -> None:
        n = min(self.batch, len(self.classes) - self.done)
        s = self.model.input_size
        start = self.model.mean.float().view(1, 3, 1, 1).expand(n, 3, s, s)
        noise = torch.randn((n, 3, s, s), generator=self.rng).to(self.device) / 255
        self.current = (start + noise).clamp(0, 1).requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.current], lr=self.lr)
        self.thresholds = self.uniform((n,), *self.confidence)
        self.active = torch.ones(n, dtype=torch.bool, device=self.device)
        self.batch_step = 0

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """Noise, colour shift, zoom, rotation, colour shift, each drawn per image (border: reflection)."""
        n = x.shape[0]
        x = x + self.uniform(tuple(x.shape), -10 / 255, 10 / 255) + self.uniform((n, 3, 1, 1), -16 / 255, 16 / 255)
        zoom = torch.tensor(ZOOMS)[torch.randint(0, len(ZOOMS), (n,), generator=self.rng)]
        angle = torch.randint(-5, 6, (n,), generator=self.rng).float() * math.pi / 180
        cos, sin = angle.cos() / zoom, angle.sin() / zoom
        theta = torch.stack([torch.stack([cos, -sin, torch.zeros(n)], 1), torch.stack([sin, cos, torch.zeros(n)], 1)],
                            1).to(self.device)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        return x + self.uniform((n, 3, 1, 1), -8 / 255, 8 / 255)

    def step(self) -> bool:
        """One Adam step of the current batch (starting one if needed); True once every impression is done."""
        if self.finished:
            return True
        if self.current is None:
            self.start_batch()
        assert self.current is not None and self.optimizer is not None
        x, cls = self.current, self.classes[self.done:self.done + self.current.shape[0]].to(self.device)
        with autocast(self.device, self.settings.precision):
            logits = self.model(to_memory_format(self.augment(x), self.settings.channels_last)).float()
        loss = -logits.gather(1, cls[:, None]).sum()
        if self.tv_weight:
            loss = loss + self.tv_weight * total_variation(x * 255)
        before = x.detach().clone()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            x.copy_(torch.where(self.active.view(-1, 1, 1, 1), x.clamp(0, 1), before))  # finished rows stay
            confident = logits.softmax(1).gather(1, cls[:, None])[:, 0] > self.thresholds
            self.early += int((confident & self.active).sum())
            self.active &= ~confident
        self.batch_step += 1
        self.units += 1
        if self.batch_step >= self.steps or not bool(self.active.any()):
            rows = slice(self.done, self.done + x.shape[0])
            self.images[rows] = (x.detach() * 255).round().clamp(0, 255).to(torch.uint8).cpu()
            self.done += x.shape[0]
            self.current, self.optimizer = None, None
        return self.finished

    def state_dict(self) -> dict[str, Any]:
        return {"images": self.images, "done": self.done, "units": self.units, "early": self.early,
                "rng": self.rng.get_state(), "batch_step": self.batch_step, "thresholds": self.thresholds,
                "active": self.active, "current": None if self.current is None else self.current.detach().clone(),
                "optimizer": None if self.optimizer is None else self.optimizer.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.images = state["images"].clone()
        self.done, self.units, self.early = int(state["done"]), int(state["units"]), int(state["early"])
        self.rng.set_state(state["rng"])
        self.batch_step = int(state["batch_step"])
        self.thresholds, self.active = state["thresholds"].to(self.device), state["active"].to(self.device)
        self.current, self.optimizer = None, None
        if state["current"] is not None:
            self.current = state["current"].to(self.device).requires_grad_(True)
            self.optimizer = torch.optim.Adam([self.current], lr=self.lr)
            self.optimizer.load_state_dict(state["optimizer"])
