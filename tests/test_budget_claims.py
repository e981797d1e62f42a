"""Claims 1-3 at two budgets read from the same runs' anytime curves, and the budget table's cells (fake records)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from conftest import CONF

from dominant_patterns.apps.report import main as report_main
from dominant_patterns.attacks.catalog import attack_catalog
from dominant_patterns.reporting.budget_claims import at_passes, budget_claims, budget_section
from dominant_patterns.runs.records import read_records

XI = 10 / 255
GRID = (1000, 2000, 4000, 8000, 16000, 32000, 64000)


def write(root: Path, job: str, attack: str, loss: str | None, dominance: dict[int, float],
          fooling: dict[int, float]) -> None:
    curve = [{"passes": p + 11, "dominance_ratio": dominance[p], "fooling_rate": fooling[p], "top1_ratio": dominance[p],
              "top3_ratio": 0.9, "top5_ratio": 0.95, "dominant_class": 1, "dominant_class_name": "web",
              "dominant_confidence": 0.5} for p in GRID if p in dominance]
    floors = {k: {"dominance_ratio": 0.01, "fooling_rate": 0.4} for k in ("random_noise", "random_sign")}
    record = {"kind": "run", "task_name": "budget_embedded", "model": "efficientnet_lite0", "dataset": "photo_pool",
              "loss": loss, "attack": attack, "xi": XI, "seed": 0, "target_class": None, "status": "finished",
              "finished_at": 1.0, "fit_size": 1280, "eval_size": 512, "curve": curve, "floors": floors,
              "metrics": curve[-1], "timing": {"fit_seconds": 10.0},
              "attack_info": {"name": attack, "card": attack_catalog()[attack]["card"], "passes": curve[-1]["passes"]}}
    (root / job).mkdir(parents=True)
    (root / job / "metrics.json").write_text(json.dumps(record))


def fake_runs(root: Path) -> None:
    # CoS trails ED at 2k passes and leads everywhere by 64k; TUAP leads at 2k and trails at 16k
    write(root, "cos", "dominant", "cos", dict(zip(GRID, (0.05, 0.1, 0.3, 0.5, 0.7, 0.8, 0.9), strict=True)),
          dict(zip(GRID, (0.5, 0.6, 0.7, 0.8, 0.9, 0.92, 0.95), strict=True)))
    write(root, "ed", "dominant", "ed", dict(zip(GRID, (0.3, 0.4, 0.45, 0.5, 0.5, 0.5, 0.5), strict=True)),
          dict(zip(GRID, (0.6,) * 7, strict=True)))
    write(root, "kld", "dominant", "kld", dict(zip(GRID, (0.01,) * 7, strict=True)), dict(zip(GRID, (0.5,) * 7,
                                                                                                strict=True)))
    write(root, "tuap", "tuap", None, dict(zip(GRID[:5], (0.1,) * 5, strict=True)),
          dict(zip(GRID[:5], (0.8, 0.8, 0.85, 0.85, 0.86), strict=True)))


def test_the_budget_changes_the_verdicts_only_through_the_curves(tmp_path: Path) -> None:
    fake_runs(tmp_path)
    records = read_records(tmp_path, ["budget_embedded"])
    assert len(at_passes(records, 2000)) == 4 and len(at_passes(records, 64000)) == 3  # TUAP stopped at 16k
    assert at_passes(records, 2000).set_index("loss").loc["cos", "dominance_ratio"] == 0.1
    verdicts = {key: (small.verdict, large.verdict) for key, small, large in budget_claims(tmp_path)}
    assert verdicts["loss"] == ("does not hold", "holds")  # ED wins at 2k, CoS by 64k
    assert verdicts["baselines"][0] != verdicts["baselines"][1]  # TUAP ahead at 2k, behind at 16k
    page = "\n".join(budget_section(tmp_path, {}))
    assert "n = 1 seed" in page and "yes: does not hold at 2k, holds at 64k" in page
    reached = {line.split(" passes: ")[0][len("- Runs that reached "):]: line.split(" passes: ")[1]
               for line in page.splitlines() if line.startswith("- Runs that reached")}
    assert "TUAP" in reached["16,000"] and "TUAP" not in reached["64,000"] and "(KLLoss)" in reached["64,000"]
    missing = next(line for line in page.splitlines() if line.startswith("- Claim 3 at 16k compares with 1 of"))
    assert "Cosine-UAP" in missing and "TUAP," not in missing and "its verdict can change" in missing.lower()


def test_budget_table_cells_are_the_first_point_at_or_after_each_checkpoint(tmp_path: Path,
                                                                            monkeypatch) -> None:  # noqa: ANN001
    spec = importlib.util.spec_from_file_location("budget", CONF.parent / "experiments/budget_embedded/run.py")
    assert spec is not None and spec.loader is not None
    budget = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(budget)
    fake_runs(tmp_path / "outputs")
    monkeypatch.setattr(budget, "HERE", tmp_path / "experiment")
    records = budget.collect(tmp_path / "outputs")
    assert len(list((tmp_path / "experiment" / "records").glob("*/metrics.json"))) == 4
    lines = budget.table(records).splitlines()
    cos = next(line for line in lines if "(CoSLoss)" in line)
    assert "| 10.0 | 50.0 | 70.0 | 90.0 |" in cos  # dominance at 2k, 8k, 16k, 64k
    tuap = next(line for line in lines if line.startswith("| TUAP"))
    assert "| 10.0 | 10.0 | 10.0 | - |" in tuap


def test_budget_section_alone_rewrites_only_its_section(tmp_path: Path) -> None:
    """``report --claims PAGE --budget-section`` keeps the page's other sections (their records may be gone) and
    takes the scorecard column from the page's own table; a second run replaces the section, never stacks it."""
    fake_runs(tmp_path / "records")
    doc = tmp_path / "claims.md"
    title = budget_claims(tmp_path / "records")[1][1].title
    head = ("# Claims\n\n| # | claim | paper | ours | verdict |\n|---|---|---|---|---|\n"
            f"| 2 | {title} | p | o | **mixed** |\n\n")
    tail = "## 1. Existence\n\nkept as it was\n"
    doc.write_text(head + tail)
    for _ in range(2):
        report_main(["--claims", str(doc), "--budget-section", "--outputs", str(tmp_path / "none"),
                     "--records", str(tmp_path / "records")])
        page = doc.read_text()
        assert page.startswith(head) and page.endswith("\n\n" + tail)
        assert page.count("## Verdicts by budget") == 1
        loss_row = next(line for line in page.splitlines() if line.startswith(f"| {title} |"))
        assert "| mixed (n = 3) |" in loss_row and "yes: does not hold at 2k, holds at 64k" in loss_row


