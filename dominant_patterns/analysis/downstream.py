"""A new task on a frozen backbone (Table 6): cached backbone features, a new classifier head trained on
them, and the class names of the downstream label spaces."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dominant_patterns.core.batches import iterate_images
from dominant_patterns.models.classifier import ClassifierWrapper

CLASS_NAMES = {
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}


@torch.no_grad()
def backbone_features(model: ClassifierWrapper, loader: Iterable[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Backbone features (the head's input) and labels of every image, on CPU."""
    model = model.freeze()
    feats, labels = [], []
    for x, y in iterate_images(loader, model.device):
        feats.append(model.forward_with_features(x)[1].float().cpu())
        labels.append(y.cpu())
    return torch.cat(feats), torch.cat(labels)


def make_head(in_features: int, num_classes: int, hidden: int | None = None, dropout: float = 0.0) -> nn.Module:
    if not hidden:
        return nn.Linear(in_features, num_classes)
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, int(hidden)), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(int(hidden), num_classes))


def train_head(head: nn.Module, feats: torch.Tensor, labels: torch.Tensor, *, epochs: int = 20, lr: float = 1e-3,
               weight_decay: float = 1e-4, batch_size: int = 256, seed: int = 0) -> list[float]:
    """Fit ``head`` on cached features with Adam and cross-entropy; returns the mean loss per epoch."""
    g = torch.Generator().manual_seed(seed)
    head.train()
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    history = []
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=g)
        total = 0.0
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(head(feats[idx]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        history.append(total / len(labels))
    head.eval()
    return history


def class_names_for(label_space: str | None, num_classes: int) -> list[str]:
    names = CLASS_NAMES.get(label_space or "")
    return names if names and len(names) == num_classes else [f"class_{i}" for i in range(num_classes)]
