"""Anytime curves through the app: points at the first step reaching each grid value, no effect on the fit (the
pattern is bitwise the one of a fit without a curve), and the same points after a kill and resume."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from test_reliability_iii import app

from dominant_patterns.analysis.curves import grid
from dominant_patterns.core.pattern_files import load_pattern

CURVE = ["trainer.curve_start=40", "trainer.curve_factor=2"]
#: 48 images / batch 8: 6 steps of 9 passes (8 images + the pattern row) per epoch, 2 epochs: 108 passes.
STEP = 9


def record(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("curves")
    dirs = {"plain": tmp / "plain", "curve": tmp / "curve", "budget": tmp / "budget"}
    assert app(tmp, f"hydra.run.dir={dirs['plain']}").returncode == 0
    assert app(tmp, f"hydra.run.dir={dirs['curve']}", *CURVE).returncode == 0
    assert app(tmp, f"hydra.run.dir={dirs['budget']}", "trainer.budget=40").returncode == 0
    return dirs


def test_a_budget_run_records_what_it_spent(runs: dict[str, Path]) -> None:
    """The record's pass count and throughput are the fit's, not the epochs x images the budget replaced."""
    budget = record(runs["budget"])
    assert budget["attack_info"]["passes"] == 45  # the first step at or past 40 passes: 5 steps of 9
    timing = budget["timing"]
    assert timing["fit_images_per_second"] == pytest.approx(45 / timing["fit_seconds"])


def test_points_at_the_grid_and_no_effect_on_the_fit(runs: dict[str, Path]) -> None:
    curve = record(runs["curve"])["curve"]
    expected = [-(-g // STEP) * STEP for g in grid(40, 2, 108)]  # the first step that reaches each grid value
    assert [p["passes"] for p in curve] == expected == [45, 81]
    assert all(0 <= p["dominance_ratio"] <= 1 and p["dominant_class_name"].startswith("class_") for p in curve)
    assert torch.equal(load_pattern(runs["curve"] / "pattern.pt")["delta"],
                       load_pattern(runs["plain"] / "pattern.pt")["delta"])
    assert record(runs["curve"])["config_fingerprint"] == record(runs["plain"])["config_fingerprint"]
    logged = [json.loads(line) for line in (runs["curve"] / "metrics.jsonl").read_text().splitlines()]
    assert [r["curve/passes"] for r in logged if "curve/passes" in r] == expected
    assert record(runs["curve"])["timing"]["curve_seconds"] > 0


def test_a_killed_fit_resumes_its_curve(tmp_path: Path, runs: dict[str, Path]) -> None:
    run_dir = tmp_path / "run"
    killed = app(tmp_path, f"hydra.run.dir={run_dir}", *CURVE, fault="kill:8")  # after the 45-pass point
    assert killed.returncode == -signal.SIGKILL
    resumed = app(tmp_path, f"hydra.run.dir={run_dir}", *CURVE)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert record(run_dir)["curve"] == record(runs["curve"])["curve"]
    assert torch.equal(load_pattern(run_dir / "pattern.pt")["delta"],
                       load_pattern(runs["curve"] / "pattern.pt")["delta"])
