"""Fold frozen BatchNorm layers into the convolutions before them (exact for a frozen network in eval mode).

In eval mode ``bn(conv(x)) = conv'(x)`` with ``W' = W * s`` and ``b' = (b - mean) * s + beta``,
``s = gamma / sqrt(var + eps)`` per output channel, so the folded network computes the same function
(up to float rounding) with one op less per pair, in the forward and in the input-gradient backward.

Which BN follows which convolution is read from the network's graph (``torch.fx``, convolutions and
BN layers kept as leaves, so padding subclasses such as EfficientNet-Lite's ``Conv2dStaticSamePadding``
count as convolutions). A BN is folded only when its sole input is a convolution's output that nothing
else reads, both modules run once per forward, and their channels match; everything else (DenseNet's
``bn -> relu -> conv`` on concatenated features, a BN that never runs) is left as it is and counted.

Folding changes what a convolution outputs (it becomes the BN's output): objectives that hook
convolution outputs (the ``conv`` group of :mod:`dominant_patterns.models.hooks`) must see the unfolded
network. Block outputs and ReLUs (the ``relu`` group), the logits and the head input are unchanged.

    report = fold_batchnorm(model.net)     # in place; model frozen and in eval mode
    report.folded, report.total
    fold_for_attack(model, attack, enabled=settings.fold_bn)   # what the run app does
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import fx, nn

log = logging.getLogger(__name__)

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass
class FoldReport:
    """What :func:`fold_batchnorm` did: the BN layers folded (of all in the network) and why not more."""

    folded: int = 0
    total: int = 0
    pairs: list[tuple[str, str]] = field(default_factory=list)
    #: set when the graph could not be read (nothing folded then)
    reason: str | None = None

    @property
    def left(self) -> int:
        """BN layers left unfolded."""
        return self.total - self.folded

    def describe(self) -> dict[str, Any]:
        return {"bn_folded": self.folded, "bn_total": self.total,
                **({"bn_fold_note": self.reason} if self.reason else {})}


class _LeafTracer(fx.Tracer):
    """Keeps every convolution (subclasses too) and BN layer as one ``call_module`` node."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, CONV_TYPES + BN_TYPES) or super().is_leaf_module(m, module_qualified_name)


def conv_bn_pairs(net: nn.Module) -> list[tuple[str, str]]:
    """``(conv name, bn name)`` of every BN whose fold into the convolution before it is exact.

    Raises whatever ``torch.fx`` raises when the network's forward cannot be traced.
    """
    graph = _LeafTracer().trace(net)
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    # a parameter read outside its module (weight sharing, a functional use) rules that module out
    read_outside = {str(node.target).rpartition(".")[0] for node in graph.nodes if node.op == "get_attr"}
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        bn = net.get_submodule(str(node.target))
        src = node.args[0]
        if not isinstance(bn, BN_TYPES) or not isinstance(src, fx.Node) or src.op != "call_module":
            continue
        conv = net.get_submodule(str(src.target))
        if (isinstance(conv, CONV_TYPES) and len(src.users) == 1 and calls[src.target] == 1
                and calls[node.target] == 1 and conv.out_channels == bn.num_features
                and bn.running_mean is not None and not {src.target, node.target} & read_outside):
            pairs.append((str(src.target), str(node.target)))
    return pairs


@torch.no_grad()
def fold_pair(conv: nn.Module, bn: nn.Module) -> None:
    """Fold eval-mode ``bn`` into ``conv`` in place (float64 arithmetic; dtype and memory format kept)."""
    var, mean = bn.running_var.double(), bn.running_mean.double()
    scale = torch.rsqrt(var + bn.eps)
    shift = -mean * scale
    if bn.affine:
        scale = scale * bn.weight.double()
        shift = shift * bn.weight.double() + bn.bias.double()
    w = conv.weight
    w.copy_(w.double() * scale.view(-1, *[1] * (w.dim() - 1)))
    bias = shift if conv.bias is None else conv.bias.double() * scale + shift
    if conv.bias is None:
        conv.bias = nn.Parameter(bias.to(w.dtype), requires_grad=w.requires_grad)
    else:
        conv.bias.copy_(bias)


def _set_submodule(net: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(net.get_submodule(parent_name) if parent_name else net, child, module)


def fold_batchnorm(net: nn.Module) -> FoldReport:
    """Fold every BN of frozen, eval-mode ``net`` that follows a convolution exactly; in place.

    Folded BN layers become ``nn.Identity`` (module names stay, so hooks on them see the same
    tensors). A network whose graph cannot be traced is left as it is (``reason`` says why).

    Raises:
        ValueError: ``net`` is in training mode or has parameters that require gradients.
    """
    if net.training or any(m.training for m in net.modules() if isinstance(m, BN_TYPES)):
        raise ValueError("fold_batchnorm needs a network in eval mode (call .eval() or ClassifierWrapper.freeze())")
    if any(p.requires_grad for p in net.parameters()):
        raise ValueError("fold_batchnorm needs a frozen network (parameters with requires_grad=False); "
                         "folding would change what a weight update trains")
    report = FoldReport(total=sum(isinstance(m, BN_TYPES) for m in net.modules()))
    if report.total == 0:
        return report
    try:
        pairs = conv_bn_pairs(net)
    except Exception as exc:  # noqa: BLE001 - fx raises many types on untraceable code
        report.reason = f"graph not traceable ({type(exc).__name__}: {exc})"[:300]
        log.warning("BatchNorm folding skipped for %s: %s", type(net).__name__, report.reason)
        return report
    for conv_name, bn_name in pairs:
        fold_pair(net.get_submodule(conv_name), net.get_submodule(bn_name))
        _set_submodule(net, bn_name, nn.Identity().eval())
    report.pairs, report.folded = pairs, len(pairs)
    return report


class Foldable(Protocol):
    """What :func:`fold_for_attack` needs of a model (``ClassifierWrapper`` has it)."""

    fold_info: dict[str, Any]

    def fold_batchnorm(self) -> int: ...


class ReadsActivations(Protocol):
    """What :func:`fold_for_attack` needs of an attack (every ``UniversalAttack`` has it, from its card)."""

    @property
    def hooks_activations(self) -> bool: ...


def fold_for_attack(model: Foldable, attack: ReadsActivations, enabled: bool = True) -> dict[str, Any]:
    """Fold ``model``'s BN layers unless disabled or ``attack`` hooks activations inside the network.

    An attack whose card declares ``hooks_activations`` (FFF, GD-UAP, PD-UA: conv outputs) keeps
    the unfolded network, since folding changes what a convolution outputs. Returns (and leaves in
    ``model.fold_info``, which ``describe()`` reports) ``bn_folded`` / ``bn_total``, or ``bn_folded: 0``
    and why not.
    """
    if not enabled:
        model.fold_info = {"bn_folded": 0, "bn_fold_note": "trainer.fold_bn=false"}
    elif attack.hooks_activations:
        model.fold_info = {"bn_folded": 0,
                           "bn_fold_note": f"{type(attack).__name__} hooks activations inside the network"}
    else:
        folded = model.fold_batchnorm()
        if folded:
            log.info("folded %d of %d BatchNorm layers into the convolutions before them", folded,
                     model.fold_info["bn_total"])
    return model.fold_info
