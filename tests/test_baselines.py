"""Every attack in ``attacks.__all__`` on the tiny model: seconds, within xi, above the noise floor."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import CONF, compose_config, run_app

import dominant_patterns.attacks as attacks
from dominant_patterns.analysis.metrics import evaluate_patterns, noise_floors
from dominant_patterns.attacks.base import UniversalAttack
from dominant_patterns.core.loops import TrainerSettings

XI = 10 / 255
ATTACKS = [getattr(attacks, n) for n in attacks.__all__
           if inspect.isclass(getattr(attacks, n)) and issubclass(getattr(attacks, n), UniversalAttack)
           and not inspect.isabstract(getattr(attacks, n))]
# Iteration caps that keep each attack to a few seconds on the tiny model (32x32, 128 images).
FAST: dict[str, dict[str, Any]] = {
    "uap": {"max_passes": 1, "max_images": 64},
    "tuap": {"max_iterations": 40, "lr": 0.01},
    "gd_uap": {"max_iterations": 60, "val_every": 20, "val_images": 64},
    "fff": {"max_iterations": 60, "val_every": 20, "val_images": 64, "halve_every": 0},
    "pd_ua": {"max_iterations": 30, "val_every": 10, "val_images": 64},
    "gap": {"max_iterations": 20, "val_every": 10, "val_images": 32, "ngf": 4, "n_blocks": 1, "lr": 2e-3},
    "nag": {"max_iterations": 20, "val_every": 10, "val_images": 32, "ngf": 4, "val_samples": 8, "eval_samples": 4,
            "lr": 5e-3, "batch_size": 16},
    "aaa": {"num_classes": 10, "per_class": 2, "ci_steps": 20, "ci_batch": 20, "max_iterations": 20, "val_every": 10,
            "val_images": 32, "ngf": 4, "val_samples": 8, "eval_samples": 4, "lr": 5e-3, "batch_size": 16,
            "cache_dir": None},
    "sga": {"max_epochs": 1, "batch_size": 64},
    "fg_uap": {"val_images": 64},
    "dm_uap": {"max_epochs": 2, "batch_size": 32, "max_images": 64, "theta_steps": 3, "x_steps": 3},
    "trm_uap": {"max_iterations": 40, "val_images": 64},
    "psp_uap": {"max_iterations": 10, "val_images": 64},
}


def config_defaults(name: str) -> dict[str, Any]:
    """The attack's config file values (its published defaults), without Hydra keys."""
    cfg = yaml.safe_load((CONF / "attack" / f"{name}.yaml").read_text())
    return {k: v for k, v in cfg.items() if not k.startswith("_") and k not in ("name", "loss")}


@pytest.mark.parametrize("cls", ATTACKS, ids=lambda c: c.name)
def test_attack_beats_noise_floor(cls: type[UniversalAttack], tiny_model, fit_loader, eval_loader) -> None:
    torch.manual_seed(0)
    params = {**config_defaults(cls.name), **FAST.get(cls.name, {})}
    if cls.name == "dominant":
        params["loss"] = "cos"
    attack = cls(tiny_model, XI, trainer=TrainerSettings(epochs=3, progress=False, channels_last=False), seed=0,
                 **params)
    delta = attack.fit(fit_loader)
    assert delta.shape == (3, 32, 32)
    assert float(delta.abs().max()) <= XI + 1e-6
    floors = noise_floors(tuple(delta.shape), XI, seed=0)
    result = evaluate_patterns(tiny_model, {"attack": delta, **floors}, eval_loader, progress=False,
                               channels_last=False).patterns
    assert result["attack"]["fooling_rate"] > result["random_noise"]["fooling_rate"], result
    info = attack.describe()
    json.dumps(info)
    if getattr(cls, "provenance", None):
        assert info["provenance"] == "from description"


@pytest.mark.parametrize("prior", ["none", "range"])
def test_gd_uap_data_free_priors(prior: str, tiny_model, fit_loader, eval_loader) -> None:
    attack = attacks.GDUAP(tiny_model, XI, prior=prior, trainer=TrainerSettings(progress=False, channels_last=False),
                           **{**FAST["gd_uap"], "lr_255": 1.0})
    delta = attack.fit(fit_loader)
    assert float(delta.abs().max()) <= XI + 1e-6
    assert attack.describe()["data_free"] is True


def test_every_baseline_has_a_config() -> None:
    for cls in ATTACKS:
        cfg = compose_config(f"attack={cls.name}").attack
        assert cfg.name == cls.name
        assert cfg._target_.endswith(cls.__name__)


def test_app_runs_a_baseline(tmp_path: Path) -> None:
    proc = run_app(tmp_path, "model=tiny", "dataset=synthetic", "logger=none", "attack=sgd_uap",
                   "trainer.epochs=2", "trainer.progress=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (metrics_file,) = (tmp_path / "outputs").rglob("metrics.json")
    record = json.loads(metrics_file.read_text())
    assert record["attack_info"]["name"] == "sgd_uap"
    assert record["metrics"]["linf"] <= XI + 1e-6
    assert "random_noise" in record["floors"]


def compare_module():  # noqa: ANN201
    import importlib.util

    spec = importlib.util.spec_from_file_location("compare", CONF.parent / "experiments/compare_embedded/run.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_compare_embedded_table(tmp_path: Path, tiny_model) -> None:
    """The comparison script's table from records whose attack_info each attack wrote itself (no run)."""
    mod = compare_module()
    m = {"fooling_rate": 0.5, "dominance_ratio": 0.25, "top1_ratio": 0.3, "top3_ratio": 0.6, "top5_ratio": 0.8,
         "dominant_class_name": "x"}
    described = [attacks.DominantPattern(tiny_model, XI),
                 attacks.GDUAP(tiny_model, XI, prior="none", max_iterations=10),
                 attacks.PDUA(tiny_model, XI, max_iterations=5)]
    for i, attack in enumerate(described):
        run_dir = tmp_path / str(i)
        run_dir.mkdir()
        (run_dir / "metrics.json").write_text(json.dumps(
            {"attack_info": attack.describe(), "metrics": m, "floors": {"random_noise": m, "random_sign": m},
             "timing": {"fit_seconds": 1.0}}))
    text = mod.table(mod.load_records(tmp_path))
    assert "| GD-UAP (none prior) | none (val. only) |" in text and "| PD-UA * |" in text
    assert "10 it (cap 10 of 40000)" in text and "0 (0% of 1,000,000)" in text
    assert text.index("GD-UAP") < text.index("PD-UA") < text.index("Ours (dominant pattern)")  # table order
    assert text.count("\n") == 6 and "Random sign floor" in text
    assert set(mod.METHODS) == {p.stem for p in (CONF / "method").glob("*.yaml")} and mod.METHODS[0] == "dominant"


@pytest.mark.parametrize("name", ["tuap", "gd_uap", "fff", "pd_ua"])
def test_trainer_cap_limits_iteration_baselines(name: str, tiny_model) -> None:
    """``trainer.max_iterations`` caps every iteration-budget attack at once (smoke runs of attack sweeps)."""
    cfg = yaml.safe_load((CONF / "attack" / f"{name}.yaml").read_text())
    cls = getattr(attacks, cfg["_target_"].rsplit(".", 1)[1])
    capped_attack = cls(tiny_model, 10 / 255, trainer=TrainerSettings(max_iterations=7))
    assert capped_attack.run_iterations == 7
    assert cls(tiny_model, 10 / 255).run_iterations == cfg["iterations"]
    with pytest.raises(Exception, match="trainer.max_iterations=0"):
        cls(tiny_model, 10 / 255, trainer=TrainerSettings(max_iterations=0))
