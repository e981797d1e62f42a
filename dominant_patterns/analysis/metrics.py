"""Evaluation metrics shared by every attack: one pass computes clean predictions once and
scores any number of patterns on the same images.

All ratios are fractions in [0, 1]; reports multiply by 100.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from dominant_patterns.analysis.metric_table import metric
from dominant_patterns.core.batches import iterate_images
from dominant_patterns.core.devices import autocast, to_memory_format
from dominant_patterns.core.losses import cos_loss
from dominant_patterns.models.classifier import ClassifierWrapper

log = logging.getLogger(__name__)

TOPK = (1, 3, 5)


def fooling_rate(clean_pred: torch.Tensor, adv_pred: torch.Tensor) -> float:
    """Share of images whose top-1 prediction changes under the perturbation."""
    return float((clean_pred != adv_pred).float().mean()) if clean_pred.numel() else float("nan")


def dominance_ratio(adv_pred: torch.Tensor, dominant_class: int) -> float:
    """Share of perturbed images predicted as the pattern's own class argmax f(delta)."""
    return float((adv_pred == dominant_class).float().mean()) if adv_pred.numel() else float("nan")


def topk_ratios(pred: torch.Tensor, ks: Iterable[int] = TOPK) -> dict[int, float]:
    """Share of predictions falling in the k most frequent predicted classes, for each k."""
    if not pred.numel():
        return {k: float("nan") for k in ks}
    counts = torch.bincount(pred.flatten()).sort(descending=True).values.float()
    return {k: float(counts[:k].sum() / pred.numel()) for k in ks}


def most_frequent(pred: torch.Tensor) -> int:
    return int(torch.bincount(pred.flatten()).argmax())


def accuracy(pred: torch.Tensor, labels: torch.Tensor) -> float:
    return float((pred == labels).float().mean())


def pattern_norms(delta: torch.Tensor) -> dict[str, float]:
    d = delta.detach().float()
    return {"linf": float(d.abs().max()), "l2": float(d.norm()), "linf_255": float(d.abs().max() * 255)}


