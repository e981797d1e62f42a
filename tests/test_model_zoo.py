"""The embedded EfficientNet-Lite0/1/2 (PyPI wheels, offline): built for the side they run at, they see a cat."""

from __future__ import annotations

import pytest
import torch

from dominant_patterns.data.photos import load_photo
from dominant_patterns.models.classifier import MODELS, build_model


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_lite_models_predict_a_cat_at_their_side(name: str) -> None:
    model = build_model(name)
    assert name in MODELS and model.input_size == 224 and model.head == "_fc"
    assert model.info.mean == (0.5, 0.5, 0.5) and model.info.std == (0.5, 0.5, 0.5)
    x = torch.from_numpy(load_photo("chelsea")).permute(2, 0, 1)[None].float() / 255
    x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
    assert int(model(x).argmax()) in (281, 282, 285)  # tabby, tiger cat, Egyptian cat


def test_the_port_is_padded_for_the_side_it_runs_at() -> None:
    small, large = build_model("efficientnet_lite1"), build_model("efficientnet_lite1", input_size=240)
    assert small.net._global_params.image_size == 224 and large.net._global_params.image_size == 240
    assert large(torch.rand(1, 3, 240, 240)).shape == (1, 1000)
    # the same weights: only the static padding differs
    assert torch.equal(small.net._fc.weight, large.net._fc.weight)
