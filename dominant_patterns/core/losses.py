"""Similarity losses between f(delta) and f(x + delta) (paper eqs. 5-7), one registry.

Each loss takes ``target`` = f(delta) of shape [1, C] or [B, C] and ``output`` = f(x + delta)
of shape [B, C] and returns the per-sample loss [B]; lower means more similar.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from dominant_patterns.core.registry import Registry

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LOSSES: Registry[LossFn] = Registry("loss")


@LOSSES.register("cos")
def cos_loss(target: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """CoSLoss (eq. 5): 1 - cos(a, b)."""
    target = target.float().expand_as(output)
    return 1.0 - F.cosine_similarity(target, output.float(), dim=1, eps=1e-12)


@LOSSES.register("ed")
def euclidean_loss(target: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """EDLoss (eq. 6): ||a - b||_2."""
    return (target.float() - output.float()).norm(dim=1)


@LOSSES.register("kld")
def kld_loss(target: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """KLDLoss (eq. 7) with softmax(f(delta)) as the target distribution: KL(p_delta || p_adv)."""
    log_p = F.log_softmax(target.float(), dim=1).expand(output.shape[0], -1)
    log_q = F.log_softmax(output.float(), dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def get_loss(name: str) -> LossFn:
    """Return the loss registered as ``name`` (cos, ed, kld)."""
    return LOSSES.get(name)
