"""experiments/gpu_check.py: its target arithmetic, and (slow) the whole check at --quick sizes on CPU."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from conftest import ROOT, app_env

sys.path.insert(0, str(ROOT / "experiments"))
import bench_throughput as bt  # noqa: E402
import gpu_check  # noqa: E402


def test_targets_say_met_or_by_how_much() -> None:
    info = {"bf16_matmul_tflops": 800.0}
    # 20 GFLOP/img at 10,000 img/s = 200 TFLOP/s = 25% of 800; 10,000 / 2,000 = 5x naive; 400k / 10k = 40 s
    row = bt.Row(model="vgg19", batch=32, images_per_s={"naive": 2_000.0, "fp32": 5_000.0, "bf16": 10_000.0},
                 gflop_per_image=20.0)
    lines = gpu_check.target_lines([row], info, {"images": 10_000, "one_pattern_s": 4.5, "app_eval_s": 9.0})
    text = "\n".join(lines)
    assert "| VGG19 ours bf16 / naive | >= 10x | 5x | missed by 2.00x |" in text
    assert "roofline | >= 0.5 | 0.25 | missed by 2.00x |" in text
    assert "extrapolated | <= 120 s | 40 s | met |" in text
    assert "one pattern (clean predictions cached) | <= 3 s | 4.5 s | missed by 1.50x |" in text


def test_app_path_imports_no_wandb_with_logger_none() -> None:
    code = "import sys, dominant_patterns.apps.fit; print(sorted(m for m in sys.modules if m.split('.')[0] == 'wandb'))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


@pytest.mark.slow
def test_quick_gpu_check_runs_every_section_on_cpu(tmp_path) -> None:
    """``make gpu-check ARGS=--quick``: every section runs (throughput rows, eval, K patterns, 2 demo app runs)."""
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "gpu_check.py"), "--quick", "--device", "cpu",
                           "--out", str(tmp_path)], cwd=ROOT, env=app_env(tmp_path), capture_output=True, text=True,
                          timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (report,) = tmp_path.glob("quick-*.json")
    data = json.loads(report.read_text())
    assert [r["model"] for r in data["rows"]] == ["vgg19", "resnet50", "efficientnet_lite0"]
    for row in data["rows"]:
        assert all(v > 0 for v in row["images_per_s"].values()) and row["gflop_per_image"] > 0
    assert [r["bn_folded"] for r in data["rows"]] == [0, 53, 49]
    assert data["eval"]["one_pattern_s"] > 0 and data["eval"]["app_eval_s"] > 0
    kp = data["k_patterns"]
    assert kp["k"] == 2 and kp["speedup"] > 0 and math.isfinite(kp["max_abs_diff"])
    assert [(d["loss"], d["precision"]) for d in data["demo"]] == [("ed", "fp32"), ("cos", "bf16")]
    for d in data["demo"]:
        assert 0 <= d["dominance_ratio"] <= 1 and d["bn_folded"] == 49 and not d["wandb_imported"]
        assert d["modules_imported"] > 100 and math.isfinite(d["fit_seconds"])
    text = report.with_suffix(".md").read_text()
    assert "## Targets" in text and "## The demo through the app" in text and "K = 2 patterns" in text
