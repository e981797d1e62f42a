"""K patterns in one pass from the app (``attack.num_patterns=K``): each pattern is the pattern, and each
record the record, of a separate run of its seed; K-pattern jobs resume, skip when finished and log to W&B
one run per seed.

Patterns are compared to float tolerance (max abs difference <= 1e-6, xi being 0.039), on the tiny model:
each pattern's gradient is reduced over its own rows only, and on the CPU where this was written its
convolutions gave every row the same float result in a (B + 1)-row batch and in the stacked K * (B + 1)-row
one, so the joint fit was the K separate fits to the last bit; on the 2026-12-05 CI machine (another CPU,
other oneDNN kernels) they differ by ~1e-7 after 12 steps. Larger models
are not bitwise: their convolutions round differently at another batch size (EfficientNet-Lite0: one step's
gradients agree to ~5e-7 relative), and Adam's normalised step turns that rounding into +-xi differences
where a pixel's gradient is near zero; ``experiments/bench/k_patterns.py`` measures how far the patterns
and their scores drift there.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import FAST, app_env, compose_config, read_wandb_offline, run_app, wandb_summary

from dominant_patterns.core.checkpoint import CHECKPOINT
from dominant_patterns.core.checkpoint_file import read_checkpoint
from dominant_patterns.core.errors import ConfigError
from dominant_patterns.core.pattern_files import load_pattern
from dominant_patterns.reporting.table_specs import TABLES
from dominant_patterns.reporting.tables import pivot, table_frame
from dominant_patterns.runs.config_checks import check_config
from dominant_patterns.runs.identity import IDENTITY_FIELDS
from dominant_patterns.runs.records import load_records

# 48 images / batch 8 = 6 steps per epoch, 2 epochs; logs and checkpoints every 3 steps (the same windows)
TINY = [*FAST, "dataset.num_fit=48", "dataset.num_eval=16", "trainer.batch_size=8", "trainer.epochs=2",
        "trainer.eval_batch_size=16", "trainer.log_every=3", "checkpoint_every=3"]
SEEDS = (0, 1, 2)
#: joint vs separate patterns: bitwise on some CPUs, ~1e-7 apart on others (kernel rounding at another batch size)
PATTERN_ATOL = 1e-6
#: Identity beyond the cell keys that a K-pattern record shares with a separate run of its seed.
SAME = (*IDENTITY_FIELDS, "task_name", "tags", "fit_size", "eval_size", "xi_255", "precision", "clip_rule",
        "config_fingerprint", "device")

FAULT_APP = r'''
import os, signal
kind, _, arg = os.environ.get("DP_FAULT", "").partition(":")
from dominant_patterns.core import checkpoint as ck
from dominant_patterns.runs import tracking
if kind == "term":  # SIGTERM at a known step of the joint fit
    step_done = ck.Checkpointer.step_done
    def patched(self):
        if self.step + 1 == int(arg):
            os.kill(os.getpid(), signal.SIGTERM)
        step_done(self)
    ck.Checkpointer.step_done = patched
elif kind == "kill_finishing":  # SIGKILL while finishing one pattern's record (the others before it are written)
    finish = tracking.RunRecorder.finish
    def patched_finish(self, results):
        if self.out_dir.name == arg:
            os.kill(os.getpid(), signal.SIGKILL)
        return finish(self, results)
    tracking.RunRecorder.finish = patched_finish
from dominant_patterns.apps.fit import main
main()
'''


def fault_run(tmp_path: Path, run_dir: Path, fault: str = "", *extra: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "fault_app.py"
    script.write_text(FAULT_APP)
    return subprocess.run([sys.executable, str(script), *TINY, "attack.num_patterns=3", f"hydra.run.dir={run_dir}",
                           *extra], cwd=tmp_path, env={**app_env(tmp_path), "DP_FAULT": fault}, capture_output=True,
                          text=True, timeout=300)


def record(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def delta(run_dir: Path) -> torch.Tensor:
    return load_pattern(run_dir / "pattern.pt")["delta"]


def losses(run_dir: Path, key: str) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in rows if key in r}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the K = 3 job dir, the sweep dir of the three separate seed runs), same data and settings."""
    tmp = tmp_path_factory.mktemp("k_patterns")
    joint = run_app(tmp, *TINY, "attack.num_patterns=3", f"hydra.run.dir={tmp / 'joint'}")
    assert joint.returncode == 0, joint.stderr[-3000:]
    separate = run_app(tmp, "-m", *TINY, "seed=0,1,2", f"hydra.sweep.dir={tmp / 'separate'}")
    assert separate.returncode == 0, separate.stderr[-3000:]
    return tmp / "joint", tmp / "separate"


def test_pattern_k_is_the_pattern_of_seed_k_and_its_record_that_runs(runs: tuple[Path, Path]) -> None:
    joint, separate = runs
    assert not (joint / "metrics.json").exists()  # only per-seed records: the report sees three seed runs
    assert (joint / CHECKPOINT).is_file()
    for k, seed in enumerate(SEEDS):
        mine, alone = joint / f"seed_{seed}", separate / str(k)
        for name in ("pattern.pt", "pattern.png", "examples.png", "metrics.json", "summary.md", "config_resolved.yaml"):
            assert (mine / name).is_file(), name
        diff = float((delta(mine) - delta(alone)).abs().max())
        assert diff <= PATTERN_ATOL, diff
        ours, theirs = record(mine), record(alone)
        assert {key: ours.get(key) for key in SAME} == {key: theirs.get(key) for key in SAME}
        assert ours["seed"] == seed and ours["status"] == "finished"
        assert ours["metrics"] == pytest.approx(theirs["metrics"], abs=1e-6) and ours["floors"] == theirs["floors"]
        assert ours["attack_info"] == theirs["attack_info"]
        assert ours["multi_fit"] == {"num_patterns": 3, "index": k, "seeds": list(SEEDS), "job_dir": str(joint)}
        assert ours["timing"]["fit_patterns"] == 3
        # each seed's own training curve (the windows of log_every steps coincide here)
        for key in ("train/loss", "train/epoch_loss"):
            mine_curve, alone_curve = losses(mine, key), losses(alone, key)
            assert mine_curve.keys() == alone_curve.keys() and mine_curve
            assert mine_curve == pytest.approx(alone_curve, rel=1e-5)
    assert losses(joint / "seed_0", "train/loss") != losses(joint / "seed_1", "train/loss")


