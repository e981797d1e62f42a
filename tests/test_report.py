"""The report on synthetic metrics.json files: pivot, mean ± std, newest rerun wins, missing cells."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from dominant_patterns import reporting as report
from dominant_patterns.reporting import MISSING, TABLES, build_report, pivot
from dominant_patterns.reporting.figures import bar_groups
from dominant_patterns.runs.records import load_records, newest_per_cell


def write_run(root: Path, name: str, *, task: str = "table3_embedded", model: str = "efficientnet_lite0",
              dataset: str = "photos", attack: str = "dominant", loss: str = "cos", seed: int = 0,
              mtime: float = 1_000_000.0, **metrics: Any) -> Path:
    run = root / task / "multiruns" / name
    run.mkdir(parents=True)
    record = {"task_name": task, "tags": [], "model": model, "dataset": dataset, "eval_dataset": dataset,
              "loss": loss, "loss_layer": "logits", "attack": attack, "xi": 10 / 255, "seed": seed,
              "attack_info": {"target_class": None},
              "metrics": {"fooling_rate": 0.5, "dominance_ratio": 0.4, "dominant_class_name": "sock",
                          "dominant_confidence": 0.9, "top1_ratio": 0.4, "top3_ratio": 0.6, "top5_ratio": 0.7,
                          **metrics},
              "floors": {"random_noise": {"fooling_rate": 0.01}}, "status": "finished"}
    path = run / "metrics.json"
    path.write_text(json.dumps(record))
    os.utime(path, (mtime, mtime))
    return path


def test_load_records_flattens_and_skips_unfinished(tmp_path: Path) -> None:
    write_run(tmp_path, "0", fooling_rate=0.7)
    bad = write_run(tmp_path, "1")
    bad.write_text(json.dumps({**json.loads(bad.read_text()), "status": "running"}))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metrics.json").write_text("{not json")
    df = load_records(tmp_path)
    assert len(df) == 1
    row = df.iloc[0]
    assert row["fooling_rate"] == 0.7 and row["floor/random_noise/fooling_rate"] == 0.01
    assert row["kind"] == "run" and pd.isna(row["target_class"])


def test_newest_rerun_wins(tmp_path: Path) -> None:
    write_run(tmp_path, "old", fooling_rate=0.1, mtime=1_000)
    write_run(tmp_path, "new", fooling_rate=0.9, mtime=2_000)
    write_run(tmp_path, "other_seed", fooling_rate=0.5, seed=1, mtime=500)
    df = newest_per_cell(load_records(tmp_path))
    assert sorted(df["fooling_rate"]) == [0.5, 0.9]


def test_pivot_mean_std_and_missing_rows(tmp_path: Path) -> None:
    for seed, value in enumerate((0.90, 0.94, 0.98)):
        write_run(tmp_path, f"d{seed}", seed=seed, fooling_rate=value)
    write_run(tmp_path, "t", attack="tuap", fooling_rate=0.8)
    df = newest_per_cell(load_records(tmp_path))
    table = pivot(df, ["attack"], ["model"], ["fooling_rate"], row_order={"attack": ["uap", "tuap", "dominant"]})
    assert list(table.index) == ["UAP", "TUAP", "Ours (dominant pattern)"]
    assert table.loc["Ours (dominant pattern)", "efficientnet_lite0"] == "94.00 ± 4.00"
    assert table.loc["TUAP", "efficientnet_lite0"] == "80.00"
    assert table.loc["UAP", "efficientnet_lite0"] == MISSING


def test_pivot_metrics_as_columns_and_strings(tmp_path: Path) -> None:
    write_run(tmp_path, "a", dataset="photos")
    write_run(tmp_path, "b", dataset="synthetic", dominant_class_name="church")
    df = load_records(tmp_path)
    table = pivot(df, ["dataset"], [], ["dominant_class_name", "dominance_ratio"])
    assert table.loc["synthetic", "dominant class"] == "church"
    assert table.loc["photos", "dominance ratio (%)"] == "40.00"


def test_build_report_writes_tables_paper_rows_and_html(tmp_path: Path) -> None:
    outputs, experiments = tmp_path / "outputs", tmp_path / "experiments"
    write_run(outputs, "cos", task="table1_embedded", loss="cos", dominance_ratio=0.8)
    write_run(outputs, "ed", task="table1_embedded", loss="ed", dominance_ratio=0.3)
    (experiments / "table1_loss").mkdir(parents=True)
    (experiments / "table1_loss" / "paper.csv").write_text("row,column,value,note\nvgg19 · imagenet,cos,92.93,T1\n")
    built = build_report(outputs, experiments, "embedded", only=["table1_loss", "table3_label_dependent"])
    t1 = next(b for b in built if b.spec.name == "table1_loss")
    ours = "ours: efficientnet_lite0 · photos · dominance ratio (%)"
    assert t1.table.loc[ours, "CoSLoss"] == "80.00"
    assert t1.table.loc[ours, "KLLoss"] == MISSING
    assert t1.table.loc["paper: vgg19 · imagenet", "cos"] == "92.93"
    md = (experiments / "table1_loss" / "embedded.md").read_text()
    assert "80.00" in md and "paper: vgg19" in md
    assert "\\begin{tabular}" in (experiments / "table1_loss" / "embedded.tex").read_text()
    page = (experiments / "embedded.html").read_text()
    assert "Table 1" in page and "Table 3" in page
    t3 = next(b for b in built if b.spec.name == "table3_label_dependent")
    assert (t3.table.loc["ours: GAP"] == MISSING).all()


@pytest.mark.parametrize("spec", TABLES, ids=lambda s: s.name)
def test_every_table_builds_from_nothing(tmp_path: Path, spec: report.TableSpec) -> None:
    (tmp_path / "outputs").mkdir()
    built = report.build_table(load_records(tmp_path / "outputs"), spec, "full", tmp_path / "experiments")
    assert built.runs == 0
    assert (tmp_path / "experiments" / spec.name / "full.md").is_file()


def test_sweep_table_has_one_row_per_backbone_and_fit_set_and_one_column_per_loss(tmp_path: Path) -> None:
    outputs, experiments = tmp_path / "outputs", tmp_path / "experiments"
    for model in ("efficientnet_lite0", "efficientnet_lite1"):
        for dataset in ("photos", "synthetic"):
            for loss, value in (("ed", 0.5), ("cos", 0.2)):
                write_run(outputs, f"{model}-{dataset}-{loss}", task="sweep_embedded", model=model, dataset=dataset,
                          loss=loss, dominance_ratio=value)
    write_run(outputs, "table1", task="table1_embedded", loss="kld", dominance_ratio=0.9)  # another task
    (built,) = build_report(outputs, experiments, "embedded", only=["sweep"])
    rows = [f"ours: {m} · {d} · dominance ratio (%)" for m in ("efficientnet_lite0", "efficientnet_lite1")
            for d in ("photos", "synthetic")]
    assert [r for r in built.table.index if "dominance" in r] == rows
    assert list(built.table.columns) == ["CoSLoss", "EDLoss"]
    assert (built.table.loc[rows, "EDLoss"] == "50.00").all() and (built.table.loc[rows, "CoSLoss"] == "20.00").all()
    assert (experiments / "sweep" / "embedded.md").is_file()


def test_bars_never_average_two_fit_sets(tmp_path: Path) -> None:
    spec = next(s for s in TABLES if s.name == "table4_proxy")
    for dataset, value in (("fashion_mnist", 0.2), ("synthetic", 0.6)):
        write_run(tmp_path, f"ours-{dataset}", task="table4_embedded", dataset=dataset, fooling_rate=value)
    write_run(tmp_path, "fff", task="table4_embedded", dataset="synthetic", attack="fff", fooling_rate=0.7)
    part = load_records(tmp_path)
    groups = bar_groups(spec, part, "attack", {"attack": ["fff", "dominant"]})
    assert [label for label, _ in groups] == ["FFF · synthetic", "Ours (dominant pattern) · fashion_mnist",
                                              "Ours (dominant pattern) · synthetic"]
    assert [sorted(part.loc[mask, "fooling_rate"]) for _, mask in groups] == [[0.7], [0.2], [0.6]]
    one_set = part[part["dataset"] == "synthetic"]
    assert [label for label, _ in bar_groups(spec, one_set, "attack", {"attack": ["fff", "dominant"]})] == [
        "FFF", "Ours (dominant pattern)"]
