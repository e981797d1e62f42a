"""Every experiment config composes and runs with tiny overrides; one multirun goes through submitit_local.

Fast (default suite): every config composes with its entry point's primary config; Table 1 runs as a
real multirun through the submitit launcher, then the evaluate / layers / transfer entry points run on
its pattern and the report rebuilds the tables. Slow: every experiment file runs end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import CONF, read_wandb_offline, run_app
from hydra import compose, initialize_config_dir

from dominant_patterns.runs.app_index import APPS, experiment_app
from dominant_patterns.runs.hydra_hooks import register_resolvers

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
TINY = ["model=tiny", "dataset=synthetic", "logger=none", "trainer.epochs=1", "trainer.progress=false",
        "trainer.max_iterations=10",
        "trainer.batch_size=16"]
SOURCE = "smoke_source"


def entry_point(experiment: str) -> tuple[str, str]:
    """(module, primary config) that runs an experiment file: the one its ``app`` key names."""
    app = experiment_app(experiment)
    return APPS[app].split()[-1], "config" if app == "run" else app


def tiny_overrides(experiment: str) -> list[str]:
    module, _ = entry_point(experiment)
    if module == "dominant_patterns":
        # the tiny model has 10 classes: one target class replaces the five ImageNet ones
        target = ["attack.target_class=3"] if "targeted" in experiment else []
        return [*TINY, "dataset@eval_dataset=synthetic", *target]
    extra = [f"source.task={SOURCE}", "source.model=tiny", "source.dataset=synthetic", "source.seed=0"]
    if module == "dominant_patterns.apps.head_transfer":
        extra += ["fit_images=64", "eval_images=32", "head.epochs=2"]
    if module == "dominant_patterns.apps.figure_layers":
        extra += ["num_images=8"]
    return [*TINY, *extra]


def test_experiment_list_is_complete() -> None:
    wanted = {"table1_loss", "table2_patterns", "table3_label_dependent", "table4_proxy", "table5_topk",
              "table6_transfer", "fig3_layers", "fig4_layers", "tableA1_seeds", "fig5_examples", "transfer_matrix",
              "targeted"}
    assert wanted <= set(EXPERIMENTS)
    assert {f"{w}_embedded" for w in ("table1_loss", "table6_transfer", "fig4_layers")} <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes(experiment: str) -> None:
    _, primary = entry_point(experiment)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=primary, overrides=[f"experiment={experiment}"], return_hydra_config=True)
        tiny = compose(config_name=primary, overrides=[f"experiment={experiment}", *tiny_overrides(experiment)])
    assert cfg.task_name and cfg.tags
    assert tiny.model.name == "tiny"
    if experiment.endswith("_embedded"):
        assert cfg.model.name == "efficientnet_lite0" and cfg.task_name.endswith("_embedded")


def _metrics(root: Path, task: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in (root / "outputs" / task).glob("**/metrics.json")]


@pytest.fixture(scope="module")
def source_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny pattern under task ``smoke_source`` (what the analysis entry points look up)."""
    tmp = tmp_path_factory.mktemp("exp")
    proc = run_app(tmp, *TINY, f"task_name={SOURCE}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp


def test_table1_multirun_through_submitit_local(tmp_path: Path) -> None:
    # two of the three losses keep it short; the CLI value replaces the experiment's sweep
    proc = run_app(tmp_path, "-m", "experiment=table1_loss", *TINY, "loss=cos,kld", "hydra/launcher=submitit",
                   timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = _metrics(tmp_path, "table1")
    assert sorted(r["loss"] for r in records) == ["cos", "kld"]
    assert list((tmp_path / "outputs" / "table1" / "multiruns").glob("*/.submitit"))


@pytest.mark.parametrize("experiment", ["transfer_matrix", "fig4_layers", "table6_transfer"])
def test_analysis_entry_points(source_run: Path, experiment: str) -> None:
    module, _ = entry_point(experiment)
    overrides = tiny_overrides(experiment)
    if experiment == "transfer_matrix":  # W&B offline: experiment = group, attack = job type
        overrides = [o if o != "logger=none" else "logger=wandb" for o in overrides]
    proc = run_app(source_run, f"experiment={experiment}", *overrides, "hydra.mode=RUN", module=module)
    assert proc.returncode == 0, proc.stderr[-3000:]
    task = {"transfer_matrix": "transfer_matrix", "fig4_layers": "fig4", "table6_transfer": "table6"}[experiment]
    (record,) = _metrics(source_run, task)
    assert record["status"] == "finished" and record["source_model"] == "tiny"
    if experiment == "transfer_matrix":
        (log_file,) = (source_run / "outputs" / task).glob("**/offline-run-*/run-*.wandb")
        run = read_wandb_offline(log_file)["run"][0].run
        assert (run.run_group, run.job_type) == ("transfer_matrix", "dominant")
        assert {"transfer_matrix", "model:tiny", "attack:dominant"} <= set(run.tags)
    if experiment == "table6_transfer":
        assert 0 <= record["metrics"]["head_accuracy"] <= 1
    if experiment == "fig4_layers":
        assert record["metrics"]["num_layers"] == 3


def test_report_after_runs(source_run: Path) -> None:
    proc = run_app(source_run, "--outputs", str(source_run / "outputs"), "--experiments",
                   str(source_run / "experiments"), "--scale", "full", module="dominant_patterns.report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (source_run / "experiments" / "full.html").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_runs_tiny(source_run: Path, experiment: str) -> None:
    module, _ = entry_point(experiment)
    proc = run_app(source_run, f"experiment={experiment}", *tiny_overrides(experiment), module=module, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize(("method", "capped", "under_budget"), [("uap", 16, None), ("dm_uap", 32, 500)])
def test_budget_lifts_a_method_entrys_data_cap(method: str, capped: int, under_budget: int | None) -> None:
    """A method entry's CPU cap on the fit data holds in the embedded comparison; ``trainer.budget`` (the
    compute-matched sweep) lifts it to the published setting; an explicit override still wins."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        plain = compose(config_name="config", overrides=[f"+method={method}"])
        budgeted = compose(config_name="config", overrides=[f"+method={method}", "trainer.budget=16000"])
        pinned = compose(config_name="config", overrides=[f"+method={method}", "trainer.budget=16000",
                                                          "attack.max_images=8"])
    assert plain.attack.max_images == capped
    assert budgeted.attack.max_images == under_budget
    assert pinned.attack.max_images == 8