def test_a_method_that_stopped_itself_keeps_its_returned_pattern_at_larger_budgets(tmp_path: Path,
                                                                                     monkeypatch) -> None:  # noqa: ANN001
    """FFF's own validation rule ends it at ~4k passes under a 16k budget: at 8k and 16k it is its returned
    pattern (marked), not missing; a run cut by its budget is missing beyond it."""
    fake_runs(tmp_path / "outputs")
    write(tmp_path / "outputs", "fff", "fff", None, dict(zip(GRID[:3], (0.2, 0.3, 0.35), strict=True)),
          dict(zip(GRID[:3], (0.7, 0.8, 0.85), strict=True)))
    records = read_records(tmp_path / "outputs", ["budget_embedded"])
    late = at_passes(records, 16000).set_index("attack")
    assert late.loc["fff", "stopped"] and late.loc["fff", "curve_passes"] == 4011
    assert not late.loc["tuap", "stopped"] and "tuap" not in set(at_passes(records, 64000)["attack"])
    spec = importlib.util.spec_from_file_location("budget", CONF.parent / "experiments/budget_embedded/run.py")
    assert spec is not None and spec.loader is not None
    budget = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(budget)
    monkeypatch.setattr(budget, "HERE", tmp_path / "experiment")
    fff = next(line for line in budget.table(budget.collect(tmp_path / "outputs")).splitlines()
               if line.startswith("| FFF"))
    assert "| 30.0 | 35.0 † | 35.0 † | 35.0 † |" in fff  # dominance at 2k, then its returned pattern
