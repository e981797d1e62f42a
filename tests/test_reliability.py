"""Runs survive kills, preemption and faults: real subprocess runs of the Hydra app with injected faults.

Faults are injected by a small wrapper script (``fault_app.py``, written per test) that patches one
function and then calls the real ``dominant_patterns.apps.fit.main``; the signals are real signals.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import FAST, app_env

from dominant_patterns.core.checkpoint import CHECKPOINT, PREVIOUS
from dominant_patterns.core.checkpoint_file import read_checkpoint
from dominant_patterns.core.pattern_files import load_pattern

# 96 images / batch 8 = 12 steps per epoch, 2 epochs = 24 steps; a checkpoint every 5 steps.
STEPS = 24
TINY = [*FAST, "dataset.num_fit=96", "dataset.num_eval=16", "trainer.batch_size=8", "trainer.epochs=2",
        "trainer.eval_batch_size=16", "checkpoint_every=5", "trainer.log_every=4"]

FAULT_APP = r'''
import os, signal, sys
kind, _, arg = os.environ.get("DP_FAULT", "").partition(":")
n = int(arg or 0)
from dominant_patterns.core import checkpoint as ck
if kind in ("kill", "term", "usr1"):
    sig = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "usr1": signal.SIGUSR1}[kind]
    step_done = ck.Checkpointer.step_done
    only = os.environ.get("DP_FAULT_JOB")  # in a multirun: the job dir name to hit
    def patched(self):
        if self.step + 1 == n and (only is None or self.directory.name == only):
            os.kill(os.getpid(), sig)   # a real signal, at a known step
        step_done(self)
    ck.Checkpointer.step_done = patched
elif kind == "kill_in_save":  # die between "current -> previous" and "temp -> current"
    replace, calls = os.replace, [0]
    def patched_replace(src, dst):
        replace(src, dst)
        if str(dst).endswith("checkpoint.prev.ckpt"):
            calls[0] += 1
            if calls[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)
    os.replace = patched_replace
elif kind == "nan":
    from dominant_patterns.attacks.dominant import DominantPattern
    loss, calls = DominantPattern.loss, [0]
    def nan_loss(self, x, delta):
        calls[0] += 1
        out = loss(self, x, delta)
        return out * float("nan") if calls[0] >= n else out
    DominantPattern.loss = nan_loss
elif kind.startswith("wandb_"):
    import wandb
    def broken(*a, **k):
        raise OSError(28, "No space left on device")
    if kind == "wandb_init":
        wandb.init = broken
    else:
        init = wandb.init
        def init_then_break(*a, **k):
            run = init(*a, **k)
            setattr(run, kind.removeprefix("wandb_"), broken)
            return run
        wandb.init = init_then_break
from dominant_patterns.apps.fit import main
main()
'''


def fault_run(tmp_path: Path, run_dir: Path, fault: str = "", *extra: str,
              timeout: float = 300) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "fault_app.py"
    script.write_text(FAULT_APP)
    env = {**app_env(tmp_path), "DP_FAULT": fault}
    return subprocess.run([sys.executable, str(script), *TINY, f"hydra.run.dir={run_dir}", *extra], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=timeout)


def delta_of(run_dir: Path) -> torch.Tensor:
    return load_pattern(run_dir / "pattern.pt")["delta"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> torch.Tensor:
    """The pattern of an uninterrupted run (checkpointing on, as in every run)."""
    tmp = tmp_path_factory.mktemp("reference")
    proc = fault_run(tmp, tmp / "run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return delta_of(tmp / "run")


def assert_same(delta: torch.Tensor, ref: torch.Tensor) -> None:
    assert delta.shape == ref.shape
    assert torch.allclose(delta, ref, rtol=0, atol=1e-6), float((delta - ref).abs().max())


def assert_clean(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_at_a_random_step_then_resume_gives_the_same_pattern(tmp_path: Path, reference: torch.Tensor,
                                                                      seed: int) -> None:
    step = random.Random(seed).randint(1, STEPS)
    run_dir = tmp_path / "run"
    killed = fault_run(tmp_path, run_dir, f"kill:{step}")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (run_dir / "metrics.json").exists()
    resumed = fault_run(tmp_path, run_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = json.loads((run_dir / "metrics.json").read_text())
    expected_resume = (step - 1) // 5 * 5 if step <= 12 else max(12, (step - 1) // 5 * 5)
    assert (record["resumed_from_step"] or 0) == expected_resume
    assert_same(delta_of(run_dir), reference)


def test_external_sigkill_at_a_random_time_then_resume(tmp_path: Path, reference: torch.Tensor) -> None:
    run_dir = tmp_path / "run"
    script = tmp_path / "fault_app.py"
    script.write_text(FAULT_APP)
    proc = subprocess.Popen([sys.executable, str(script), *TINY, f"hydra.run.dir={run_dir}"], cwd=tmp_path,
                            env=app_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (run_dir / CHECKPOINT).exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(random.Random(7).uniform(0, 0.5))
    proc.kill()
    proc.wait(timeout=60)
    resumed = fault_run(tmp_path, run_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same(delta_of(run_dir), reference)


@pytest.mark.parametrize("sig", ["term", "usr1"])
def test_stop_signal_checkpoints_and_exits_cleanly(tmp_path: Path, reference: torch.Tensor, sig: str) -> None:
    """SIGTERM/SIGUSR1: a checkpoint at the step, exit 128 + signal, no traceback; the SIGTERM run resumes."""
    run_dir = tmp_path / "run"
    stopped = fault_run(tmp_path, run_dir, f"{sig}:7")
    signum = signal.SIGTERM if sig == "term" else signal.SIGUSR1
    assert stopped.returncode == 128 + signum, stopped.stderr[-3000:]
    assert_clean(stopped)
    assert f"interrupted by {signal.Signals(signum).name} at epoch 0, step 7" in stopped.stderr
    assert f"hydra.run.dir={run_dir}" in stopped.stderr  # how to continue
    payload = read_checkpoint(run_dir / CHECKPOINT)
    assert (payload["epoch"], payload["batch"], payload["step"]) == (0, 7, 7)
    assert not (run_dir / "metrics.json").exists()
    assert not [p for p in os.listdir(run_dir) if p.endswith(".tmp")]
    if sig == "usr1":
        return
    resumed = fault_run(tmp_path, run_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same(delta_of(run_dir), reference)


def test_kill_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path: Path, reference: torch.Tensor) -> None:
    run_dir = tmp_path / "run"
    killed = fault_run(tmp_path, run_dir, "kill_in_save:1")  # the checkpoint of step 10: step 5 is kept
    assert killed.returncode == -signal.SIGKILL
    assert not (run_dir / CHECKPOINT).exists() and (run_dir / PREVIOUS).exists()
    assert read_checkpoint(run_dir / PREVIOUS)["step"] == 5
    resumed = fault_run(tmp_path, run_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["resumed_from_step"] == 5
    assert_same(delta_of(run_dir), reference)


def test_truncated_checkpoint_falls_back_to_the_previous_one(tmp_path: Path, reference: torch.Tensor) -> None:
    run_dir = tmp_path / "run"
    assert fault_run(tmp_path, run_dir, "term:17").returncode == 128 + signal.SIGTERM
    current = run_dir / CHECKPOINT
    current.write_bytes(current.read_bytes()[: current.stat().st_size // 2])  # truncated
    resumed = fault_run(tmp_path, run_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = (run_dir / "run.log").read_text()
    assert "truncated or corrupted" in log and "falling back to the previous checkpoint" in log
    assert json.loads((run_dir / "metrics.json").read_text())["resumed_from_step"] == 15
    assert_same(delta_of(run_dir), reference)



def test_finished_run_is_skipped_unless_overwrite(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert fault_run(tmp_path, run_dir).returncode == 0
    before = (run_dir / "metrics.json").read_bytes()
    again = fault_run(tmp_path, run_dir)
    assert again.returncode == 0 and "skipped" in again.stdout
    assert (run_dir / "metrics.json").read_bytes() == before
    other = fault_run(tmp_path, run_dir, "", "seed=3")
    assert other.returncode == 2 and "different config (seed: 0 -> 3)" in other.stderr
    assert_clean(other)
    assert (run_dir / "metrics.json").read_bytes() == before
    redo = fault_run(tmp_path, run_dir, "", "seed=3", "overwrite=true")
    assert redo.returncode == 0, redo.stderr[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["seed"] == 3
    assert (run_dir / "metrics.json.replaced").read_bytes() == before


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_pattern(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = fault_run(tmp_path, run_dir, "nan:14")
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert_clean(proc)
    assert "non-finite loss" in proc.stderr and "pattern_last_good.pt" in proc.stderr
    assert not (run_dir / "metrics.json").exists()
    good = load_pattern(run_dir / "pattern_last_good.pt")["delta"]
    assert torch.isfinite(good).all() and good.abs().max() > 0
    payload = read_checkpoint(run_dir / CHECKPOINT)  # the last checkpoint (epoch end, step 12) is intact
    assert payload["step"] == 12
    assert torch.isfinite(payload["state"]["delta"]).all()
    assert all(torch.isfinite(t).all() for s in payload["state"]["optimizer"]["state"].values()
               for t in s.values() if torch.is_tensor(t))


def test_wandb_init_failure_warns_once_and_keeps_metrics(tmp_path: Path) -> None:
    """W&B init raising (here: no space left on device) in the real app; log/finish: test_reliability_units."""
    run_dir = tmp_path / "run"
    proc = fault_run(tmp_path, run_dir, "wandb_init", "logger=wandb", "logger.mode=offline")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "finished"
    log = (run_dir / "run.log").read_text()
    assert log.count("W&B") == 1 and "No space left on device" in log, log


def test_multirun_with_a_failing_job_finishes_the_others_and_reports_it(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "dominant_patterns", "-m", *TINY, "trainer.epochs=1", "xi=0.04,5,0.02",
           f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=app_env(tmp_path), capture_output=True, text=True, timeout=400)
    assert proc.returncode == 1
    assert (sweep / "0" / "metrics.json").exists() and (sweep / "2" / "metrics.json").exists()
    assert not (sweep / "1" / "metrics.json").exists()
    tail = proc.stderr[proc.stderr.index("multirun summary"):]
    assert "3 jobs: 2 finished, 0 skipped, 1 failed" in tail
    assert "FAILED job #1" in tail and "xi=5" in tail and "out of range" in tail
    # the failing job says so in one line, as a single run would, not with a traceback (issue 21, case 15)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert sum(line.startswith("error: xi=5 is out of range") for line in proc.stderr.splitlines()) == 1
    # the same sweep again: finished jobs are skipped, only the failed one runs (and fails) again
    again = subprocess.run(cmd, cwd=tmp_path, env=app_env(tmp_path), capture_output=True, text=True, timeout=400)
    assert "3 jobs: 0 finished, 2 skipped, 1 failed" in again.stderr, again.stderr[-3000:]
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert [j["status"] for j in summary["jobs"]] == ["skipped", "failed", "skipped"]



def test_interrupted_multirun_reruns_only_what_is_missing(tmp_path: Path, reference: torch.Tensor) -> None:
    sweep = tmp_path / "sweep"
    script = tmp_path / "fault_app.py"
    script.write_text(FAULT_APP)
    cmd = [sys.executable, str(script), "-m", *TINY, "seed=0,1,2", f"hydra.sweep.dir={sweep}"]
    env = {**app_env(tmp_path), "DP_FAULT": "term:7", "DP_FAULT_JOB": "1"}
    stopped = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert "2 jobs: 1 finished, 0 skipped, 0 failed, 1 interrupted" in stopped.stderr
    assert f"hydra.sweep.dir={sweep}" in stopped.stderr
    assert (sweep / "0" / "metrics.json").exists() and not (sweep / "2").exists()
    first = (sweep / "0" / "metrics.json").read_bytes()
    again = subprocess.run(cmd, cwd=tmp_path, env=app_env(tmp_path), capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "3 jobs: 2 finished, 1 skipped, 0 failed, 0 interrupted" in again.stderr
    assert (sweep / "0" / "metrics.json").read_bytes() == first
    assert json.loads((sweep / "1" / "metrics.json").read_text())["resumed_from_step"] == 7
    assert_same(delta_of(sweep / "0"), reference)
