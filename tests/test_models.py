"""Model registry, wrapper normalization/features and safe checkpoint loading."""

import pytest
import torch

from dominant_patterns.core.errors import ConfigError, UserInputError
from dominant_patterns.models.classifier import MODELS, TinyNet, build_model, load_state_dict_file, model_names


def test_registry_has_paper_and_embedded_models() -> None:
    for name in ("alexnet", "googlenet", "vgg16", "vgg19", "resnet50", "resnet152", "densenet121",
                 "efficientnet_lite0", "tiny"):
        assert name in MODELS
    assert "torchvision" in model_names()


def test_unknown_model_lists_choices() -> None:
    with pytest.raises(UserInputError, match=r"unknown model 'vgg99'. Valid choices: .*vgg19"):
        build_model("vgg99")


def test_wrapper_normalizes_inside_and_is_frozen(tiny_model) -> None:
    x = torch.rand(2, 3, 32, 32)
    expected = tiny_model.net((x - 0.5) / 0.25)
    assert torch.allclose(tiny_model(x), expected)
    assert not any(p.requires_grad for p in tiny_model.parameters())
    assert not tiny_model.training
    logits, feats = tiny_model.forward_with_features(x)
    assert logits.shape == (2, 10) and feats.shape == (2, 128)
    assert tiny_model.class_names[3] == "class_3"


def test_torchvision_generic_option_random_init() -> None:
    model = build_model("torchvision", arch="resnet18", weights=None)
    assert model.head == "fc" and model.num_classes == 1000
    assert model.class_names[1] == "goldfish"
    with pytest.raises(ConfigError, match="model.arch=resnet9000 is not a torchvision model"):
        build_model("torchvision", arch="resnet9000")


def test_embedded_model_predicts_a_cat() -> None:
    import skimage.data

    model = build_model("efficientnet_lite0")
    x = torch.from_numpy(skimage.data.chelsea()).permute(2, 0, 1)[None].float() / 255
    x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
    assert "cat" in model.class_names[int(model(x).argmax())]


def test_local_checkpoint_roundtrip(tmp_path) -> None:
    ref = TinyNet(init_seed=5)
    path = tmp_path / "tiny.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, path)
    model = build_model("tiny", checkpoint=str(path))
    x = torch.rand(1, 3, 32, 32)
    assert torch.allclose(model.net(x), ref(x))


def test_checkpoint_needing_pickle_is_refused(tmp_path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": TinyNet().state_dict(), "obj": TinyNet()}, path)  # a module needs unpickling
    with pytest.raises(UserInputError, match="weights_only=True"):
        load_state_dict_file(path)
    with pytest.raises(UserInputError, match="does not exist"):
        load_state_dict_file(tmp_path / "missing.pt")
