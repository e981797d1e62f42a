"""``model=timm model.arch=NAME``: what travels with a timm model, its weights, and runs through the CLI
(fitting app and layers app) on tiny random-init timm models (no network)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import app_env, run_app

from dominant_patterns.core.errors import ConfigError, UserInputError
from dominant_patterns.models.classifier import build_model, model_names

timm = pytest.importorskip("timm")

FIT = ["model=timm", "model.weights=null", "dataset=synthetic", "logger=none", "trainer.epochs=1",
       "trainer.progress=false", "trainer.batch_size=16", "dataset.num_fit=32", "dataset.num_eval=16"]


@pytest.mark.parametrize(("arch", "size", "head"), [("test_resnet", 32, "fc"), ("test_vit", 32, "head"),
                                                     ("test_convnext", 32, "head.fc")])
def test_head_input_is_the_pooled_feature(arch: str, size: int, head: str) -> None:
    model = build_model("timm", arch=arch, weights=None, input_size=size)
    assert model.head == head and model.name == arch and model.input_size == size
    x = torch.rand(2, 3, size, size)
    logits, feats = model.forward_with_features(x)
    net = model.net
    pooled = net.forward_head(net.forward_features(model.normalize(x)), pre_logits=True)
    assert logits.shape == (2, 1000) and torch.allclose(feats, pooled.flatten(1), atol=1e-5)
    assert model.class_names[1] == "goldfish" and model.label_space == "imagenet"


def test_info_comes_from_the_pretrained_config() -> None:
    from timm.data import resolve_data_config

    vit = build_model("timm", arch="vit_tiny_patch16_224", weights=None, input_size=48)
    cfg = resolve_data_config(model=timm.create_model("vit_tiny_patch16_224", pretrained=False))
    assert (vit.info.mean, vit.info.std, vit.info.interpolation) == (cfg["mean"], cfg["std"], "bicubic")
    assert vit.net.patch_embed.img_size == (48, 48)  # built for the side it runs at
    assert vit.layer_groups["relu"] == tuple(f"blocks.{i}" for i in range(12))
    assert vit.describe()["interpolation"] == "bicubic"
    resnet = build_model("timm", arch="test_resnet", weights=None)
    assert resnet.input_size == 160 and resnet.info.interpolation == "bilinear"
    assert resnet.layer_groups["relu"] == ("act1", "layer1", "layer2", "layer3", "layer4")
    assert resnet.layer_groups["conv"][0] == "conv1.0" and "layer1.0.conv1" in resnet.layer_groups["conv"]
    convnext = build_model("timm", arch="convnext_atto", weights=None, input_size=32)
    assert convnext.info.mean == (0.485, 0.456, 0.406)
    assert convnext.layer_groups["relu"] == tuple(f"stages.{i}" for i in range(4))


def test_unknown_arch_is_refused_with_choices() -> None:
    assert "timm" in model_names()
    with pytest.raises(ConfigError, match=r"model.arch=resnet9000 is not a timm model. Valid choices: .*resnet"):
        build_model("timm", arch="resnet9000", weights=None)
    with pytest.raises(ConfigError, match=r"model.arch=resnet18.nope: Invalid pretrained tag"):
        build_model("timm", arch="resnet18.nope", weights=None)


def test_local_checkpoint(tmp_path: Path) -> None:
    ref = timm.create_model("test_resnet", pretrained=False)
    path = tmp_path / "w.pt"
    torch.save(ref.state_dict(), path)
    model = build_model("timm", arch="test_resnet", checkpoint=str(path))
    x = torch.rand(1, 3, 64, 64)
    assert torch.allclose(model(x), ref.eval()(model.normalize(x)), atol=1e-5)
    torch.save({"wrong.weight": torch.zeros(1)}, path)
    with pytest.raises(UserInputError, match="does not match model 'test_resnet'"):
        build_model("timm", arch="test_resnet", checkpoint=str(path))


def test_no_weights_offline_names_both_ways(tmp_path: Path) -> None:
    env = {**app_env(tmp_path), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run([sys.executable, "-m", "dominant_patterns", *FIT[:1], "model.arch=test_resnet",
                           *FIT[2:]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "could not load pretrained weights for timm model 'test_resnet'" in proc.stderr
    assert "model.checkpoint=" in proc.stderr and "model.weights=null" in proc.stderr


def _record(root: Path, task: str) -> dict:
    (path,) = (root / "outputs" / task).glob("**/metrics.json")
    return json.loads(path.read_text())


@pytest.mark.parametrize(("arch", "size"), [("test_resnet", 32),
                                            pytest.param("test_convnext", 32, marks=pytest.mark.slow)])
def test_cli_fits_a_timm_cnn(tmp_path: Path, arch: str, size: int) -> None:
    proc = run_app(tmp_path, *FIT, f"model.arch={arch}", f"model.input_size={size}", "task_name=timm_cnn")
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = _record(tmp_path, "timm_cnn")
    assert record["model"] == arch and record["status"] == "finished"
    meta = torch.load(next((tmp_path / "outputs").glob("**/pattern.pt")), weights_only=True)
    assert meta["delta"].shape == (3, size, size)
    assert meta["model_info"]["interpolation"] == ("bilinear" if arch == "test_resnet" else "bicubic")


@pytest.mark.slow
def test_cli_vit_fit_then_layers(tmp_path: Path) -> None:
    # 48 px = a 3 x 3 patch grid: the smallest map SSIM's window takes
    proc = run_app(tmp_path, *FIT, "model.arch=test_vit", "model.input_size=48", "task_name=timm_vit")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _record(tmp_path, "timm_vit")["model"] == "test_vit"
    proc = run_app(tmp_path, "model=timm", "model.arch=test_vit", "model.weights=null", "model.input_size=48",
                   "dataset=synthetic", "dataset.num_eval=8", "logger=none", "trainer.progress=false",
                   "source.task=timm_vit", "source.model=test_vit", "source.dataset=synthetic", "task_name=timm_layers",
                   module="dominant_patterns.layers")
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = _record(tmp_path, "timm_layers")
    assert record["metrics"]["num_layers"] == 6  # test_vit's blocks.0 .. blocks.5
    layers = json.loads(next((tmp_path / "outputs" / "timm_layers").glob("**/layers.json")).read_text())["layers"]
    assert [r["name"] for r in layers] == [f"blocks.{i}" for i in range(6)]
    assert all(0 <= r["ssim_pattern_mean"] <= 1 and 0 <= r["ssim_image_mean"] <= 1 for r in layers)
