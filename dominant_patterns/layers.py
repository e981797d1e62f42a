"""How a dominant pattern takes over the network, layer by layer (Figures 3 and 4).

For every Fig. 3 unit (``hooks.layer_names(model, "relu")``: each ReLU of a plain CNN, each block
output otherwise) the SSIM between the features of delta + x and those of delta, and between
delta + x and x, per evaluation image. SSIM comes from pytorch-msssim on the C-channel feature
maps; each pair is min-max scaled jointly (per image) to [0, 1] first, and the Gaussian window
shrinks to the largest odd size the feature map allows (layers smaller than 3x3 are skipped).

    python -m dominant_patterns.layers experiment=fig4_layers
    python -m dominant_patterns.layers source.task=table1 num_images=64
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from pytorch_msssim import ssim

from dominant_patterns.data import build_dataset, iterate_images, make_loader
from dominant_patterns.evaluate import limit, source_identity, start_pattern_job, start_record
from dominant_patterns.hooks import capture_activations, layer_names
from dominant_patterns.models import ClassifierWrapper
from dominant_patterns.run import CONFIG_DIR, container

log = logging.getLogger("dominant_patterns.layers")


def window_for(shape: torch.Size | tuple[int, ...], largest: int = 11) -> int | None:
    """Largest odd window <= ``largest`` that fits the map's height and width (None below 3)."""
    side = min(int(shape[-1]), int(shape[-2]), largest)
    side -= 1 - side % 2
    return side if side >= 3 else None


