"""The Hydra entry point end to end: a single run with W&B offline, a 2-job multirun, and bad input."""

import json
from pathlib import Path

import pytest
import torch
from conftest import CONF, FAST, compose_config, read_wandb_offline, run_app, wandb_summary

from dominant_patterns.core.pattern_files import load_pattern

OUTPUT_FILES = ("pattern.pt", "pattern.png", "examples.png", "metrics.json", "metrics.jsonl", "summary.md",
                "config_resolved.yaml", ".hydra/config.yaml", "split_fit.json", "split_eval.json", "run.log")


def run_dirs(tmp_path: Path) -> list[Path]:
    return sorted(p.parent for p in (tmp_path / "outputs").rglob("metrics.json"))


def test_single_run_with_wandb_offline(tmp_path) -> None:
    proc = run_app(tmp_path, "model=tiny", "dataset=synthetic", "logger=wandb", "trainer.epochs=3",
                   "trainer.progress=false", "tags=[e2e]", "seed=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| dominant " in proc.stdout and "| random_noise " in proc.stdout and "| random_sign " in proc.stdout
    (out,) = run_dirs(tmp_path)
    for name in OUTPUT_FILES:
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "finished"
    for key in ("model", "dataset", "eval_dataset", "loss", "attack", "xi", "seed", "commit"):
        assert key in metrics, key
    assert (metrics["model"], metrics["dataset"], metrics["loss"], metrics["attack"]) == ("tiny", "synthetic", "cos",
                                                                                         "dominant")
    m = metrics["metrics"]
    for key in ("clean_accuracy", "fooling_rate", "dominant_class_name", "dominant_confidence", "dominance_ratio",
                "top1_ratio", "top3_ratio", "top5_ratio", "cos_loss_logits", "cos_loss_features", "linf", "l2"):
        assert key in m, key
    assert m["linf"] <= 10 / 255 + 1e-6
    assert m["dominance_ratio"] > metrics["floors"]["random_noise"]["dominance_ratio"]
    pattern = load_pattern(out / "pattern.pt")
    assert pattern["model"] == "tiny" and pattern["seed"] == 3 and pattern["delta"].shape == (3, 32, 32)
    assert torch.allclose(pattern["delta"].abs().max(), torch.tensor(m["linf"]))
    # the offline W&B run holds the same final numbers
    (log_file,) = (out / "wandb").glob("offline-run-*/run-*.wandb")
    summary = wandb_summary(log_file)
    assert summary["metrics/dominance_ratio"] == pytest.approx(m["dominance_ratio"])
    assert summary["model"] == "tiny" and summary["status"] == "finished"
    run = read_wandb_offline(log_file)["run"][0].run
    assert (run.run_group, run.job_type) == ("dominant", "dominant")
    assert {"e2e", "model:tiny", "dataset:synthetic", "loss:cos", "seed:3"} <= set(run.tags)


def test_multirun_makes_separate_run_dirs(tmp_path) -> None:
    proc = run_app(tmp_path, "-m", *FAST, "trainer.epochs=1", "seed=0,1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    dirs = run_dirs(tmp_path)
    assert len(dirs) == 2 and dirs[0] != dirs[1]
    seeds = sorted(json.loads((d / "metrics.json").read_text())["seed"] for d in dirs)
    assert seeds == [0, 1]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=vgg99"], "Could not find 'model/vgg99'"),
        (["dataset=imagenet", "dataset.root=/no/such/imagenet"], "dataset.root=/no/such/imagenet does not exist"),
        (["xi=0"], "xi=0 is out of range"),
        (["xi=1.5"], "xi=1.5 is out of range"),
        (["trainer.batch_size=0"], "trainer.batch_size=0 must be a positive integer"),
        (["trainer.epochs=0"], "trainer.epochs=0 must be an integer >= 1"),
        (["attack.lr=-1"], "attack.lr=-1 must be > 0"),
        (["loss=huber"], "Could not find 'loss/huber'"),
    ],
)
def test_bad_input_gives_a_clear_message(tmp_path, overrides, message) -> None:
    proc = run_app(tmp_path, *FAST, *overrides)
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    assert not run_dirs(tmp_path)


def test_unknown_group_option_lists_choices() -> None:
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match="Available options"):
        compose_config("attack=nope")


def test_eval_dataset_defaults_to_held_out_split_and_can_be_chosen() -> None:
    cfg = compose_config("dataset=coco")
    assert cfg.get("eval_dataset") is None
    cfg = compose_config("dataset=coco", "dataset@eval_dataset=imagenet")
    assert cfg.eval_dataset.name == "imagenet" and cfg.dataset.name == "coco"


@pytest.mark.parametrize(("overrides", "loss"), [
    ((), "ed"),                                          # embedded default: EfficientNet-Lite0 picks EDLoss
    (("model=vgg19",), "cos"),                           # every other model: the paper's CoSLoss
    (("model=tiny",), "cos"),
    (("loss=cos",), "cos"),                              # the command line wins over the model's choice
    (("loss=kld", "model=efficientnet_lite0"), "kld"),
    (("experiment=table2_patterns_embedded",), "cos"),   # paper-table experiments pin the paper's loss
])
def test_default_loss_follows_the_model_and_yields_to_overrides(overrides, loss) -> None:
    cfg = compose_config(*overrides)
    assert cfg.loss.name == loss and cfg.hydra.runtime.choices.loss == loss


@pytest.mark.parametrize(("primary", "experiment"), [("layers", "fig3_layers_embedded"),
                                                    ("transfer", "table6_transfer_embedded"), ("evaluate", None)])
def test_analysis_entry_points_load_the_model_default_loss_unless_pinned(primary, experiment) -> None:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=primary)
        assert cfg.model.name == "efficientnet_lite0" and cfg.source.loss == "ed"   # what `make demo` fitted
        assert compose(config_name=primary, overrides=["model=vgg19"]).source.loss == "cos"
        if experiment:
            assert compose(config_name=primary, overrides=[f"experiment={experiment}"]).source.loss == "cos"
