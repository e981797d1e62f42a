"""Pieces of the activation-based (data-free) objectives: the "no data" input, activation norms, a
uniform start (FFF, GD-UAP, PD-UA)."""

from __future__ import annotations

import torch

from dominant_patterns.models.classifier import ClassifierWrapper


def mean_image(model: ClassifierWrapper, batch: int = 1) -> torch.Tensor:
    """The dataset-mean image in [0, 1] pixels ("no data": it normalizes to zero)."""
    s = model.input_size
    return model.mean.float().view(1, 3, 1, 1).expand(batch, 3, s, s).clone()


def log_activation_norms(acts: dict[str, torch.Tensor], names: list[str], kind: str) -> torch.Tensor:
    """Sum over layers of log(||a_l||^2 / 2) (``l2``, GD-UAP) or log mean |a_l| (``abs_mean``, FFF).

    Each norm is taken over the whole batch tensor of a layer, as in the public TF code.
    """
    terms = []
    for name in names:
        a = acts[name].float()
        if kind == "l2":
            terms.append(torch.log(a.pow(2).sum() / 2 + 1e-12))
        elif kind == "abs_mean":
            terms.append(torch.log(a.abs().mean() + 1e-12))
        else:
            raise ValueError(f"unknown activation objective {kind}")
    return torch.stack(terms).sum()


def uniform_init(shape: tuple[int, ...], xi: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """delta ~ U[-xi, xi] (FFF, GD-UAP initialization), drawn on CPU for reproducibility."""
    return ((torch.rand(shape, generator=generator) * 2 - 1) * xi).to(device)
