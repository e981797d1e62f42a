"""The package works outside this repo: the wheel carries the configs, and a user's own config folder joins them
through ``hydra.searchpath`` (no network: the wheel is built and installed without dependencies, which the
test's interpreter already has)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, app_env

RUN = ["model=tiny", "dataset=synthetic", "logger=none", "trainer.epochs=1", "trainer.progress=false"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project built as a wheel and installed into a target folder (``pip install --target``)."""
    tmp = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    built = subprocess.run([*pip, "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist")],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("dominant_patterns-*.whl")
    target = tmp / "site"
    done = subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (target / "dominant_patterns" / "conf" / "config.yaml").is_file()
    assert (target / "dominant_patterns" / "conf" / "attack" / "dominant.yaml").is_file()
    return target


def outside(tmp_path: Path, target: Path) -> dict[str, str]:
    return {**app_env(tmp_path), "PYTHONPATH": str(target)}


@pytest.mark.parametrize("how", ["module", "console script"])
def test_the_installed_wheel_runs_from_another_directory(tmp_path: Path, installed: Path, how: str) -> None:
    cmd = ([sys.executable, "-m", "dominant_patterns"] if how == "module"
           else [str(installed / "bin" / "dominant-patterns")])
    proc = subprocess.run([*cmd, *RUN, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path,
                          env=outside(tmp_path, installed), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "finished" and record["model"] == "tiny"
    where = subprocess.run([sys.executable, "-c", "import dominant_patterns; print(dominant_patterns.__file__)"],
                           cwd=tmp_path, env=outside(tmp_path, installed), capture_output=True, text=True)
    assert where.stdout.strip().startswith(str(installed)), where.stdout  # the wheel's copy, not the repo's


def test_a_user_config_folder_joins_the_packaged_configs(tmp_path: Path) -> None:
    mine = tmp_path / "my_conf"
    (mine / "model").mkdir(parents=True)
    (mine / "model" / "my_tiny.yaml").write_text("# my model: the tiny CNN at another input size\nname: tiny\n"
                                                 "weights: null\ncheckpoint: null\ninput_size: 40\n")
    proc = subprocess.run([sys.executable, "-m", "dominant_patterns", f"hydra.searchpath=[file://{mine}]",
                           "model=my_tiny", *RUN[1:], "--cfg", "job", "--resolve"], cwd=tmp_path,
                          env=app_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "model:\n  name: tiny\n  weights: null\n  checkpoint: null\n  input_size: 40" in proc.stdout
    assert "name: dominant" in proc.stdout  # the packaged groups are still there
