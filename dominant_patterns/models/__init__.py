"""Models: the registry and classifier wrapper, the torchvision/EfficientNet-Lite zoo, timm, BatchNorm folding
and activation hooks."""
