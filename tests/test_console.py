"""What a run prints: the result table ends the output (no W&B run history/summary after it), and
``logger=none`` never imports wandb."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import app_env

TINY = ["model=tiny", "dataset=synthetic", "trainer.epochs=1", "trainer.progress=false"]


def run_merged(tmp_path: Path, *args: str, python_flags: tuple[str, ...] = ()) -> list[str]:
    """The app's stdout and stderr as one stream (as a terminal shows them), one entry per line."""
    env = app_env(tmp_path)
    env.pop("WANDB_SILENT", None)  # what a user's shell has: W&B's own output settings must keep it quiet
    proc = subprocess.run([sys.executable, *python_flags, "-m", "dominant_patterns", *args], cwd=tmp_path, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return proc.stdout.splitlines()


def test_wandb_offline_run_ends_with_the_table(tmp_path: Path) -> None:
    lines = run_merged(tmp_path, *TINY, "logger=wandb")
    text = "\n".join(lines)
    header = next(i for i, line in enumerate(lines) if line.startswith("| pattern"))
    after = lines[header:]
    rows = [line for line in after if line.startswith("|")]
    assert [line for line in after if not line.startswith("|")] == [after[-1]], text
    assert re.match(r"fit [\d.]+s, evaluation [\d.]+s; outputs in /", after[-1]), text
    assert len(rows) == 5  # header, rule, pattern, two noise floors
    assert not [line for line in lines if line.startswith("wandb:")], text
    assert len(lines) <= 12, text
    # the one line that replaces W&B's banner says where the offline run is and how to upload it
    (where,) = [line for line in lines if "W&B" in line]
    assert "offline run saved" in where and "wandb sync" in where
    sync_dir = Path(where.rsplit("wandb sync ", 1)[1])
    assert sync_dir.is_dir() and sync_dir.name.startswith("offline-run-")
    assert list(sync_dir.glob("run-*.wandb"))


def test_logger_none_never_imports_wandb(tmp_path: Path) -> None:
    lines = run_merged(tmp_path, *TINY, "logger=none", python_flags=("-X", "importtime"))
    imported = [line for line in lines if line.startswith("import time:") and re.search(r"\bwandb\b", line)]
    assert not imported, imported[:5]
    assert any(line.startswith("fit ") and "outputs in" in line for line in lines)  # the run finished
