"""Algorithm 1 on the tiny model, and the budget/pixel-range properties of every pattern."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dominant_patterns import evaluate_pattern, find_dominant_pattern, wrap_classifier
from dominant_patterns.analysis.metrics import evaluate_patterns, noise_floors
from dominant_patterns.attacks.base import UniversalAttack
from dominant_patterns.attacks.dominant import DominantPattern
from dominant_patterns.core.errors import ConfigError, UserInputError
from dominant_patterns.core.loops import TrainerSettings
from dominant_patterns.models.classifier import TinyNet

XI = 10 / 255


def fit(model, loader, **kwargs) -> torch.Tensor:
    settings_ = TrainerSettings(epochs=kwargs.pop("epochs", 3), progress=False)
    return DominantPattern(model, kwargs.pop("xi", XI), trainer=settings_, **kwargs).fit(loader)


def test_dominance_well_above_noise_floor(tiny_model, fit_loader, eval_loader) -> None:
    delta = fit(tiny_model, fit_loader)
    res = evaluate_patterns(tiny_model, {"dominant": delta, **noise_floors(tuple(delta.shape), XI)}, eval_loader,
                            progress=False).patterns
    floor = max(res["random_noise"]["dominance_ratio"], res["random_sign"]["dominance_ratio"])
    assert res["dominant"]["dominance_ratio"] >= floor + 0.25
    assert res["dominant"]["cos_loss_logits"] < res["random_noise"]["cos_loss_logits"]


@pytest.mark.parametrize("loss", ["cos", "ed", "kld"])
@pytest.mark.parametrize("layer", ["logits", "features"])
def test_every_loss_and_layer_respects_budget(tiny_model, fit_loader, loss, layer) -> None:
    delta = fit(tiny_model, fit_loader, epochs=1, loss={"name": loss, "layer": layer}, xi=0.05)
    assert delta.shape == (3, 32, 32)
    assert delta.abs().max() <= 0.05 + 1e-7
    assert delta.abs().max() > 0  # it moved


def test_targeted_option_reaches_chosen_class(tiny_model, fit_loader) -> None:
    delta = fit(tiny_model, fit_loader, target_class=7, target_weight=5.0)
    assert int(tiny_model(delta[None]).argmax()) == 7


@settings(max_examples=25, deadline=None)
@given(xi=st.floats(1e-3, 1.0), scale=st.floats(0.0, 5.0), seed=st.integers(0, 10_000))
def test_projection_and_apply_properties(xi: float, scale: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    delta = (torch.randn(3, 8, 8, generator=g) * scale).clamp(-xi, xi)
    x = torch.rand(4, 3, 8, 8, generator=g)
    out = UniversalAttack.apply(x, delta)
    assert out.min() >= 0 and out.max() <= 1
    assert (out - x).abs().max() <= xi + 1e-6


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(xi=st.sampled_from([1 / 255, 4 / 255, 10 / 255, 0.2]), seed=st.integers(0, 100))
def test_fitted_pattern_never_exceeds_xi(tiny_model, fit_loader, xi: float, seed: int) -> None:
    attack = DominantPattern(tiny_model, xi, seed=seed, trainer=TrainerSettings(epochs=1, progress=False))
    assert attack.fit(fit_loader).abs().max() <= xi + 1e-7


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, float("nan")])
def test_bad_xi_is_refused_with_value(tiny_model, bad) -> None:
    with pytest.raises(ConfigError, match="xi="):
        DominantPattern(tiny_model, bad)


def test_bad_layer_and_target(tiny_model) -> None:
    with pytest.raises(ConfigError, match="loss.layer=conv3 is not valid. Valid choices: logits, features"):
        DominantPattern(tiny_model, XI, loss={"name": "cos", "layer": "conv3"})
    with pytest.raises(ConfigError, match="attack.target_class=10"):
        DominantPattern(tiny_model, XI, target_class=10)
    with pytest.raises(UserInputError, match="unknown loss 'l1'"):
        DominantPattern(tiny_model, XI, loss="l1")


def test_python_api_on_a_plain_module(fit_loader, eval_loader) -> None:
    model = wrap_classifier(TinyNet(), input_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, head="head")
    images = [x.float() / 255 for x, _ in fit_loader]  # any iterable of [0, 1] batches
    delta = find_dominant_pattern(model, images, epochs=2)
    res = evaluate_pattern(model, delta, eval_loader, xi=XI)
    assert set(res) == {"pattern", "random_noise", "random_sign"}
    assert res["pattern"]["dominance_ratio"] > res["random_noise"]["dominance_ratio"]


def test_same_attack_fits_twice(tiny_model, fit_loader) -> None:
    attack = DominantPattern(tiny_model, XI, trainer=TrainerSettings(epochs=1, progress=False))
    first = attack.fit(fit_loader)
    second = attack.fit(fit_loader)
    assert first.abs().max() > 0 and second.abs().max() > 0  # the second call really runs
