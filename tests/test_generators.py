"""GAP, NAG, AAA and SGA beyond the shared baseline tests: budgets, samples, artifacts, impressions, the app."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from conftest import CONF, FAST, run_app

from dominant_patterns.attacks import AAA, GAP, NAG, SGA
from dominant_patterns.attacks.generators import NAGGenerator, ResnetGenerator
from dominant_patterns.attacks.impressions import impression_classes
from dominant_patterns.attacks.validation import predict
from dominant_patterns.core.errors import ConfigError
from dominant_patterns.core.loops import TrainerSettings
from dominant_patterns.data.datasets import build_dataset
from dominant_patterns.data.loaders import make_loader

XI = 10 / 255
SETTINGS = dict(trainer=TrainerSettings(progress=False, channels_last=False), seed=0)
NAG_FAST = {"max_iterations": 12, "val_every": 6, "val_images": 32, "ngf": 4, "val_samples": 8, "eval_samples": 4,
            "lr": 5e-3, "batch_size": 16}
AAA_FAST = {**NAG_FAST, "num_classes": 10, "per_class": 2, "ci_steps": 20, "ci_batch": 20}


def eval_images(n: int = 96) -> torch.Tensor:
    ds = build_dataset({"name": "synthetic", "num_eval": n}, split="eval", image_size=32)
    return torch.stack([ds[i][0] for i in range(len(ds))]).float() / 255


def test_generator_shapes() -> None:
    assert ResnetGenerator(4, 1)(torch.rand(2, 3, 30, 30)).shape == (2, 3, 30, 30)  # side not a multiple of 4
    for size in (32, 224, 299):
        net = NAGGenerator(size, XI, ngf=4)
        out = net(net.draw(2, torch.Generator().manual_seed(0), torch.device("cpu")))
        assert out.shape == (2, 3, size, size) and float(out.detach().abs().max()) <= XI
    assert NAGGenerator(32, XI, ngf=4, scale_noise=False).noise_shapes(2) == []


def test_gap_pattern_uses_the_whole_budget_in_every_channel(tiny_model, fit_loader) -> None:
    attack = GAP(tiny_model, XI, max_iterations=4, val_every=2, val_images=16, ngf=4, n_blocks=1, **SETTINGS)
    delta = attack.fit(fit_loader)
    assert torch.allclose(delta.abs().amax(dim=(1, 2)), torch.full((3,), XI))
    raw = torch.rand(1, 3, 32, 32) * 2 - 1
    assert torch.allclose(attack.scale(raw).abs().amax(dim=(2, 3)), torch.full((1, 3), XI))
    info = attack.describe()
    assert (info["steps_run"], info["run_iterations"], info["iterations"]) == (4, 4, 500)
    assert info["val_images"] == 16


def test_gap_targeted_raises_the_target_share(tiny_model, fit_loader) -> None:
    attack = GAP(tiny_model, XI, max_iterations=20, val_every=10, val_images=32, ngf=4, n_blocks=1, lr=2e-3,
                 target_class=3, **SETTINGS)
    delta = attack.fit(fit_loader)
    x = eval_images()
    clean = predict(tiny_model, x, channels_last=False)
    adv = predict(tiny_model, (x + delta).clamp(0, 1), channels_last=False)
    assert (adv == 3).float().mean() > (clean == 3).float().mean() + 0.1
    with pytest.raises(ConfigError, match="target_class"):
        GAP(tiny_model, XI, target_class=10)


def test_nag_samples_and_generator_file(tmp_path: Path, tiny_model, fit_loader) -> None:
    attack = NAG(tiny_model, XI, **NAG_FAST, **SETTINGS)
    assert attack.sample_patterns() is None
    delta = attack.fit(fit_loader)
    samples = attack.sample_patterns()
    assert samples is not None and samples.shape == (4, 3, 32, 32)
    assert torch.equal(samples[0], delta)  # pattern.pt is the first sample
    assert float(samples.abs().max()) <= XI + 1e-7
    assert float((samples[0] - samples[1]).abs().mean()) > 1e-4  # a distribution, not one pattern
    assert attack.save_artifacts(tmp_path) == ["generator.pt"]
    payload = torch.load(tmp_path / "generator.pt", weights_only=True)
    net = NAGGenerator(**payload["architecture"])
    net.load_state_dict(payload["state_dict"])
    assert payload["attack_info"]["eval_samples"] == 4 and payload["class"] == "NAGGenerator"


def test_nag_holds_validation_images_out_of_training(tiny_model, fit_loader) -> None:
    """With 128 fit images and 32 held out, each pass trains on 96: 12 steps of 16 = 2 passes."""
    attack = NAG(tiny_model, XI, **NAG_FAST, **SETTINGS)
    seen: list[torch.Tensor] = []
    update = attack.update
    attack.update = lambda x: (seen.append(x), update(x))[1]  # type: ignore[method-assign]
    attack.fit(fit_loader)
    held = attack.selection.validator.images
    for x in seen:
        assert not (x[:, None] == held[None]).flatten(2).all(2).any()
    assert sum(x.shape[0] for x in seen) == 12 * 16


def test_validation_holds_out_at_most_half_the_fit_set(tiny_model) -> None:
    ds = build_dataset({"name": "synthetic", "num_fit": 40}, split="fit", image_size=32)
    loader = make_loader(ds, batch_size=8, shuffle=True)
    attack = GAP(tiny_model, XI, max_iterations=2, val_images=100, ngf=4, n_blocks=1, batch_size=8, **SETTINGS)
    attack.fit(loader)
    assert attack.describe()["val_images"] == 20


def test_nag_feature_layer_choice(tiny_model) -> None:
    assert NAG(tiny_model, XI).feature_layer == "features.7"  # the relu group at 0.8 of its depth
    assert NAG(tiny_model, XI, feature_layers={"tiny": "features.2"}).feature_layer == "features.2"
    assert NAG(tiny_model, XI, feature_layer="features.5").feature_layer == "features.5"
    assert not NAG(tiny_model, XI).hooks_activations  # a ReLU output: the app may fold BatchNorm
    assert NAG(tiny_model, XI, feature_layer="features.0").hooks_activations  # a conv output: keep BN unfolded
    with pytest.raises(ConfigError, match="'layer9' is not a module"):
        NAG(tiny_model, XI, feature_layer="layer9")
    with pytest.raises(ConfigError, match="feature_depth=2"):
        NAG(tiny_model, XI, feature_depth=2)


def test_aaa_impressions_are_their_classes_and_are_cached(tmp_path: Path, tiny_model, fit_loader) -> None:
    first = AAA(tiny_model, XI, **AAA_FAST, cache_dir=str(tmp_path), **SETTINGS)
    delta = first.fit(fit_loader)
    files = list((tmp_path / "class_impressions").glob("tiny-*.pt"))
    assert len(files) == 1
    images = first.synth.images.float() / 255
    assert images.shape == (20, 3, 32, 32)
    assert predict(tiny_model, images, channels_last=False).tolist() == first.classes
    info = first.describe()
    assert info["data_free"] and not info["impressions_from_cache"] and info["ci_steps_run"] > 0
    again = AAA(tiny_model, XI, **AAA_FAST, cache_dir=str(tmp_path), **SETTINGS)
    assert torch.equal(again.fit(fit_loader), delta)  # the same impressions, the same generator
    assert again.describe()["impressions_from_cache"] and again.describe()["ci_steps_run"] == 0
    other = AAA(tiny_model, XI, **{**AAA_FAST, "ci_steps": 10}, cache_dir=str(tmp_path), **SETTINGS)
    assert other.cache_file() != first.cache_file()  # every stage-1 setting is in the key


def test_aaa_bad_settings(tiny_model) -> None:
    with pytest.raises(ConfigError, match="unresolved interpolation"):
        AAA(tiny_model, XI, cache_dir="${paths.cache_dir}")
    with pytest.raises(ConfigError, match="at least 2 impressions"):
        AAA(tiny_model, XI, num_classes=1, per_class=1)
    with pytest.raises(ConfigError, match="min_confidence"):
        AAA(tiny_model, XI, min_confidence=0.9, max_confidence=0.5)
    assert impression_classes(1000, 4, 2) == [0, 0, 250, 250, 500, 500, 750, 750]
    smoke = AAA(tiny_model, XI, trainer=TrainerSettings(max_iterations=7))
    assert (smoke.ci_steps, smoke.run_iterations) == (7, 7)


def test_sga_one_inner_step_of_the_whole_batch_is_a_signed_gradient_step(tiny_model) -> None:
    ds = build_dataset({"name": "synthetic", "num_fit": 20}, split="fit", image_size=32)
    loader = make_loader(ds, batch_size=20, shuffle=False)
    attack = SGA(tiny_model, XI, max_epochs=1, batch_size=20, minibatch=20, inner_iterations=1, **SETTINGS)
    delta = attack.fit(loader)
    x = torch.stack([ds[i][0] for i in range(20)]).float() / 255
    v = torch.zeros(3, 32, 32, requires_grad=True)
    (grad,) = torch.autograd.grad(attack.loss(x, tiny_model(x).argmax(1), v), v)
    expected = 0.1 * XI * grad.sign()
    assert (delta == expected).float().mean() > 0.99
    assert (attack.updates, attack.inner_steps) == (1, 1)


def test_sga_counts_and_caps(tiny_model, fit_loader) -> None:
    attack = SGA(tiny_model, XI, max_epochs=1, batch_size=48, minibatch=8, **SETTINGS)
    attack.fit(fit_loader)  # 128 images: outer batches 48, 48, then the pass's last 32
    assert (attack.updates, attack.inner_steps, attack.images_seen) == (3, 4 * 48 // 8 * 2 + 4 * 32 // 8, 128)
    capped = SGA(tiny_model, XI, batch_size=48, minibatch=8, trainer=TrainerSettings(progress=False, max_iterations=2))
    capped.fit(fit_loader)
    assert capped.updates == 2 and capped.run_epochs == 20
    with pytest.raises(ConfigError, match="attack.max_epochs=0"):
        SGA(tiny_model, XI, max_epochs=0)


def test_app_reports_the_mean_over_nag_samples(tmp_path: Path) -> None:
    proc = run_app(tmp_path, *FAST, "attack=nag", "attack.max_iterations=4", "attack.val_every=2",
                   "attack.val_images=16", "attack.ngf=4", "attack.batch_size=8", "attack.eval_samples=3",
                   "attack.val_samples=8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = (tmp_path / "outputs").rglob("metrics.json")
    record = json.loads(path.read_text())
    stats = record["sample_stats"]
    assert stats["n"] == 3 and len(stats["values"]["fooling_rate"]) == 3
    assert record["metrics"]["fooling_rate"] == pytest.approx(sum(stats["values"]["fooling_rate"]) / 3)
    assert record["artifacts"] == ["generator.pt"] and (path.parent / "generator.pt").is_file()
    assert record["attack_info"]["name"] == "nag" and record["metrics"]["linf"] <= XI + 1e-6


@pytest.mark.slow
def test_app_caches_aaa_impressions_under_the_cache_dir(tmp_path: Path) -> None:
    args = [*FAST, "attack=aaa", "attack.num_classes=4", "attack.per_class=2", "attack.ci_steps=5",
            "attack.max_iterations=2", "attack.val_every=2", "attack.val_images=16", "attack.ngf=4",
            "attack.batch_size=8", "attack.eval_samples=2", "attack.val_samples=8"]
    proc = run_app(tmp_path, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((tmp_path / "outputs" / "cache" / "class_impressions").glob("tiny-*.pt"))) == 1
    proc = run_app(tmp_path, *args, "seed=1")  # impressions depend on the seed: a second file
    assert proc.returncode == 0, proc.stderr[-3000:]
    infos = [json.loads(p.read_text())["attack_info"] for p in (tmp_path / "outputs").rglob("metrics.json")]
    assert sorted(i["impressions_from_cache"] for i in infos) == [False, False]
    assert len(list((tmp_path / "outputs" / "cache" / "class_impressions").glob("tiny-*.pt"))) == 2


def test_compare_embedded_rows_for_generators_and_sga(tiny_model) -> None:
    spec = importlib.util.spec_from_file_location("compare", CONF.parent / "experiments/compare_embedded/run.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert {"gap", "nag", "aaa", "sga"} <= set(mod.METHODS)
    m = {"fooling_rate": 0.5, "dominance_ratio": 0.25, "top1_ratio": 0.3, "top3_ratio": 0.6, "top5_ratio": 0.8,
         "dominant_class_name": "x"}
    nag = NAG(tiny_model, XI, max_iterations=24, ngf=4).describe()
    aaa = AAA(tiny_model, XI, num_classes=4, per_class=2, ci_steps=20, max_iterations=16, ngf=4,
              cache_dir=None).describe()
    sga = SGA(tiny_model, XI, batch_size=32).describe()
    records = [{"attack_info": info, "metrics": m, "floors": {"random_noise": m, "random_sign": m},
                "timing": {"fit_seconds": 1.0},
                **({"sample_stats": {"n": 10, "std": {"fooling_rate": 0.02, "dominance_ratio": 0.01}}}
                   if info["name"] != "sga" else {})} for info in (nag, aaa, sga)]
    text = mod.table(records)
    assert "| NAG | fit crops (0 held out for val.) | 50.0 ± 2.0 | 25.0 ± 1.0 |" in text
    assert "none (class impressions; val. only)" in text and "24 it (cap 24 of 18750)" in text
    assert "8 impressions x <=20 steps (0 run), then 16 it (cap 16 of 20000)" in text
    assert "0 updates x 32 img, K=4" in text
    shares = [mod.budget_share(r["attack_info"]) for r in records]
    assert shares[0].startswith("NAG: 0 image passes with a gradient") and "18,750 iterations" in shares[0]
    assert shares[2].startswith("SGA: 0 image passes") and "20 epochs over 10k images" in shares[2]
