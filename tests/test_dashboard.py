"""The W&B dashboard spec, offline: one section per paper table (from the report's specs), panel by panel."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import app_env

from dominant_patterns.apps.dashboard import build_report, build_workspace, dashboard_spec, main
from dominant_patterns.reporting.table_specs import TABLES, task_names
from dominant_patterns.runs.identity import IDENTITY_FIELDS


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``python -m dominant_patterns.dashboard --dry-run`` through the real entry point, with no W&B login."""
    tmp = tmp_path_factory.mktemp("dash")
    env = {**app_env(tmp), "HOME": str(tmp), "WANDB_MODE": "offline"}
    out = tmp / "spec.json"
    proc = subprocess.run([sys.executable, "-m", "dominant_patterns.dashboard", "--dry-run", "--out", str(out)],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{len(TABLES) + 2} sections" in proc.stdout
    return json.loads(out.read_text())


def _section(spec: dict, table: str) -> dict:
    return next(s for s in spec["sections"] if s["table"] == table)


def _panels(section: dict, kind: str) -> list[dict]:
    return [p for p in section["panels"] if p["type"] == kind]


def test_one_section_per_paper_table_in_the_reports_order(dry_run: dict) -> None:
    assert [s["table"] for s in dry_run["sections"][:len(TABLES)]] == [t.name for t in TABLES]
    assert [s["name"] for s in dry_run["sections"][:len(TABLES)]] == [t.title for t in TABLES]
    assert [s["name"] for s in dry_run["sections"][len(TABLES):]] == ["Training curves", "Runs"]
    assert dry_run["project"] == "dominant-patterns" and dry_run["scale"] == "embedded"
    for table in TABLES:
        section = _section(dry_run, table.name)
        assert section["tasks"] == task_names(table, "embedded")
        assert section["filters"]["task_name"] == section["tasks"]
        (note,) = _panels(section, "MarkdownPanel")
        assert table.title in note["markdown"] and section["tasks"][0] in note["markdown"]


def test_fitting_tables_bar_dominance_and_fooling_grouped_by_attack_model_fit_set(dry_run: dict) -> None:
    assert dry_run["runset"]["groupby"] == ["attack.name", "loss.name", "model.name", "dataset.name"]
    for table in (t for t in TABLES if t.kind == "run"):
        bars = _panels(_section(dry_run, table.name), "BarPlot")
        shown = [p["metrics"] for p in bars]
        assert ["metrics/dominance_ratio"] in shown and ["metrics/fooling_rate"] in shown, table.name
        for p in bars:
            assert (p["groupby_aggfunc"], p["groupby_rangefunc"]) == ("mean", "stddev")
            assert p["title"].endswith("by attack × loss × model × fit set")


def test_loss_ablation_and_analysis_sections(dry_run: dict) -> None:
    t1 = _section(dry_run, "table1_loss")
    assert t1["groupby"] == ["model.name", "dataset.name", "loss.name"]
    assert {"metrics/dominant_confidence", "metrics/top1_ratio"} <= {p["metrics"][0] for p in _panels(t1, "BarPlot")}
    t6 = _section(dry_run, "table6_transfer")
    assert ["metrics/head_accuracy"] in [p["metrics"] for p in _panels(t6, "BarPlot")]
    matrix = _section(dry_run, "transfer_matrix")
    assert matrix["groupby"] == ["source.model", "source.dataset", "model.name", "dataset.name"]
    fig4 = _section(dry_run, "fig4_layers")
    assert "metrics/num_layers" not in [p["metrics"][0] for p in _panels(fig4, "BarPlot")]


def test_media_panels_use_the_logged_image_keys(dry_run: dict) -> None:
    media = {s["table"]: p["media_keys"] for s in dry_run["sections"] for p in _panels(s, "MediaBrowser")}
    assert media == {"table2_patterns": ["pattern"], "fig5_examples": ["examples"], "fig3_layers": ["fig3"],
                     "fig4_layers": ["fig4"]}
    # the keys are the ones the apps log (fit: pattern, examples; figure_layers: fig3, fig4)
    apps = Path(__file__).resolve().parent.parent / "dominant_patterns" / "apps"
    fit = (apps / "fit.py").read_text()
    assert '{"pattern": out_dir / "pattern.png", "examples": out_dir / "examples.png"}' in fit
    assert '"fig3": out_dir' in (apps / "figure_layers.py").read_text()


def test_training_curves_and_runs_table(dry_run: dict) -> None:
    curves = next(s for s in dry_run["sections"] if s["name"] == "Training curves")
    assert [p["y"] for p in _panels(curves, "LinePlot")][0] == ["train/loss"]
    assert dry_run["runset"]["pinned_columns"] == [f"summary:{k}" for k in [*IDENTITY_FIELDS, "task_name"]]


def test_dry_run_includes_the_workspace_view_wandb_would_save(dry_run: dict) -> None:
    view = dry_run["wandb_workspace"]
    sections = view["spec"]["section"]["panelBankConfig"]["sections"]
    assert [s["name"] for s in sections] == [s["name"] for s in dry_run["sections"]]
    assert sum(len(s["panels"]) for s in sections) == sum(len(s["panels"]) for s in dry_run["sections"])


def test_report_has_one_block_per_table_with_its_own_run_set() -> None:
    spec = dashboard_spec("someone", "dominant-patterns", "full", only=["table3_label_dependent", "tableA1_seeds"])
    report = build_report(spec)
    grids = [b for b in report.blocks if type(b).__name__ == "PanelGrid"]
    assert len(grids) == 2
    (runset,) = grids[0].runsets
    assert runset.groupby == ["config.attack.name", "config.model.name"]
    assert build_workspace(spec).sections[0].name == TABLES[2].title


def test_bad_table_name_lists_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--dry-run", "--only", "table99"])
    assert exc.value.code == 2
    assert "table99: no such table. Valid choices: table1_loss" in capsys.readouterr().err


def test_saving_without_login_says_how(tmp_path: Path) -> None:
    env = {**app_env(tmp_path), "HOME": str(tmp_path)}
    env.pop("WANDB_API_KEY", None)
    proc = subprocess.run([sys.executable, "-m", "dominant_patterns.dashboard", "--entity", "someone"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "no W&B login" in proc.stderr and "--dry-run" in proc.stderr
