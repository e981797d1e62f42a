"""Files a run leaves behind: the pattern tensor, its picture, and a grid of perturbed examples."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch


def pattern_to_uint8(delta: torch.Tensor, xi: float) -> np.ndarray:
    """Map delta from [-xi, xi] to [0, 255] (as in the paper's figures); HWC uint8."""
    img = ((delta.detach().float().cpu() + xi) / (2 * xi)).clamp(0, 1)
    return (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def save_pattern_png(path: Path, delta: torch.Tensor, xi: float) -> None:
    from PIL import Image

    Image.fromarray(pattern_to_uint8(delta, xi)).save(path)


def pyplot() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_examples_grid(path: Path, clean: torch.Tensor, perturbed: torch.Tensor, clean_names: Sequence[str],
                       adv_names: Sequence[str], title: str = "", pattern_name: str | None = None) -> None:
    """A two-row grid: clean images (top) and perturbed ones (bottom) with predicted class names."""
    plt = pyplot()
    n = clean.shape[0]
    fig, axes = plt.subplots(2, n, figsize=(2.0 * n, 4.6), squeeze=False)
    for i in range(n):
        for row, (imgs, names) in enumerate(((clean, clean_names), (perturbed, adv_names))):
            ax = axes[row][i]
            ax.imshow(imgs[i].detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy())
            ax.set_title(str(names[i])[:22], fontsize=7, color="black" if row == 0 else "crimson")
            ax.axis("off")
    axes[0][0].text(-0.1, 0.5, "clean", transform=axes[0][0].transAxes, rotation=90, va="center", ha="right")
    axes[1][0].text(-0.1, 0.5, "x + δ", transform=axes[1][0].transAxes, rotation=90, va="center", ha="right")
    if title or pattern_name:
        fig.suptitle(title or f"pattern predicted as {pattern_name}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
