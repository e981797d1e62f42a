"""The fast loop's guarantees: K patterns in one pass, precision option, non-finite guard (no timing)."""

from __future__ import annotations

import pytest
import torch
from conftest import LoopHost

from dominant_patterns.attacks.dominant import DominantPattern
from dominant_patterns.core.loops import NonFiniteLossError, TrainerSettings, optimize_pattern
from dominant_patterns.data.datasets import build_dataset
from dominant_patterns.data.loaders import StackedLoader, make_loader
from dominant_patterns.models.classifier import build_model

XI = 8 / 255


def settings(**kwargs) -> TrainerSettings:  # noqa: ANN003
    return TrainerSettings(**{"epochs": 2, "batch_size": 16, "progress": False, **kwargs})


@pytest.fixture
def fit_set():  # noqa: ANN201
    return build_dataset({"name": "synthetic", "num_fit": 48}, split="fit", image_size=32)


def loaders(ds, seeds):  # noqa: ANN001, ANN201
    return [make_loader(ds, batch_size=16, shuffle=True, seed=s) for s in seeds]


def test_k1_equals_the_single_pattern(tiny_model, fit_set) -> None:
    single = DominantPattern(tiny_model, XI, trainer=settings()).fit(loaders(fit_set, [3])[0])
    (multi,) = DominantPattern(tiny_model, XI, trainer=settings()).fit_many(loaders(fit_set, [3]))
    assert torch.allclose(single, multi, atol=1e-6)


def test_k_patterns_respect_xi_and_differ(tiny_model, fit_set) -> None:
    deltas = DominantPattern(tiny_model, XI, trainer=settings()).fit_many(loaders(fit_set, [0, 1, 2]))
    assert deltas.shape == (3, 3, 32, 32) and deltas.dtype == torch.float32
    assert float(deltas.abs().max()) <= XI + 1e-7
    assert not torch.allclose(deltas[0], deltas[1])


@pytest.mark.parametrize("target_class", [None, 4])
def test_stacked_loss_gradient_is_k_single_gradients(target_class) -> None:
    # In float64 the stacked pass gives each pattern exactly its own single-pattern gradient.
    model = build_model("tiny").double()
    attack = DominantPattern(model, XI, target_class=target_class)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 5, 3, 32, 32, generator=g, dtype=torch.float64)
    delta = ((torch.rand(3, 3, 32, 32, generator=g, dtype=torch.float64) - 0.5) * 0.06).requires_grad_(True)
    attack.loss(x, delta).backward()
    for k in range(3):
        dk = delta.detach()[k].clone().requires_grad_(True)
        DominantPattern.loss(attack, x[k], dk).backward()
        assert torch.allclose(dk.grad, delta.grad[k], rtol=1e-9, atol=1e-12)


def test_stacked_loader_cuts_to_the_smallest_batch(fit_set) -> None:
    a = make_loader(fit_set, batch_size=16, shuffle=False)
    b = make_loader(fit_set, batch_size=20, shuffle=False)
    shapes = [x.shape for x, _ in StackedLoader([a, b])]
    assert len(StackedLoader([a, b])) == 3 and shapes[0] == (2, 16, 3, 32, 32) and shapes[-1][1] == 8


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_keeps_delta_fp32_and_close_to_fp32(tiny_model, fit_set, precision) -> None:
    ref = DominantPattern(tiny_model, XI, trainer=settings()).fit(loaders(fit_set, [0])[0])
    low = DominantPattern(tiny_model, XI, trainer=settings(precision=precision)).fit(loaders(fit_set, [0])[0])
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    assert float(low.abs().max()) <= XI + 1e-7
    assert torch.nn.functional.cosine_similarity(ref.flatten(), low.flatten(), dim=0) > 0.5


def test_non_finite_loss_stops_with_the_last_good_pattern() -> None:
    calls = {"n": 0}

    def loss(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        value = ((x + delta - 0.3) ** 2).mean()
        return value * float("nan") if calls["n"] == 5 else value

    batches = [(torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(i)), None) for i in range(6)]

    def run(data, **kwargs):  # noqa: ANN001, ANN003, ANN202
        host = LoopHost(settings(**kwargs), lambda d: d.clamp(-0.1, 0.1))
        return optimize_pattern(host, torch.zeros(3, 8, 8), data, loss, lr=0.01)

    with pytest.raises(NonFiniteLossError) as info:
        run(batches, epochs=1, log_every=3)
    calls["n"] = 0
    four_steps = run(batches[:4], epochs=1)
    assert torch.equal(info.value.pattern, four_steps)


def test_loss_is_logged_every_log_every_steps(tiny_model, fit_set) -> None:
    logged: list[tuple[int, dict[str, float]]] = []
    attack = DominantPattern(tiny_model, XI, trainer=settings(log_every=2),
                             on_log=lambda m, step: logged.append((step, m)))
    attack.fit(loaders(fit_set, [0])[0])
    steps = [s for s, m in logged if "train/loss" in m]
    assert steps == [2, 4, 6] and all(0 <= m["train/loss"] <= 2 for _, m in logged if "train/loss" in m)
    assert [m["train/epoch"] for _, m in logged if "train/epoch_loss" in m] == [1, 2]


@pytest.mark.slow
def test_compiled_loop_matches_eager(tiny_model, fit_set) -> None:
    eager = DominantPattern(tiny_model, XI, trainer=settings(epochs=1)).fit(loaders(fit_set, [0])[0])
    compiled = DominantPattern(tiny_model, XI, trainer=settings(epochs=1, compile=True)).fit(loaders(fit_set, [0])[0])
    assert torch.allclose(eager, compiled, atol=2e-2)
