"""Model registry and the classifier wrapper that every attack and evaluator uses.

The wrapper takes images in [0, 1] pixel space and normalizes inside, so perturbations
always live in pixel space. What travels with the model (input size, mean/std, class names, the
classifier head whose input is the "backbone feature", layer groups) is one :class:`ModelInfo`.

The registry lives here (:data:`MODELS` for named models, :data:`FAMILIES` for whole libraries);
the model families register into it from their own modules: :mod:`dominant_patterns.models.zoo`
(torchvision, EfficientNet-Lite0/1/2) and :mod:`dominant_patterns.models.timm_family` (any timm classifier),
both imported by the package's ``__init__``. The tiny test CNN stays here.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dominant_patterns.core.errors import UserInputError
from dominant_patterns.core.hashing import digest
from dominant_patterns.core.registry import Registry

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names bundled with torchvision (no download)."""
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return list(_IMAGENET_CATEGORIES)


@dataclass(frozen=True)
class ModelInfo:
    """What travels with a model: its name, input size, normalisation, classes, head and layer groups.

    Attributes:
        name: registry name of the model.
        input_size: square input side in pixels.
        mean, std: per-channel normalisation applied inside the wrapper (inputs are [0, 1] pixels).
        class_names: one name per output logit.
        head: dotted name of the classifier head module; its input is the backbone feature.
        label_space: what the logits index ("imagenet", "cifar10", ...); labels of a dataset are
            compared with predictions only when the label spaces match.
        layer_groups: explicit layer names per group of :mod:`dominant_patterns.models.hooks` (else derived).
        interpolation: the resize filter the weights were trained with (``bilinear``, ``bicubic``); recorded
            with the pattern (the embedded datasets resize bilinearly).
    """

    name: str
    input_size: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    class_names: tuple[str, ...] = ()
    head: str | None = None
    label_space: str | None = "imagenet"
    layer_groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    interpolation: str = "bilinear"

    def describe(self) -> dict[str, Any]:
        """The JSON-able summary stored with every pattern (``pattern.pt`` ``model_info``)."""
        return {"name": self.name, "input_size": self.input_size, "mean": list(self.mean), "std": list(self.std),
                "num_classes": len(self.class_names), "label_space": self.label_space,
                "interpolation": self.interpolation}


