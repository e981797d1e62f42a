"""The claims scorecard on synthetic records: each rule's verdict, the page, the figure and the readings."""

from __future__ import annotations

import json
from itertools import count
from pathlib import Path
from typing import Any

import pytest

from dominant_patterns.reporting.claim_data import FAILS, HOLDS, MIXED, MODELS, UNTESTABLE
from dominant_patterns.reporting.scorecard import build_claims

_ids = count()


def record(root: Path, task: str, *, kind: str = "run", model: str = MODELS[0], dataset: str = "photos",
           loss: str = "cos", attack: str = "dominant", seed: int = 0, xi: float = 10 / 255, floor: float = 0.01,
           **metrics: Any) -> None:
    run = root / task / str(next(_ids))
    run.mkdir(parents=True)
    values = {"fooling_rate": 0.8, "dominance_ratio": 0.5, "dominant_class_name": "sock", "top1_ratio": 0.5,
              **metrics}
    rec = {"kind": kind, "task_name": task, "tags": [], "model": model, "dataset": dataset, "loss": loss,
           "attack": attack, "seed": seed, "xi": xi, "fit_size": 640, "eval_size": 256, "epochs": 3,
           "batch_size": 32, "status": "finished", "finished_at": float(next(_ids)), "metrics": values,
           "floors": {"random_noise": {"dominance_ratio": floor}, "random_sign": {"dominance_ratio": floor}}}
    if kind != "run":
        rec.update(source_model=model, source_dataset="photos")
    (run / "metrics.json").write_text(json.dumps(rec))


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    root = tmp_path / "outputs"
    for model in MODELS:
        for seed in range(3):
            record(root, "table1_embedded", model=model, loss="cos", seed=seed, dominance_ratio=0.10 + 0.01 * seed,
                   fooling_rate=0.80 + 0.001 * seed)
            record(root, "table1_embedded", model=model, loss="ed", seed=seed, dominance_ratio=0.60 + 0.01 * seed,
                   dominant_class_name="spider web")
            record(root, "table1_embedded", model=model, loss="kld", seed=seed, dominance_ratio=0.05)
            record(root, "tableA1_embedded", model=model, dataset="synthetic", seed=seed, dominance_ratio=0.09)
            record(root, "table6_embedded", kind="transfer", model=model, seed=seed, dominance_ratio=0.95,
                   head_accuracy=0.8, floor=0.2)
            record(root, "fig4_embedded", kind="layers", model=model, seed=seed, takeover_layer=None if seed else 5,
                   num_layers=16, ssim_pattern_last=0.2, ssim_image_last=0.5)
    for seed in range(3):
        record(root, "claims_baselines_embedded", attack="cosine_uap", loss="cos", seed=seed, fooling_rate=0.9,
               dominance_ratio=0.6)
        for xi, cos in ((16, 0.3), (22, 0.7)):
            record(root, "claims_xi_embedded", loss="cos", seed=seed, xi=xi / 255, dominance_ratio=cos)
            record(root, "claims_xi_embedded", loss="ed", seed=seed, xi=xi / 255, dominance_ratio=0.6)
    record(root, "table4_embedded", dataset="synthetic", attack="fff", fooling_rate=0.5)
    record(root, "compare_embedded", loss="cos", dominance_ratio=0.99)  # another budget: not read
    return root


def test_each_rule_gives_its_verdict(outputs: Path, tmp_path: Path) -> None:
    experiments = tmp_path / "experiments"
    (experiments / "claims").mkdir(parents=True)
    (experiments / "claims" / "readings.md").write_text("# Readings\n\n## loss\nCoS trails ED here.\n")
    doc = tmp_path / "docs" / "claims.md"
    claims = {c.key: c for c in build_claims(outputs, doc, experiments, strongest=["tuap"])}
    assert claims["existence"].verdict == MIXED  # CoS 10-12% fails the 30% bar, ED 60% passes
    assert claims["loss"].verdict == FAILS  # ED beats CoS on every backbone by far more than a seed std
    assert claims["data_independence"].verdict == HOLDS  # same class (sock), 9% >= half of ~11%
    assert claims["transfer"].verdict == HOLDS  # 95% vs a 20% floor on every backbone
    assert claims["layers"].verdict == FAILS  # a takeover layer in 1 of 3 seeds only
    assert claims["seeds"].verdict == HOLDS  # fooling std 0.1 points, one class
    assert claims["baselines"].verdict == MIXED  # (a) Cosine-UAP 90% > 80%; (b) beats FFF; (c) no top-1 rival
    assert claims["xi"].verdict == MIXED  # Lite0: gap 50 -> 30 -> -10 points, but no Lite1/Lite2 xi runs
    assert claims["reversal"].verdict == "real reversal"
    page = doc.read_text()
    assert page.count("| **") == 9 and "CoS trails ED here." in page
    assert "640 fit images x 3 epochs at batch 32 (60 steps), evaluated on 256 held-out images" in page
    assert (experiments / "claims" / "xi_sweep.png").stat().st_size > 1000
    assert "Cosine-UAP" in (experiments / "claims" / "baselines_over_seeds.md").read_text()


def test_no_records_means_not_testable(tmp_path: Path) -> None:
    claims = build_claims(tmp_path / "none", tmp_path / "claims.md", tmp_path / "experiments")
    assert {c.verdict for c in claims} == {UNTESTABLE}
