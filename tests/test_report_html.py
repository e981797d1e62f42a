"""The HTML report: comparison bars beside the tables, the embedded backbones in order, and (when Chromium
is installed) the page rendered in a real headless browser with every table and image loaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from dominant_patterns.apps.report_check import find_browser, inspect_page, main, problems, screenshot
from dominant_patterns.reporting import build_report
from dominant_patterns.reporting.figures import BARS
from dominant_patterns.reporting.table_specs import EMBEDDED_MODELS

LITES = EMBEDDED_MODELS


def write_run(root: Path, name: str, *, task: str, model: str, dataset: str = "photos", attack: str = "dominant",
              loss: str = "cos", seed: int = 0, kind: str = "run", images: bool = True, **extra: Any) -> Path:
    run = root / task / "multiruns" / name
    run.mkdir(parents=True)
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    metrics = {"fooling_rate": float(rng.uniform(0.3, 0.9)), "dominance_ratio": float(rng.uniform(0.1, 0.8)),
               "dominant_class_name": "sock", "dominant_confidence": 0.5, "top1_ratio": 0.4, "top3_ratio": 0.6,
               "top5_ratio": 0.7}
    record = {"kind": kind, "task_name": task, "tags": [], "model": model, "dataset": dataset, "eval_dataset": dataset,
              "loss": loss, "loss_layer": "logits", "attack": attack, "xi": 10 / 255, "seed": seed,
              "attack_info": {"target_class": None}, "metrics": metrics, "status": "finished",
              "finished_at": 1_000_000.0 + len(name), **extra}
    (run / "metrics.json").write_text(json.dumps(record))
    if images:
        for png in ("pattern.png", "examples.png"):
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(run / png)
    return run


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report built from synthetic records: 3 backbones, losses, attacks, seeds, a transfer matrix."""
    tmp = tmp_path_factory.mktemp("html")
    out = tmp / "outputs"
    for model in reversed(LITES):  # written in the wrong order: the report must sort them
        for loss in ("cos", "ed", "kld"):
            write_run(out, f"t1_{model}_{loss}", task="table1_embedded", model=model, loss=loss)
        write_run(out, f"t2_{model}", task="table2_embedded", model=model, dataset="synthetic")
        for seed in (1, 2):
            write_run(out, f"a1_{model}_{seed}", task="tableA1_embedded", model=model, seed=seed)
        for attack in ("uap", "tuap"):
            write_run(out, f"t3_{model}_{attack}", task="table3_embedded", model=model, attack=attack)
        for source in LITES:
            write_run(out, f"tm_{source}_{model}", task="transfer_matrix_embedded", model=model, kind="evaluate",
                      images=False, source_model=source, source_dataset="photos")
    experiments = tmp / "experiments"
    build_report(out, experiments, "embedded")
    return experiments / "embedded.html"


def test_comparison_tables_have_bars_beside_them(page: Path) -> None:
    text = page.read_text()
    for table in ("table1_loss", "table2_patterns", "table3_label_dependent", "tableA1_seeds"):
        section = text.split(f"<section id='{table}'>")[1].split("</section>")[0]
        pair = section.split("<div class='pair'>")[1].split("</div>")[0]
        assert "<table>" in pair and f"class='bars' src='{table}/embedded_figures/{BARS}'" in pair, table
        with Image.open(page.parent / table / "embedded_figures" / BARS) as im:
            assert im.width > 300 and im.height > 200
    transfer = text.split("<section id='transfer_matrix'>")[1].split("</section>")[0]
    assert "class='bars'" not in transfer  # the matrix has its heatmap instead


def test_embedded_backbones_in_order(page: Path) -> None:
    md = (page.parent / "table2_patterns" / "embedded.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| fit set"))
    assert [c.strip() for c in header.strip("|").split("|")][1:4] == LITES
    t1 = (page.parent / "table1_loss" / "embedded.md").read_text()
    rows = [line.split("|")[1].strip() for line in t1.splitlines() if "· dominance ratio" in line and "ours" in line]
    assert [r.split(":")[1].split("·")[0].strip() for r in rows] == LITES
    matrix = (page.parent / "transfer_matrix" / "embedded.md").read_text()
    header = next(line for line in matrix.splitlines() if line.startswith("| pattern"))
    assert [c.strip() for c in header.strip("|").split("|")][1:] == [f"{m} · photos" for m in LITES]
    sources = [line.split("|")[1] for line in matrix.splitlines() if line.startswith("| ours:")]
    assert [s.split(":")[1].split("·")[0].strip() for s in sources][::2] == LITES


def test_missing_browser_says_how_to_install(page: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setenv("PATH", "/nonexistent")
    assert main([str(page)]) == 2
    assert "apt-get install -y chromium" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(find_browser() is None, reason="Chromium is not installed (apt-get install -y chromium)")
def test_page_renders_in_headless_chromium(page: Path, tmp_path: Path) -> None:
    browser = find_browser()
    assert browser is not None
    seen = inspect_page(page, browser)
    assert problems(page, seen) == []
    assert len(seen["tables"]) == page.read_text().count("<table") >= 10
    assert seen["images"] and all(im["width"] > 0 and im["height"] > 0 for im in seen["images"])
    assert {Path(im["src"]).name for im in seen["images"]} >= {BARS, "patterns.png", "matrix.png"}
    shot = screenshot(page, tmp_path / "shot.png", browser, seen["height"])
    with Image.open(shot) as im:
        assert im.width == 1400 and im.height >= 600
        assert len(set(im.convert("L").resize((64, 64)).getdata())) > 8  # not a blank page
    # a broken image is caught
    broken = page.with_name("broken.html")
    broken.write_text(page.read_text().replace("patterns.png", "missing.png"))
    assert any("did not load" in p or "failed to load" in p for p in problems(broken, inspect_page(broken, browser)))