def test_the_report_reads_the_k_records_as_k_seeds(runs: tuple[Path, Path]) -> None:
    joint, _ = runs
    df = load_records(joint).assign(task_name="tableA1")
    spec = next(s for s in TABLES if s.name == "tableA1_seeds")
    part = table_frame(df, spec, "full")
    assert sorted(part["seed"]) == list(SEEDS)
    cell = pivot(part, spec.rows, spec.cols, spec.values).loc["synthetic", "tiny"]
    assert "±" in str(cell)


def test_interrupted_k_job_resumes_to_the_same_patterns_and_a_finished_one_is_skipped(
        tmp_path: Path, runs: tuple[Path, Path]) -> None:
    reference, _ = runs
    run_dir = tmp_path / "run"
    stopped = fault_run(tmp_path, run_dir, "term:5")
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr and f"hydra.run.dir={run_dir}" in stopped.stderr
    assert read_checkpoint(run_dir / CHECKPOINT)["step"] == 5
    assert not list(run_dir.glob("seed_*/metrics.json"))
    resumed = fault_run(tmp_path, run_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for seed in SEEDS:
        assert record(run_dir / f"seed_{seed}")["resumed_from_step"] == 5
        assert torch.equal(delta(run_dir / f"seed_{seed}"), delta(reference / f"seed_{seed}"))
    before = {seed: (run_dir / f"seed_{seed}" / "metrics.json").read_bytes() for seed in SEEDS}
    again = fault_run(tmp_path, run_dir)
    assert again.returncode == 0 and "skipped" in again.stdout, again.stderr[-3000:]
    assert {seed: (run_dir / f"seed_{seed}" / "metrics.json").read_bytes() for seed in SEEDS} == before


@pytest.mark.slow
def test_a_kill_between_records_finishes_the_rest_from_the_final_checkpoint(
        tmp_path: Path, runs: tuple[Path, Path]) -> None:
    reference, _ = runs
    run_dir = tmp_path / "run"
    killed = fault_run(tmp_path, run_dir, "kill_finishing:seed_1")
    assert killed.returncode == -signal.SIGKILL
    assert (run_dir / "seed_0" / "metrics.json").is_file() and not (run_dir / "seed_1" / "metrics.json").exists()
    first = (run_dir / "seed_0" / "metrics.json").read_bytes()
    resumed = fault_run(tmp_path, run_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (run_dir / "seed_0" / "metrics.json").read_bytes() == first  # a finished record is kept as it was
    for seed in (1, 2):
        assert record(run_dir / f"seed_{seed}")["resumed_from_step"] == 12  # no step refitted
        assert torch.equal(delta(run_dir / f"seed_{seed}"), delta(reference / f"seed_{seed}"))


@pytest.mark.slow
def test_one_wandb_run_per_seed_with_its_identity(tmp_path: Path) -> None:
    proc = run_app(tmp_path, *TINY, "attack.num_patterns=3", "seed=4", "logger=wandb", "tags=[k3]",
                   f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for seed in (4, 5, 6):
        out = tmp_path / "run" / f"seed_{seed}"
        (log_file,) = (out / "wandb").glob("offline-run-*/run-*.wandb")
        run = read_wandb_offline(log_file)["run"][0].run
        assert (run.run_group, run.job_type) == ("dominant", "dominant")
        assert {"k3", "model:tiny", "dataset:synthetic", "attack:dominant", f"seed:{seed}"} <= set(run.tags)
        config = {item.key: json.loads(item.value_json) for item in run.config.update}
        assert config["seed"] == seed
        summary = wandb_summary(log_file)
        assert summary["seed"] == seed and summary["status"] == "finished"
        assert summary["metrics/dominance_ratio"] == pytest.approx(record(out)["metrics"]["dominance_ratio"])


@pytest.mark.parametrize(("overrides", "message"), [
    (["attack.num_patterns=0"], "attack.num_patterns=0 must be an integer >= 1"),
    (["attack.num_patterns=-2"], "attack.num_patterns=-2 must be an integer >= 1"),
    (["attack=uap", "+attack.num_patterns=3"], "attack.num_patterns=3 fits K patterns in one pass; "
                                                "attack=uap has no K-pattern fit (valid: attack=dominant)"),
])
def test_bad_num_patterns_is_refused_naming_the_value(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_config(compose_config(*FAST, *overrides), "run")
    assert message in str(info.value)


def test_bad_num_patterns_from_the_command_line(tmp_path: Path) -> None:
    proc = run_app(tmp_path, *TINY, "attack=sgd_uap", "+attack.num_patterns=2")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "attack.num_patterns=2 fits K patterns in one pass; attack=sgd_uap" in proc.stderr
    assert not list((tmp_path / "outputs").rglob("metrics.json"))
