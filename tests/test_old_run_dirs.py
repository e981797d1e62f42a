"""Output dirs written by older code (commit be50eaf, ``tests/fixtures/run_dirs_be50eaf``) still resume to the same
pattern and are still skipped when finished: fingerprints, checkpoint and record formats did not change."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from conftest import run_app

from dominant_patterns.core.pattern_files import load_pattern

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "run_dirs_be50eaf"
ARGS = ["model=tiny", "dataset=synthetic", "logger=none", "trainer.progress=false", "trainer.batch_size=8",
        "trainer.epochs=2", "checkpoint_every=3", "dataset.num_fit=48", "dataset.num_eval=16"]


def test_an_old_finished_dir_is_skipped(tmp_path: Path) -> None:
    run_dir = tmp_path / "finished"
    shutil.copytree(FIXTURES / "finished", run_dir)
    before = (run_dir / "metrics.json").read_bytes()
    proc = run_app(tmp_path, *ARGS, f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipped:" in proc.stdout and (run_dir / "metrics.json").read_bytes() == before


def test_an_old_interrupted_dir_resumes_to_the_old_uninterrupted_pattern(tmp_path: Path) -> None:
    run_dir = tmp_path / "interrupted"
    shutil.copytree(FIXTURES / "interrupted", run_dir)
    proc = run_app(tmp_path, *ARGS, f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((run_dir / "metrics.json").read_text())
    old = json.loads((FIXTURES / "finished" / "metrics.json").read_text())
    assert record["resumed_from_step"] == 6 and record["timing"]["fit_segments"] == 2
    assert record["config_fingerprint"] == old["config_fingerprint"]
    assert torch.equal(load_pattern(run_dir / "pattern.pt")["delta"], load_pattern(FIXTURES / "finished" /
                                                                                   "pattern.pt")["delta"])
