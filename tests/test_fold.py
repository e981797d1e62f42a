"""BatchNorm folding (dominant_patterns.models.fold): same logits and input gradients, counts, refusals, app wiring.

Tolerances: logits within 1e-5 x their largest magnitude (float32 rounding of W * s and of the bias;
BN statistics, scale and shift are randomised so the fold is not an identity).
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import FAST, run_app
from torch import nn

from dominant_patterns.attacks.dominant import DominantPattern
from dominant_patterns.attacks.fff import FFF
from dominant_patterns.models.classifier import ClassifierWrapper, ModelInfo, build_model
from dominant_patterns.models.fold import conv_bn_pairs, fold_batchnorm, fold_for_attack
from dominant_patterns.models.hooks import capture_activations, layer_names

REL_TOL = 1e-5


def randomize_bn(net: nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics and affine parameters for every BN layer."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.3)
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(n, generator=g) * 0.2)


class BNNet(nn.Module):
    """Every case: conv -> bn (no bias, bias, grouped), bn after a non-conv, conv output read twice, bn1d."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8)  # bias + depthwise
        self.b3 = nn.BatchNorm2d(8)  # after a ReLU: not foldable
        self.c4, self.b4 = nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8)  # conv output also used by the skip: not foldable
        self.c5, self.b5 = nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8, affine=False)  # no affine: foldable
        self.fc, self.b6 = nn.Linear(8, 16), nn.BatchNorm1d(16)  # linear -> bn1d: left
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.b1(self.c1(x)))
        x = self.b3(torch.relu(self.b2(self.c2(x))))
        y = self.c4(x)
        x = self.b4(y) + y
        x = self.b5(self.c5(x))
        return self.head(self.b6(self.fc(x.mean((2, 3)))))


def frozen(net: nn.Module) -> nn.Module:
    randomize_bn(net)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def assert_same_logits(before: nn.Module, after: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        ref, out = before(x), after(x)
    diff = (out - ref).abs().max().item()
    assert diff <= REL_TOL * ref.abs().max().item(), (diff, ref.abs().max().item())
    assert torch.equal(out.argmax(1), ref.argmax(1))
    return diff


def test_tiny_bn_net_folds_exactly_what_is_exact() -> None:
    net = frozen(BNNet())
    ref = copy.deepcopy(net)
    report = fold_batchnorm(net)
    assert sorted(report.pairs) == [("c1", "b1"), ("c2", "b2"), ("c5", "b5")]
    assert (report.folded, report.total, report.left) == (3, 6, 3)
    assert all(isinstance(getattr(net, n), nn.Identity) for n in ("b1", "b2", "b5"))
    assert all(isinstance(getattr(net, n), nn.BatchNorm2d) for n in ("b3", "b4"))
    assert net.c1.bias is not None and not net.c1.bias.requires_grad
    assert_same_logits(ref, net, torch.rand(4, 3, 16, 16))
    assert fold_batchnorm(net).folded == 0  # nothing left to fold: idempotent


def test_fold_keeps_input_gradients_and_memory_format() -> None:
    net = frozen(BNNet()).to(memory_format=torch.channels_last)
    ref = copy.deepcopy(net)
    fold_batchnorm(net)
    assert net.c1.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(3, 3, 16, 16)
    grads = []
    for model in (ref, net):
        xi = x.clone().requires_grad_(True)
        model(xi).square().sum().backward()
        grads.append(xi.grad)
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-5 * grads[0].abs().max().item())


def test_resnet18_random_init_all_bn_folded() -> None:
    model = build_model("torchvision", arch="resnet18", weights=None)
    randomize_bn(model.net)
    ref = copy.deepcopy(model)
    assert model.fold_batchnorm() == 20
    assert model.describe()["bn_folded"] == 20 and model.describe()["bn_total"] == 20
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert_same_logits(ref, model, torch.rand(2, 3, 64, 64))


