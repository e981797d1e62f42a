"""Per-layer SSIM (Figures 3-4) on the tiny model."""

from __future__ import annotations

import math

import torch

from dominant_patterns.analysis.layer_ssim import feature_ssim, layer_ssim, summarize, takeover_layer, window_for
from dominant_patterns.models.hooks import layer_names


def test_window_shrinks_to_feature_map() -> None:
    assert window_for((1, 4, 16, 16)) == 11
    assert window_for((1, 4, 8, 8)) == 7
    assert window_for((1, 4, 4, 4)) == 3
    assert window_for((1, 4, 2, 2)) is None


def test_feature_ssim_identity_and_small_maps() -> None:
    a = torch.rand(3, 8, 16, 16)
    assert torch.allclose(feature_ssim(a, a), torch.ones(3), atol=1e-4)
    assert feature_ssim(a, torch.rand(3, 8, 16, 16)).max() < 0.5
    assert torch.isnan(feature_ssim(torch.rand(2, 8, 2, 2), torch.rand(2, 8, 2, 2))).all()


def test_layer_ssim_on_tiny_model(tiny_model, eval_loader) -> None:  # noqa: ANN001
    names = layer_names(tiny_model, "relu")
    assert len(names) == 3
    delta = (torch.rand(3, 32, 32) * 2 - 1) * (10 / 255)
    scores, maps = layer_ssim(tiny_model, delta, eval_loader, names, keep_maps_of=5)
    rows = summarize(names, scores)
    assert [r["index"] for r in rows] == [1, 2, 3]
    for name in names:
        assert scores[name]["pattern"].shape == (96,) and scores[name]["image"].shape == (96,)
        assert set(maps[name]) == {"x", "delta", "adv"}
    # a small delta barely moves the first layer away from the clean image
    assert rows[0]["ssim_image_mean"] > rows[0]["ssim_pattern_mean"]
    assert all(-1 <= r["ssim_image_mean"] <= 1 and not math.isnan(r["ssim_pattern_std"]) for r in rows)


def test_takeover_layer() -> None:
    def row(i: int, p: float, m: float) -> dict:
        return {"index": i, "ssim_pattern_mean": p, "ssim_image_mean": m}

    assert takeover_layer([row(1, 0.7, 0.5), row(2, 0.4, 0.6)]) is None  # above early, below at the end
    assert takeover_layer([row(1, 0.3, 0.5), row(2, 0.7, 0.6), row(3, 0.8, 0.5)]) == 2
