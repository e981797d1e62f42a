"""Any timm classifier: ``model=timm model.arch=NAME`` (``NAME`` or ``NAME.TAG``, e.g. ``vit_tiny_patch16_224``).

What travels with it comes from the model itself:

* input size, mean/std and interpolation: its pretrained config (``timm.data.resolve_data_config``);
* the head: the module ``get_classifier()`` returns, so the wrapper's pre-hook on it sees the pooled
  (and, for ConvNeXt, normed) feature that ``forward_head`` feeds it;
* the Fig. 3 units (hooks group ``relu``): ``feature_info`` (CNN stages, ViT blocks ``blocks.N``);
  group ``conv``: every ``nn.Conv2d``.

Weights: ``model.weights=DEFAULT`` loads timm's default pretrained tag (``NAME.TAG`` picks one; a tag in
``weights`` too), which needs the Hugging Face hub or its local cache; offline, ``model.checkpoint=PATH``
loads a state dict. ViT-style models are built for ``model.input_size`` (timm resamples the position
embedding of pretrained weights).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from torch import nn

from dominant_patterns.core.errors import ConfigError, UserInputError
from dominant_patterns.models.classifier import FAMILIES, ModelEntry, ModelInfo, imagenet_class_names


def _arch_and_tag(arch: str, weights: str | None) -> str:
    """``arch`` with the pretrained tag of ``weights`` (``DEFAULT`` keeps timm's default tag)."""
    if weights and weights.upper() != "DEFAULT" and "." not in arch:
        return f"{arch}.{weights}"
    return arch


def _builder(arch: str, default_size: int) -> Any:
    def build(weights: str | None, size: int) -> nn.Module:
        import timm

        name = arch if weights is None else _arch_and_tag(arch, weights)

        def create(**kwargs: Any) -> nn.Module:
            if size == default_size:
                return timm.create_model(name, pretrained=weights is not None, **kwargs)
            try:  # ViT-style models are built for the size (CNNs take any size and no img_size)
                return timm.create_model(name, pretrained=weights is not None, img_size=size, **kwargs)
            except TypeError:
                return timm.create_model(name, pretrained=weights is not None, **kwargs)

        if weights is None:
            return create()
        try:
            return create()
        except (OSError, RuntimeError, ValueError, ConnectionError) as exc:
            raise UserInputError(
                f"could not load pretrained weights for timm model '{name}' ({type(exc).__name__}: {exc}). "
                "Without internet, pass model.checkpoint=/path/to/state_dict.pt (weights of this architecture), "
                "or model.weights=null for random init (HF_HUB_OFFLINE=1 skips the hub's retries)."
            ) from exc

    return build


def _class_names(num_classes: int, cfg: Any) -> list[str]:
    if num_classes == 1000:
        return imagenet_class_names()
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(cfg)
        if subset:
            names = list(ImageNetInfo(subset).label_descriptions())
            if len(names) == num_classes:
                return names
    except (ImportError, AttributeError, ValueError, OSError):
        pass
    return [f"class_{i}" for i in range(num_classes)]


def _refine(net: nn.Module, info: ModelInfo) -> ModelInfo:
    """Head and layer groups read off the built network."""
    classifier = net.get_classifier() if hasattr(net, "get_classifier") else None
    head = None
    if isinstance(classifier, nn.Module) and not isinstance(classifier, nn.Identity):
        head = next((n for n, m in net.named_modules() if m is classifier and n), None)
    modules = dict(net.named_modules())
    units = tuple(str(f["module"]) for f in getattr(net, "feature_info", None) or []
                  if isinstance(f, dict) and f.get("module") in modules)
    groups: dict[str, tuple[str, ...]] = {}
    if units:
        groups["relu"] = units
    convs = tuple(n for n, m in net.named_modules() if isinstance(m, nn.Conv2d))
    if convs:
        groups["conv"] = convs
    return replace(info, head=head, layer_groups=groups)


@FAMILIES.register("timm")
def timm_entry(arch: str | None) -> ModelEntry:
    """Any timm model name (``timm.list_models()``), optionally with a pretrained tag."""
    try:
        import timm
        from timm.models import get_pretrained_cfg
    except ImportError as exc:
        raise UserInputError("model=timm needs the timm package: pip install -c constraints.txt timm") from exc
    if not arch or arch == "???" or not timm.models.is_model(arch):
        import difflib

        names = timm.list_models()
        close = difflib.get_close_matches(str(arch), names, n=8, cutoff=0.5) or names[:8]
        raise ConfigError(f"model.arch={arch} is not a timm model. Valid choices: any of the {len(names)} names of "
                          f"timm.list_models(), e.g. {', '.join(close)}")
    try:
        cfg = get_pretrained_cfg(arch)
    except RuntimeError as exc:  # an unknown pretrained tag
        raise ConfigError(f"model.arch={arch}: {exc}") from exc
    from timm.data import resolve_data_config

    data = resolve_data_config(pretrained_cfg=cfg.to_dict()) if cfg is not None else {}
    side = int(data.get("input_size", (3, 224, 224))[-1])
    num_classes = int(getattr(cfg, "num_classes", None) or 1000)
    info = ModelInfo(name=arch, input_size=side, mean=tuple(data.get("mean", (0.485, 0.456, 0.406))),
                     std=tuple(data.get("std", (0.229, 0.224, 0.225))),
                     interpolation=str(data.get("interpolation") or "bilinear"),
                     label_space="imagenet" if num_classes == 1000 else None)
    return ModelEntry(build=_builder(arch, side), info=info, class_names=lambda: _class_names(num_classes, cfg),
                      refine=_refine)