class ClassifierWrapper(nn.Module):
    """A frozen-able classifier on [0, 1] pixels with normalization inside; ``info`` says what it is."""

    def __init__(self, net: nn.Module, info: ModelInfo) -> None:
        super().__init__()
        self.net = net
        self.info = info
        self.register_buffer("mean", torch.tensor(info.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(info.std, dtype=torch.float32).view(1, 3, 1, 1))
        self._head_input: torch.Tensor | None = None
        #: what :meth:`fold_batchnorm` did (``bn_folded``, ``bn_total``); empty when it did not run
        self.fold_info: dict[str, Any] = {}
        if info.head is not None:
            self.net.get_submodule(info.head).register_forward_pre_hook(self._grab_head_input)

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def input_size(self) -> int:
        return self.info.input_size

    @property
    def class_names(self) -> list[str]:
        return list(self.info.class_names)

    @property
    def label_space(self) -> str | None:
        return self.info.label_space

    @property
    def head(self) -> str | None:
        return self.info.head

    @property
    def layer_groups(self) -> Mapping[str, tuple[str, ...]]:
        return self.info.layer_groups

    @property
    def num_classes(self) -> int:
        return len(self.info.class_names)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def _grab_head_input(self, _module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        self._head_input = args[0]

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for pixels ``x`` in [0, 1] (shape [B, 3, S, S])."""
        return self.net(self.normalize(x))

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the backbone features (the classifier head's input, flattened)."""
        if self.head is None:
            raise UserInputError(f"model '{self.name}' declares no classifier head")
        self._head_input = None
        logits = self.forward(x)
        feats = self._head_input
        self._head_input = None
        assert feats is not None, "head hook did not fire"
        return logits, feats.flatten(1)

    def freeze(self) -> ClassifierWrapper:
        """Eval mode and no parameter gradients: backward computes only input gradients."""
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self

    def with_head(self, head: nn.Module, class_names: Sequence[str], label_space: str | None) -> ClassifierWrapper:
        """A new frozen wrapper: a copy of this network (same backbone weights) with ``head`` in place of its
        classifier head, for a downstream task whose logits index ``label_space``."""
        if self.head is None:
            raise ValueError(f"model '{self.name}' declares no classifier head")
        net = copy.deepcopy(self.net)
        parent_name, _, child = self.head.rpartition(".")
        parent = net.get_submodule(parent_name) if parent_name else net
        setattr(parent, child, head.to(self.device))
        info = replace(self.info, name=f"{self.name}+{label_space or 'head'}", class_names=tuple(class_names),
                       label_space=label_space)
        return ClassifierWrapper(net, info).to(self.device).freeze()

    def fold_batchnorm(self) -> int:
        """Freeze, then fold the BN layers that follow a convolution into it, in place (exact up to float
        rounding; :mod:`dominant_patterns.models.fold`). Returns how many were folded; :meth:`describe` records it."""
        from dominant_patterns.models.fold import fold_batchnorm

        report = fold_batchnorm(self.freeze().net)
        self.fold_info = report.describe()
        return report.folded

    def describe(self) -> dict[str, Any]:
        return {**self.info.describe(), **self.fold_info}


@dataclass
class ModelEntry:
    """How to build one named model.

    Attributes:
        build: ``(weights, input_size) -> network``; ``weights`` is None for random init (or when a
            checkpoint is loaded afterwards), ``input_size`` the side the network is built for.
        info: what travels with it (named at build time).
        class_names: its class names (loaded lazily).
        refine: what can only be read off the built network (head, layer groups): ``(net, info) -> info``.
    """

    build: Callable[[str | None, int], nn.Module]
    info: ModelInfo = field(default_factory=lambda: ModelInfo(name=""))
    class_names: Callable[[], list[str]] = imagenet_class_names
    refine: Callable[[nn.Module, ModelInfo], ModelInfo] | None = None


#: The one model registry: named models (``model=vgg19``). Families register in model_zoo / timm_models.
MODELS: Registry[ModelEntry] = Registry("model")
#: Families that build any architecture of a library by name (``model=timm model.arch=NAME``): arch -> entry.
FAMILIES: Registry[Callable[[str | None], ModelEntry]] = Registry("model family")

class TinyNet(nn.Module):
    """A small random-init CNN for fast tests (32x32 inputs).

    Normalization layers without parameters keep a random init from collapsing onto one
    class, so clean predictions spread over the classes; the init is seeded (deterministic).
    """

    def __init__(self, num_classes: int = 10, width: int = 16, init_seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            self.features = nn.Sequential(
                nn.Conv2d(3, width, 3, stride=2, padding=1),
                nn.GroupNorm(1, width, affine=False),
                nn.ReLU(),
                nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
                nn.GroupNorm(1, 2 * width, affine=False),
                nn.ReLU(),
                nn.Conv2d(2 * width, 2 * width, 3, stride=1, padding=1),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(2),
                nn.Flatten(),
                nn.LayerNorm(8 * width, elementwise_affine=False),
            )
            self.head = nn.Linear(8 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


MODELS.register("tiny")(
    ModelEntry(
        build=lambda weights, size: TinyNet(),
        info=ModelInfo(name="tiny", input_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), head="head",
                       label_space="synthetic"),
        class_names=lambda: [f"class_{i}" for i in range(10)],
    )
)


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a checkpoint safely (weights_only) and return its tensor state dict."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"model.checkpoint={path} does not exist or is not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors have many types
        raise UserInputError(
            f"model.checkpoint={path} could not be loaded with torch.load(weights_only=True): "
            f"{exc}. Only plain state dicts of tensors are accepted; re-save it with "
            "torch.save(model.state_dict(), path)."
        ) from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise UserInputError(f"model.checkpoint={path} holds a {type(obj).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def build_model(
    name: str,
    *,
    weights: str | None = "DEFAULT",
    checkpoint: str | None = None,
    arch: str | None = None,
    input_size: int | None = None,
    **_: Any,
) -> ClassifierWrapper:
    """Build the named model, wrapped and frozen.

    Args:
        name: a registry name, or a family (``torchvision``, ``timm``) together with ``arch``.
        weights: the family's weight name (``DEFAULT``) or None for random init.
        checkpoint: a local state-dict file to load instead of downloadable weights.
        arch: for a family, any architecture it knows (``torchvision.models.list_models()``, ``timm.list_models()``).
        input_size: override the entry's input size (the network is built for it).
    """
    if name in FAMILIES:
        entry = FAMILIES.get(name)(arch)
        model_name = entry.info.name
    else:
        if name not in MODELS:
            raise UserInputError(f"unknown model '{name}'. Valid choices: {', '.join(model_names())}")
        entry = MODELS.get(name)
        model_name = name
    size = int(input_size or entry.info.input_size)
    net = entry.build(None if checkpoint else weights, size)
    if checkpoint:
        missing, unexpected = net.load_state_dict(load_state_dict_file(checkpoint), strict=False)
        if missing or unexpected:
            raise UserInputError(
                f"model.checkpoint={checkpoint} does not match model '{model_name}': "
                f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}"
            )
    info = replace(entry.info, name=model_name, input_size=size, class_names=tuple(entry.class_names()))
    if entry.refine is not None:
        info = entry.refine(net, info)
    return ClassifierWrapper(net, info).freeze()


def model_names() -> list[str]:
    """Every ``model.name`` choice: the registry's names and the families (any ``model.arch``)."""
    return [*MODELS.names(), *FAMILIES.names()]


@torch.no_grad()
def model_fingerprint(model: ClassifierWrapper) -> str:
    """Name, input size and per-tensor sums of parameters and buffers (one device sync)."""
    tensors = [t for _, t in sorted({**dict(model.named_parameters()), **dict(model.named_buffers())}.items())
               if t.is_floating_point()]
    sums = torch.stack([t.detach().double().sum() for t in tensors] +
                       [t.detach().double().abs().sum() for t in tensors]).cpu().numpy() if tensors else np.zeros(0)
    return digest({"name": model.name, "input_size": model.input_size, "n": len(tensors),
                    "sums": hashlib.sha256(sums.tobytes()).hexdigest()})