def test_efficientnet_lite0_random_init_all_49_folded_block_outputs_unchanged() -> None:
    """MBConv blocks: expand/depthwise/project conv -> bn, stem and head; the ``relu`` group (block outputs)
    sees the same tensors, the ``conv`` group does not (why FFF/GD-UAP/PD-UA keep the unfolded network)."""
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    randomize_bn(net)
    model = ClassifierWrapper(net, ModelInfo(name="lite0", mean=(0.5,) * 3, std=(0.5,) * 3, head="_fc")).freeze()
    ref = copy.deepcopy(model)
    x = torch.rand(2, 3, 224, 224)
    blocks, convs = layer_names(model, "relu"), layer_names(model, "conv")
    with torch.no_grad(), capture_activations(ref, blocks + convs) as before:
        ref(x)
        before = dict(before)
    assert model.fold_batchnorm() == 49 and model.fold_info["bn_total"] == 49
    assert_same_logits(ref, model, x)
    with torch.no_grad(), capture_activations(model, blocks + convs) as after:
        model(x)
    for name in blocks:
        scale = before[name].abs().max().item()
        assert (after[name] - before[name]).abs().max().item() <= 1e-4 * scale, name
    assert not torch.allclose(after[convs[0]], before[convs[0]])


def test_densenet_bn_relu_conv_left_unfolded_and_counted() -> None:
    model = build_model("torchvision", arch="densenet121", weights=None)
    randomize_bn(model.net)
    ref = copy.deepcopy(model)
    report = fold_batchnorm(model.net)
    # conv0 -> norm0 and each dense layer's conv1 -> norm2 fold; norm1 (on the concat), transitions, norm5 stay
    assert (report.folded, report.total) == (59, 121)
    assert_same_logits(ref, model, torch.rand(1, 3, 64, 64))


def test_refuses_training_mode_and_trainable_parameters() -> None:
    net = BNNet()
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(net)
    net.eval()
    with pytest.raises(ValueError, match="frozen network"):
        fold_batchnorm(net)


def test_untraceable_network_is_left_as_it_is() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
                return self.bn(self.conv(x))
            return x

    net = frozen(Branchy())
    report = fold_batchnorm(net)
    assert report.folded == 0 and report.total == 1 and "not traceable" in report.reason
    assert isinstance(net.bn, nn.BatchNorm2d)
    with pytest.raises(Exception):  # noqa: B017 - fx's own error type
        conv_bn_pairs(net)


def test_fold_for_attack_skips_attacks_that_hook_activations() -> None:
    def resnet() -> ClassifierWrapper:
        return build_model("torchvision", arch="resnet18", weights=None, input_size=32)

    model = resnet()
    info = fold_for_attack(model, DominantPattern(model, 10 / 255), enabled=True)
    assert info["bn_folded"] == 20 and model.describe()["bn_folded"] == 20
    model = resnet()
    info = fold_for_attack(model, FFF(model, 10 / 255), enabled=True)
    assert info["bn_folded"] == 0 and "FFF hooks activations" in info["bn_fold_note"]
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    model = resnet()
    assert fold_for_attack(model, DominantPattern(model, 10 / 255), enabled=False)["bn_folded"] == 0
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.slow
def test_app_records_folding_in_metrics_json(tmp_path) -> None:
    """``trainer.fold_bn`` through the real app: a resnet18 run folds its 20 BN layers, =false folds none."""
    base = ["model=torchvision", "model.arch=resnet18", "model.weights=null", "model.input_size=32",
            "dataset=synthetic", "dataset.num_fit=32", "dataset.num_eval=32", "logger=none",
            "trainer.progress=false", "trainer.epochs=1", "trainer.batch_size=16"]
    results = {}
    for fold in ("true", "false"):
        proc = run_app(tmp_path, *base, f"trainer.fold_bn={fold}", f"hydra.run.dir={tmp_path}/fold_{fold}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[fold] = json.loads((tmp_path / f"fold_{fold}" / "metrics.json").read_text())
    assert results["true"]["model_info"]["bn_folded"] == 20 and results["true"]["model_info"]["bn_total"] == 20
    assert results["false"]["model_info"]["bn_folded"] == 0
    assert results["false"]["model_info"]["bn_fold_note"] == "trainer.fold_bn=false"


def test_tiny_app_run_records_zero_folded(tmp_path) -> None:
    proc = run_app(tmp_path, *FAST, "trainer.epochs=1", f"hydra.run.dir={tmp_path}/run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((tmp_path / "run" / "metrics.json").read_text())["model_info"]
    assert info["name"] == "tiny" and (info["bn_folded"], info["bn_total"]) == (0, 0)
