"""Table 6 machinery on the tiny model: head training on a frozen backbone, then the swapped-in head."""

from __future__ import annotations

import torch

from dominant_patterns.analysis.downstream import backbone_features, make_head, train_head
from dominant_patterns.analysis.metrics import evaluate_patterns
from dominant_patterns.data.datasets import build_dataset
from dominant_patterns.data.loaders import make_loader


def test_head_training_on_frozen_backbone(tiny_model) -> None:  # noqa: ANN001
    fit = build_dataset({"name": "synthetic", "num_fit": 256}, split="fit", image_size=32)
    ev = build_dataset({"name": "synthetic", "num_eval": 128}, split="eval", image_size=32)
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    feats, labels = backbone_features(tiny_model, make_loader(fit, batch_size=64, shuffle=False))
    assert feats.shape == (256, 128) and labels.shape == (256,)
    torch.manual_seed(0)
    head = make_head(feats.shape[1], 10)
    history = train_head(head, feats, labels, epochs=30, lr=1e-2)
    assert history[-1] < history[0]
    downstream = tiny_model.with_head(head, [f"c{i}" for i in range(10)], "synthetic")
    # the backbone is shared and untouched; only the head changed
    assert all(torch.equal(v, tiny_model.state_dict()[k]) for k, v in before.items())
    result = evaluate_patterns(downstream, {"zero": torch.zeros(3, 32, 32)},
                               make_loader(ev, batch_size=64, shuffle=False), labels_match=True, progress=False)
    m = result.patterns["zero"]
    assert m["clean_accuracy"] > 0.3  # chance is 0.1
    assert m["fooling_rate"] == 0.0
    # CoSLoss at the backbone features is the ImageNet model's own: the backbone is shared
    original = evaluate_patterns(tiny_model, {"zero": torch.zeros(3, 32, 32)},
                                 make_loader(ev, batch_size=64, shuffle=False), progress=False).patterns["zero"]
    assert abs(m["cos_loss_features"] - original["cos_loss_features"]) < 1e-6
    assert downstream.forward_with_features(torch.rand(2, 3, 32, 32))[1].shape == (2, 128)


def test_hidden_head_shape() -> None:
    head = make_head(16, 4, hidden=8, dropout=0.1)
    assert head(torch.rand(5, 16)).shape == (5, 4)
