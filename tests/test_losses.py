"""Losses against hand-computed values."""

import math

import pytest
import torch

from dominant_patterns.core.errors import UserInputError
from dominant_patterns.core.losses import LOSSES, cos_loss, euclidean_loss, get_loss, kld_loss


def test_cos_loss_hand_values() -> None:
    a = torch.tensor([[1.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [1.0, 1.0]])
    expected = torch.tensor([0.0, 1.0, 2.0, 1 - 1 / math.sqrt(2)])
    assert torch.allclose(cos_loss(a, b), expected, atol=1e-6)


def test_euclidean_loss_hand_values() -> None:
    a = torch.tensor([[0.0, 0.0]])
    b = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    assert torch.allclose(euclidean_loss(a, b), torch.tensor([5.0, 0.0]))


def test_kld_loss_hand_values() -> None:
    # target softmax([0, 0]) = [.5, .5]; output softmax([log 3, 0]) = [.75, .25]
    target = torch.tensor([[0.0, 0.0]])
    output = torch.tensor([[math.log(3.0), 0.0], [1.0, 1.0]])
    expected0 = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    got = kld_loss(target, output)
    assert got[0].item() == pytest.approx(expected0, abs=1e-6)
    assert got[1].item() == pytest.approx(0.0, abs=1e-7)


def test_kld_uses_pattern_as_target_distribution() -> None:
    p, q = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[0.0, 1.0, 0.5]])
    ref = torch.nn.functional.kl_div(q.log_softmax(1), p.softmax(1), reduction="none").sum(1)
    assert torch.allclose(kld_loss(p, q), ref, atol=1e-6)


def test_registry_lists_valid_choices() -> None:
    assert LOSSES.names() == ["cos", "ed", "kld"]
    with pytest.raises(UserInputError, match="unknown loss 'l1'. Valid choices: cos, ed, kld"):
        get_loss("l1")
