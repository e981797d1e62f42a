"""Capture intermediate activations by layer name; which layers form a group is model data.

Groups:
    ``conv``: every convolution (FFF / GD-UAP style objectives).
    ``relu``: the paper's Fig. 3 units: each ReLU for plain CNNs (VGG, AlexNet, tiny), each
        residual/dense/inception/MBConv block output for networks that reuse one ReLU module.

A model entry may list its groups explicitly in ``ModelEntry.layer_groups``; otherwise they are
derived from the module types here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from dominant_patterns.core.errors import ConfigError
from dominant_patterns.models.classifier import ClassifierWrapper

GROUPS = ("conv", "relu")
# Block types whose output is one Fig. 3 unit in networks that call a shared ReLU several times.
BLOCK_TYPES = ("BasicBlock", "Bottleneck", "_DenseBlock", "_Transition", "Inception", "InceptionAux",
               "MBConvBlock", "MBConv", "FusedMBConv", "InvertedResidual", "BasicConv2d")


def _auto_group(net: nn.Module, group: str) -> list[str]:
    named = [(n, m) for n, m in net.named_modules() if n]
    if group == "conv":
        return [n for n, m in named if isinstance(m, nn.Conv2d)]
    blocks = [n for n, m in named if type(m).__name__ in BLOCK_TYPES and type(m).__name__ != "BasicConv2d"]
    # keep outermost blocks only (a dense block contains dense layers)
    blocks = [n for n in blocks if not any(n.startswith(b + ".") for b in blocks if b != n)]
    if blocks:
        return blocks
    relus = [n for n, m in named if isinstance(m, (nn.ReLU, nn.ReLU6))]
    return relus


def layer_names(model: ClassifierWrapper, group: str) -> list[str]:
    """Dotted names (relative to ``model.net``) of the layers in ``group``, in forward order."""
    if group not in GROUPS:
        raise ConfigError(f"layer group '{group}' is not valid. Valid choices: {', '.join(GROUPS)}")
    names = model.layer_groups.get(group) or _auto_group(model.net, group)
    if not names:
        raise ConfigError(f"model '{model.name}' has no layers in group '{group}'")
    return list(names)


@contextmanager
def capture_activations(model: ClassifierWrapper | nn.Module, names: list[str], *,
                        detach: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, each forward fills ``acts[name]`` with that layer's output (last call wins).

    Names are relative to ``model.net`` for a wrapper, or to ``model`` itself otherwise.
    """
    net = model.net if isinstance(model, ClassifierWrapper) else model
    acts: dict[str, torch.Tensor] = {}
    handles = []

    def make_hook(name: str):  # noqa: ANN202
        def hook(_m: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            out = out[0] if isinstance(out, (tuple, list)) else out
            acts[name] = out.detach() if detach else out

        return hook

    try:
        for name in names:
            handles.append(net.get_submodule(name).register_forward_hook(make_hook(name)))
        yield acts
    finally:
        for h in handles:
            h.remove()


@contextmanager
def transform_activations(model: ClassifierWrapper | nn.Module, names: list[str],
                          fn: Callable[[str, torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Within the block, each named layer's output is replaced by ``fn(name, output)``.

    For objectives that change activations inside the network (e.g. Monte Carlo dropout on
    every conv output, PD-UA); names as in :func:`capture_activations`.
    """
    net = model.net if isinstance(model, ClassifierWrapper) else model
    handles = []

    def make_hook(name: str):  # noqa: ANN202
        def hook(_m: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor | None:
            return fn(name, out) if isinstance(out, torch.Tensor) else None

        return hook

    try:
        for name in names:
            handles.append(net.get_submodule(name).register_forward_hook(make_hook(name)))
        yield
    finally:
        for h in handles:
            h.remove()
