"""Table 6: does the ImageNet pattern still dominate after the task changes?

1. Freeze the ImageNet backbone, replace its classifier head by a new one (linear, or one hidden
   layer) and train only that head on a downstream task (CIFAR-10 in the paper, Fashion-MNIST at
   the embedded scale) from cached backbone features; report its test accuracy.
2. Attack the new network with the pattern found on the ImageNet model: dominant (downstream)
   class and confidence of f'(delta), fooling rate, dominance ratio, accuracy under attack, and
   CoSLoss between the backbone features of delta and of x + delta.

    python -m dominant_patterns.transfer experiment=table6_transfer
    python -m dominant_patterns.transfer source.task=table1 dataset=fashion_mnist fit_images=3000
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterable
from typing import Any

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from dominant_patterns.data import build_dataset, iterate_images, make_loader
from dominant_patterns.evaluate import source_identity, start_pattern_job, start_record
from dominant_patterns.metrics import evaluate_patterns, noise_floors
from dominant_patterns.models import ClassifierWrapper
from dominant_patterns.run import CONFIG_DIR, container

log = logging.getLogger("dominant_patterns.transfer")

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


def replace_head(model: ClassifierWrapper, head: nn.Module, class_names: list[str], label_space: str | None
                 ) -> ClassifierWrapper:
    """A new wrapper: a copy of ``model``'s network (same frozen backbone) with ``head`` swapped in."""
    if model.head is None:
        raise ValueError(f"model '{model.name}' declares no classifier head")
    net = copy.deepcopy(model.net)
    parent_name, _, child = model.head.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    setattr(parent, child, head.to(model.device))
    wrapper = ClassifierWrapper(net, name=f"{model.name}+{label_space or 'head'}", input_size=model.input_size,
                                mean=model.mean.flatten().tolist(), std=model.std.flatten().tolist(),
                                class_names=class_names, head=model.head, label_space=label_space,
                                layer_groups=model.layer_groups)
    return wrapper.to(model.device).freeze()


def class_names_for(label_space: str | None, num_classes: int) -> list[str]:
    names = CLASS_NAMES.get(label_space or "")
    return names if names and len(names) == num_classes else [f"class_{i}" for i in range(num_classes)]


def transfer(cfg: DictConfig) -> dict[str, Any]:
    """Fine-tune the head, score it, attack it with the source pattern; write metrics.json and head.pt."""
    settings, model, delta, meta, path, xi = start_pattern_job(cfg)
    data_cfg = container(cfg.dataset)
    fit_set = build_dataset({**data_cfg, "max_images": cfg.get("fit_images") or data_cfg.get("max_images")},
                            split="fit", image_size=model.input_size, seed=int(cfg.seed))
    eval_set = build_dataset({**data_cfg, "max_images": cfg.get("eval_images") or data_cfg.get("max_images")},
                             split="eval", image_size=model.input_size, seed=int(cfg.seed))
    identity = {**source_identity(meta, path), "model": model.name, "dataset": fit_set.name,
                "eval_dataset": eval_set.name, "fit_size": len(fit_set), "eval_size": len(eval_set)}
    out_dir, recorder = start_record(cfg, "transfer", identity)
    exit_code = 1
    try:
        start = time.perf_counter()
        batch = settings.eval_batch_size
        feats, labels = backbone_features(model, make_loader(fit_set, batch_size=batch, shuffle=False))
        feature_seconds = time.perf_counter() - start
        num_classes = int(labels.max()) + 1
        class_names = class_names_for(fit_set.label_space, num_classes)
        head_cfg = cfg.head
        torch.manual_seed(int(cfg.seed))
        head = make_head(feats.shape[1], num_classes, head_cfg.get("hidden"), float(head_cfg.get("dropout") or 0))
        history = train_head(head, feats, labels, epochs=int(head_cfg.epochs), lr=float(head_cfg.lr),
                             weight_decay=float(head_cfg.weight_decay), batch_size=int(head_cfg.batch_size),
                             seed=int(cfg.seed))
        for step, value in enumerate(history, 1):
            recorder.log({"head/loss": value}, step=step)
        torch.save(head.state_dict(), out_dir / "head.pt")
        downstream = replace_head(model, head, class_names, fit_set.label_space)
        patterns = {"pattern": delta, **noise_floors(tuple(delta.shape), xi, int(cfg.seed))}
        result = evaluate_patterns(downstream, patterns, make_loader(eval_set, batch_size=batch, shuffle=False),
                                   precision=settings.precision, channels_last=settings.channels_last,
                                   progress=settings.progress, labels_match=True)
        metrics = {**result.patterns["pattern"], "head_accuracy": result.patterns["pattern"].get("clean_accuracy"),
                   "head_train_loss": history[-1] if history else None, "num_classes": num_classes}
        results = {"metrics": metrics, "floors": {k: v for k, v in result.patterns.items() if k != "pattern"},
                   "timing": {"feature_seconds": feature_seconds, "total_seconds": time.perf_counter() - start}}
        recorder.log({"eval": metrics})
        recorder.finish(results)
        print(f"{model.name} backbone + new head on {fit_set.name}: accuracy {metrics['head_accuracy']:.1%}; "
              f"ImageNet pattern -> '{metrics['dominant_class_name']}' ({metrics['dominant_confidence']:.1%}), "
              f"fooling {metrics['fooling_rate']:.1%}, dominance {metrics['dominance_ratio']:.1%}, "
              f"CoSLoss(features) {metrics['cos_loss_features']:.3e}; outputs in {out_dir}", flush=True)
        exit_code = 0
        return results
    finally:
        recorder.close(exit_code)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="transfer")
def main(cfg: DictConfig) -> None:
    transfer(cfg)


if __name__ == "__main__":
    main()