def joint_scale(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max scale each image of ``a`` and ``b`` to [0, 1] with shared bounds."""
    dims = tuple(range(1, a.dim()))
    lo = torch.minimum(a.amin(dim=dims, keepdim=True), b.amin(dim=dims, keepdim=True))
    hi = torch.maximum(a.amax(dim=dims, keepdim=True), b.amax(dim=dims, keepdim=True))
    span = (hi - lo).clamp_min(1e-12)
    return (a - lo) / span, (b - lo) / span


def feature_ssim(a: torch.Tensor, b: torch.Tensor, largest_window: int = 11) -> torch.Tensor:
    """Per-image SSIM of two feature batches [B, C, H, W] (NaN where the map is too small)."""
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
                adv = acts[name]
                ref = pattern_acts[name].expand_as(adv)
                scores[name]["pattern"].append(feature_ssim(adv, ref, largest_window))
                scores[name]["image"].append(feature_ssim(adv, clean[name], largest_window))
                if keep_maps_of is not None and seen <= keep_maps_of < seen + x.shape[0] and adv.dim() == 4:
                    i = keep_maps_of - seen
                    maps[name] = {"x": clean[name][i].mean(0).cpu(), "delta": pattern_acts[name][0].mean(0).cpu(),
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


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(ax: Any, rows: list[dict[str, Any]], std: bool) -> None:
    x = [r["index"] for r in rows]
    for key, colour, label in (("image", "tab:blue", "SSIM(δ+x, x)"), ("pattern", "tab:red", "SSIM(δ+x, δ)")):
        mean = np.array([r[f"ssim_{key}_mean"] for r in rows])
        ax.plot(x, mean, "-o", color=colour, label=label, markersize=3)
        if std:
            sd = np.array([r[f"ssim_{key}_std"] for r in rows])
            ax.fill_between(x, mean - sd, mean + sd, color=colour, alpha=0.2)
    ax.set_xticks(x)
    ax.set_xlabel("layer (Fig. 3 unit) index")
    ax.set_ylabel("SSIM")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=8)


def plot_fig3(path: Path, names: list[str], scores: dict[str, dict[str, np.ndarray]],
              maps: dict[str, dict[str, torch.Tensor]], index: int, title: str) -> None:
    """Pseudo-colour feature maps of even layers (x, δ, δ+x) above one image's SSIM curves."""
    plt = _plt()
    shown = [n for i, n in enumerate(names) if (i + 1) % 2 == 0 and n in maps] or [n for n in names if n in maps]
    cols = max(len(shown), 1)
    fig = plt.figure(figsize=(max(1.3 * cols, 7), 7.5))
    grid = fig.add_gridspec(4, cols, height_ratios=[1, 1, 1, 2.4])
    for j, name in enumerate(shown):
        for i, key in enumerate(("x", "delta", "adv")):
            ax = fig.add_subplot(grid[i, j])
            ax.imshow(maps[name][key].numpy(), cmap="jet")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel({"x": "x", "delta": "δ", "adv": "δ+x"}[key])
            if i == 0:
                ax.set_title(str(names.index(name) + 1), fontsize=7)
    ax = fig.add_subplot(grid[3, :])
    one = {n: {k: v[index:index + 1] for k, v in d.items()} for n, d in scores.items()}
    plot_curves(ax, summarize(names, one), std=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_fig4(path: Path, rows: list[dict[str, Any]], title: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    plot_curves(ax, rows, std=True)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def analyze(cfg: DictConfig) -> dict[str, Any]:
    """Compute the per-layer SSIMs, write layers.json, fig3.png, fig4.png and metrics.json."""
    settings, model, delta, meta, path, _xi = start_pattern_job(cfg)
    eval_set = build_dataset(container(cfg.dataset), split="eval", image_size=model.input_size, seed=int(cfg.seed))
    subset = limit(eval_set, cfg.get("num_images"))
    loader = make_loader(subset, batch_size=min(settings.eval_batch_size, 32), shuffle=False)
    names = layer_names(model, str(cfg.layer_group))
    identity = {**source_identity(meta, path), "model": model.name, "dataset": eval_set.name,
                "eval_dataset": eval_set.name, "layer_group": str(cfg.layer_group)}
    out_dir, recorder = start_record(cfg, "layers", identity)
    exit_code = 1
    try:
        start = time.perf_counter()
        example = min(int(cfg.example_index), len(subset) - 1)
        scores, maps = layer_ssim(model, delta, loader, names, int(cfg.ssim_window), keep_maps_of=example)
        rows = summarize(names, scores)
        valid = [r for r in rows if np.isfinite(r["ssim_pattern_mean"])]
        crossover = takeover_layer(rows)
        (out_dir / "layers.json").write_text(json.dumps({"layers": rows, "num_images": len(subset)}, indent=1))
        title = (f"{model.name}: pattern '{meta.get('model')}/{meta.get('dataset')}' on {len(subset)} "
                 f"{eval_set.name} images")
        plot_fig3(out_dir / "fig3.png", names, scores, maps, example, f"{model.name}, image {example}")
        plot_fig4(out_dir / "fig4.png", rows, title)
        metrics = {"num_layers": len(names), "num_images": len(subset), "takeover_layer": crossover,
                   "ssim_pattern_last": valid[-1]["ssim_pattern_mean"] if valid else None,
                   "ssim_image_last": valid[-1]["ssim_image_mean"] if valid else None,
                   "ssim_pattern_first": valid[0]["ssim_pattern_mean"] if valid else None,
                   "ssim_image_first": valid[0]["ssim_image_mean"] if valid else None}
        results = {"metrics": metrics, "timing": {"seconds": time.perf_counter() - start}}
        recorder.log({"layers": metrics})
        recorder.log_images({"fig3": out_dir / "fig3.png", "fig4": out_dir / "fig4.png"})
        recorder.finish(results)
        print(f"{model.name}: {len(names)} layers, pattern takes over from layer {crossover}; last layer SSIM(δ+x, δ) "
              f"{metrics['ssim_pattern_last']}, SSIM(δ+x, x) {metrics['ssim_image_last']}; outputs in {out_dir}",
              flush=True)
        exit_code = 0
        return results
    finally:
        recorder.close(exit_code)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="layers")
def main(cfg: DictConfig) -> None:
    analyze(cfg)


if __name__ == "__main__":
    main()
