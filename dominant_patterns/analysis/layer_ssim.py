"""Per-layer SSIM of a pattern's takeover (the analysis of Figures 3 and 4).

For every Fig. 3 unit (``hooks.layer_names(model, "relu")``: each ReLU of a plain CNN, each block
output otherwise) the SSIM between the features of delta + x and those of delta, and between
delta + x and x, per evaluation image. SSIM comes from pytorch-msssim on the C-channel feature
maps; each pair is min-max scaled jointly (per image) to [0, 1] first, and the Gaussian window
shrinks to the largest odd size the feature map allows (layers smaller than 3x3 are skipped).
A transformer block's tokens [B, N, C] are read as a [B, C, g, g] map of the last g*g (patch) tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from pytorch_msssim import ssim

from dominant_patterns.core.batches import iterate_images
from dominant_patterns.models.classifier import ClassifierWrapper
from dominant_patterns.models.hooks import capture_activations


def window_for(shape: torch.Size | tuple[int, ...], largest: int = 11) -> int | None:
    """Largest odd window <= ``largest`` that fits the map's height and width (None below 3)."""
    side = min(int(shape[-1]), int(shape[-2]), largest)
    side -= 1 - side % 2
    return side if side >= 3 else None


def as_feature_map(t: torch.Tensor) -> torch.Tensor:
    """Tokens [B, N, C] whose last g*g form the patch grid (after class/register tokens) -> [B, C, g, g]."""
    if t.dim() != 3:
        return t
    side = int(t.shape[1] ** 0.5)
    if side < 1:
        return t
    return t[:, t.shape[1] - side * side:].transpose(1, 2).reshape(t.shape[0], t.shape[2], side, side)


def joint_scale(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max scale each image of ``a`` and ``b`` to [0, 1] with shared bounds."""
    dims = tuple(range(1, a.dim()))
    lo = torch.minimum(a.amin(dim=dims, keepdim=True), b.amin(dim=dims, keepdim=True))
    hi = torch.maximum(a.amax(dim=dims, keepdim=True), b.amax(dim=dims, keepdim=True))
    span = (hi - lo).clamp_min(1e-12)
    return (a - lo) / span, (b - lo) / span


def feature_ssim(a: torch.Tensor, b: torch.Tensor, largest_window: int = 11) -> torch.Tensor:
    """Per-image SSIM of two feature batches [B, C, H, W] or tokens (NaN where the map is too small)."""
    a, b = as_feature_map(a), as_feature_map(b)
    if a.dim() != 4:
        return torch.full((a.shape[0],), float("nan"))
    win = window_for(a.shape, largest_window)
    if win is None:
        return torch.full((a.shape[0],), float("nan"))
    a, b = joint_scale(a.float(), b.float())
    return ssim(a, b, data_range=1.0, size_average=False, win_size=win).cpu()


@torch.no_grad()
def layer_ssim(model: ClassifierWrapper, delta: torch.Tensor, loader: Iterable[Any], names: list[str],
               largest_window: int = 11, keep_maps_of: int | None = 0
               ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, torch.Tensor]]]:
    """Per layer, per image: SSIM(f(δ+x), f(δ)) and SSIM(f(δ+x), f(x)).

    Returns ``({layer: {"pattern": [N], "image": [N]}}, maps)`` where ``maps`` holds the
    channel-mean feature maps of image ``keep_maps_of`` for x, δ and δ+x (Figure 3).
    """
    model = model.freeze()
    device = model.device
    delta = delta.to(device).float()
    pattern_acts: dict[str, torch.Tensor] = {}
    with capture_activations(model, names, detach=True) as acts:
        model(delta[None])
        pattern_acts = {k: v.clone() for k, v in acts.items()}
        scores: dict[str, dict[str, list[torch.Tensor]]] = {n: {"pattern": [], "image": []} for n in names}
        maps: dict[str, dict[str, torch.Tensor]] = {}
        seen = 0
        for x, _ in iterate_images(loader, device):
            model(x)
            clean = {k: v.clone() for k, v in acts.items()}
            model((x + delta).clamp(0, 1))
            for name in names:
                adv = as_feature_map(acts[name])
                ref = as_feature_map(pattern_acts[name]).expand_as(adv)
                scores[name]["pattern"].append(feature_ssim(adv, ref, largest_window))
                scores[name]["image"].append(feature_ssim(adv, as_feature_map(clean[name]), largest_window))
                if keep_maps_of is not None and seen <= keep_maps_of < seen + x.shape[0] and adv.dim() == 4:
                    i = keep_maps_of - seen
                    maps[name] = {"x": as_feature_map(clean[name])[i].mean(0).cpu(),
                                  "delta": ref[0].mean(0).cpu(),
                                  "adv": adv[i].mean(0).cpu()}
            seen += x.shape[0]
    out = {n: {k: torch.cat(v).numpy() for k, v in d.items()} for n, d in scores.items()}
    return out, maps


def summarize(names: list[str], scores: dict[str, dict[str, np.ndarray]]) -> list[dict[str, Any]]:
    rows = []
    for i, name in enumerate(names):
        p, m = scores[name]["pattern"], scores[name]["image"]
        rows.append({"index": i + 1, "name": name,
                     "ssim_pattern_mean": float(np.nanmean(p)) if np.isfinite(p).any() else float("nan"),
                     "ssim_pattern_std": float(np.nanstd(p)) if np.isfinite(p).any() else float("nan"),
                     "ssim_image_mean": float(np.nanmean(m)) if np.isfinite(m).any() else float("nan"),
                     "ssim_image_std": float(np.nanstd(m)) if np.isfinite(m).any() else float("nan")})
    return rows


def takeover_layer(rows: list[dict[str, Any]]) -> int | None:
    """First unit from which SSIM(δ+x, δ) stays above SSIM(δ+x, x) up to the last one (None if never)."""
    valid = [r for r in rows if np.isfinite(r["ssim_pattern_mean"]) and np.isfinite(r["ssim_image_mean"])]
    first = None
    for r in valid:
        if r["ssim_pattern_mean"] > r["ssim_image_mean"]:
            first = r["index"] if first is None else first
        else:
            first = None
    return first
