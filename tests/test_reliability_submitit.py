"""Preemption under the submitit launcher: the job checkpoints, requeues itself and finishes.

submitit's local executor stands in for SLURM: it sends the same preemption signal (USR2 by
default) and requeues a job whose launcher returns a ``DelayedSubmission`` from ``checkpoint()``
(hydra-submitit-launcher does), restarting the same job with the same overrides and dir.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import FAST, app_env

from dominant_patterns.core.checkpoint import CHECKPOINT
from dominant_patterns.core.pattern_files import load_pattern

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

# 400 images / batch 8 = 50 steps per epoch, 2 epochs.
ARGS = [*FAST, "dataset.num_fit=400", "dataset.num_eval=16", "trainer.batch_size=8", "trainer.epochs=2",
        "trainer.eval_batch_size=16", "checkpoint_every=5"]


def task_pids(marker: str) -> list[int]:
    """Pids of submitit job processes whose command line mentions ``marker`` (the sweep dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "submitit.core._submit" in cmd and marker in cmd:
            pids.append(int(entry.name))
    return pids


@pytest.mark.slow
def test_submitit_job_requeues_after_preemption_and_matches(tmp_path: Path) -> None:
    ref = subprocess.run([sys.executable, "-m", "dominant_patterns", *ARGS, f"hydra.run.dir={tmp_path / 'ref'}"],
                         cwd=tmp_path, env=app_env(tmp_path), capture_output=True, text=True, timeout=400)
    assert ref.returncode == 0, ref.stderr[-3000:]

    sweep = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "dominant_patterns", "-m", "hydra/launcher=submitit",
                             "hydra.launcher.timeout_min=10", *ARGS, "seed=0", f"hydra.sweep.dir={sweep}"],
                            cwd=tmp_path, env=app_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    ckpt = sweep / "0" / CHECKPOINT
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    pids = task_pids(str(sweep))
    assert pids, "no submitit job process found"
    for pid in pids:
        os.kill(pid, signal.SIGUSR2)  # submitit's preemption signal
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out[-4000:]
    job_log = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.*"))
    assert "Requeued job" in job_log, job_log[-3000:]
    assert "interrupted by SIGUSR2" in job_log, job_log[-3000:]
    assert (sweep / "0" / "metrics.json").exists()
    a = load_pattern(sweep / "0" / "pattern.pt")["delta"]
    b = load_pattern(tmp_path / "ref" / "pattern.pt")["delta"]
    assert torch.allclose(a, b, rtol=0, atol=1e-6)
