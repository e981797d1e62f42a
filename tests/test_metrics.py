"""Metrics on hand-made prediction tensors, and the evaluator on the tiny model."""

import pytest
import torch

from dominant_patterns.analysis.metrics import (
    dominance_ratio,
    evaluate_patterns,
    fooling_rate,
    noise_floors,
    pattern_norms,
    topk_ratios,
)


def test_fooling_and_dominance_by_hand() -> None:
    clean = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    adv = torch.tensor([9, 9, 9, 9, 9, 5, 6, 1])
    assert fooling_rate(clean, adv) == pytest.approx(6 / 8)
    assert dominance_ratio(adv, 9) == pytest.approx(5 / 8)
    assert dominance_ratio(adv, 3) == 0.0


def test_topk_ratios_by_hand() -> None:
    pred = torch.tensor([9, 9, 9, 9, 2, 2, 1, 5, 5, 7])  # counts 4, 2, 2, 1, 1
    r = topk_ratios(pred)
    assert r[1] == pytest.approx(0.4)
    assert r[3] == pytest.approx(0.8)
    assert r[5] == pytest.approx(1.0)


def test_pattern_norms_by_hand() -> None:
    delta = torch.zeros(3, 2, 2)
    delta[0, 0, 0], delta[1, 1, 1] = 0.03, -0.04
    n = pattern_norms(delta)
    assert n["linf"] == pytest.approx(0.04)
    assert n["l2"] == pytest.approx(0.05)


def test_noise_floors_respect_xi() -> None:
    floors = noise_floors((3, 8, 8), 0.1, seed=3)
    assert floors["random_noise"].abs().max() <= 0.1
    assert torch.allclose(floors["random_sign"].abs(), torch.full((3, 8, 8), 0.1))


def test_evaluate_patterns_counts_and_reuses_clean(tiny_model, eval_loader) -> None:
    patterns = {"zero": torch.zeros(3, 32, 32), **noise_floors((3, 32, 32), 10 / 255)}
    res = evaluate_patterns(tiny_model, patterns, eval_loader, labels_match=True, progress=False)
    zero = res.patterns["zero"]
    assert zero["n_images"] == 96
    assert zero["fooling_rate"] == 0.0  # adding nothing changes nothing
    assert zero["clean_accuracy"] == zero["adv_accuracy"]
    assert set(res.patterns) == {"zero", "random_noise", "random_sign"}
    again = evaluate_patterns(tiny_model, {"zero": torch.zeros(3, 32, 32)}, eval_loader, clean_pred=res.clean_pred,
                              progress=False)
    assert again.patterns["zero"]["fooling_rate"] == 0.0
    with pytest.raises(ValueError, match="clean_pred holds"):
        evaluate_patterns(tiny_model, {"zero": torch.zeros(3, 32, 32)}, eval_loader, clean_pred=res.clean_pred[:5],
                          progress=False)
