"""Figures 3 and 4: per-layer SSIM curves of one image (with its maps) and of the evaluation set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from dominant_patterns.analysis.artifacts import pyplot
from dominant_patterns.analysis.layer_ssim import summarize


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
    plt = pyplot()
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
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    plot_curves(ax, rows, std=True)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