def random_noise_pattern(shape: tuple[int, ...], xi: float, seed: int = 0) -> torch.Tensor:
    """Uniform noise in [-xi, xi] (the random-noise floor)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) * 2 - 1) * xi


def random_sign_pattern(shape: tuple[int, ...], xi: float, seed: int = 0) -> torch.Tensor:
    """Each pixel +xi or -xi with equal probability (the random-sign floor)."""
    g = torch.Generator().manual_seed(seed + 1)
    return (torch.randint(0, 2, shape, generator=g).float() * 2 - 1) * xi


def noise_floors(shape: tuple[int, ...], xi: float, seed: int = 0) -> dict[str, torch.Tensor]:
    return {"random_noise": random_noise_pattern(shape, xi, seed), "random_sign": random_sign_pattern(shape, xi, seed)}


@dataclass
class _Accumulator:
    preds: list[torch.Tensor] = field(default_factory=list)
    cos_logits: list[torch.Tensor] = field(default_factory=list)
    cos_features: list[torch.Tensor] = field(default_factory=list)


@dataclass
class EvaluationResult:
    """Per-pattern metrics plus the clean predictions they were measured against."""

    patterns: dict[str, dict[str, Any]]
    clean_pred: torch.Tensor
    adv_pred: dict[str, torch.Tensor]
    labels: torch.Tensor | None


@torch.no_grad()
def evaluate_patterns(
    model: ClassifierWrapper,
    patterns: Mapping[str, torch.Tensor],
    loader: Iterable[Any],
    *,
    precision: str = "fp32",
    channels_last: bool = True,
    labels_match: bool = False,
    progress: bool = True,
    clean_pred: torch.Tensor | None = None,
) -> EvaluationResult:
    """Score each pattern on every image of ``loader`` (images in [0, 1], uint8 accepted).

    Args:
        patterns: name -> delta [3, S, S].
        labels_match: whether dataset labels index the model's classes (enables accuracy).
        clean_pred: clean predictions of this loader from an earlier call, to skip recomputing them.
    """
    model = model.freeze()
    device = model.device
    deltas = {k: v.to(device).float() for k, v in patterns.items()}
    refs: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    with autocast(device, precision):
        for name, delta in deltas.items():
            logits_d, feats_d = model.forward_with_features(to_memory_format(delta[None], channels_last))
            refs[name] = (logits_d.float(), feats_d.float(), logits_d.float().softmax(1)[0])
    acc = {name: _Accumulator() for name in deltas}
    clean_parts: list[torch.Tensor] = []
    label_parts: list[torch.Tensor] = []
    seen = 0
    for x, y in tqdm(iterate_images(loader, device), desc="evaluate", disable=not progress, unit="batch", leave=False):
        x = to_memory_format(x, channels_last)
        with autocast(device, precision):
            if clean_pred is None:
                clean_parts.append(model(x).argmax(1))
            for name, delta in deltas.items():
                logits, feats = model.forward_with_features((x + delta).clamp_(0, 1))
                logits_d, feats_d, _ = refs[name]
                a = acc[name]
                a.preds.append(logits.argmax(1))  # stays on the device: no sync per batch
                a.cos_logits.append(cos_loss(logits_d, logits.float()))
                a.cos_features.append(cos_loss(feats_d, feats.float()))
        if y is not None:
            label_parts.append(y)
        seen += x.shape[0]
    clean = clean_pred.cpu() if clean_pred is not None else torch.cat(clean_parts).cpu()
    if clean.numel() != seen:
        raise ValueError(f"clean_pred holds {clean.numel()} predictions but the loader gave {seen} images")
    labels = torch.cat(label_parts).cpu() if label_parts else None
    has_labels = labels_match and labels is not None and bool((labels >= 0).all())
    results: dict[str, dict[str, Any]] = {}
    adv_preds: dict[str, torch.Tensor] = {}
    for name, delta in deltas.items():
        pred = torch.cat(acc[name].preds).cpu()
        adv_preds[name] = pred
        dom_class = int(refs[name][2].argmax())
        top = topk_ratios(pred)
        clean_top = topk_ratios(clean)
        freq = most_frequent(pred)
        m: dict[str, Any] = {
            "n_images": int(pred.numel()),
            "fooling_rate": fooling_rate(clean, pred),
            "dominant_class": dom_class,
            "dominant_class_name": model.class_names[dom_class],
            "dominant_confidence": float(refs[name][2][dom_class]),
            "dominance_ratio": dominance_ratio(pred, dom_class),
            **{f"top{k}_ratio": v for k, v in top.items()},
            **{f"clean_top{k}_ratio": v for k, v in clean_top.items()},
            "most_frequent_class": freq,
            "most_frequent_class_name": model.class_names[freq],
            "cos_loss_logits": float(torch.cat(acc[name].cos_logits).mean()),
            "cos_loss_features": float(torch.cat(acc[name].cos_features).mean()),
            **pattern_norms(delta),
        }
        if has_labels:
            assert labels is not None
            m["clean_accuracy"] = accuracy(clean, labels)
            m["adv_accuracy"] = accuracy(pred, labels)
        results[name] = m
    return EvaluationResult(results, clean, adv_preds, labels)


def mean_over_samples(per_sample: list[Mapping[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Metrics of Z sampled patterns (a generator's): the mean of each measured value (names and class
    indices of the first sample), and ``{"n": Z, "std": {...}, "values": {...}}`` over the samples."""
    first = dict(per_sample[0])
    keys = [k for k, v in first.items() if metric(k).averaged and isinstance(v, (int, float))
            and not isinstance(v, bool)]
    values = {k: [float(m[k]) for m in per_sample] for k in keys}
    mean = {k: float(torch.tensor(v).mean()) for k, v in values.items()}
    std = {k: float(torch.tensor(v).std()) if len(v) > 1 else 0.0 for k, v in values.items()}
    return {**first, **mean}, {"n": len(per_sample), "std": std, "values": values}
