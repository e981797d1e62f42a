"""Build every table: select the records, pivot, add the paper rows, write Markdown/LaTeX/figures/HTML."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from dominant_patterns.reporting.figures import make_figures
from dominant_patterns.reporting.render import BuiltTable, to_latex, to_markdown, write_html
from dominant_patterns.reporting.table_specs import TABLES, TableSpec, task_names
from dominant_patterns.reporting.tables import (
    MISSING,
    card_reference_rows,
    layers_table,
    pivot,
    read_paper,
    table_frame,
    with_paper_rows,
)
from dominant_patterns.runs.records import Roots, load_records


def build_table(df: pd.DataFrame, spec: TableSpec, scale: str, experiments_dir: Path) -> BuiltTable:
    """Write ``experiments/<table>/<scale>.md`` and ``.tex`` (+ figures) and return what was built."""
    out = experiments_dir / spec.name
    out.mkdir(parents=True, exist_ok=True)
    part = table_frame(df, spec, scale)
    # at the embedded scale only missing attacks and losses show as empty rows/columns (no paper models/data here)
    ours = pivot(part, spec.rows, spec.cols, spec.values, *spec.orders(scale),
                 fill_missing=None if scale == "full" else ["attack", "loss"])
    paper = read_paper(out)
    table = with_paper_rows(ours, paper, card_reference_rows(spec.name, paper))
    for old in out.glob(f"{scale}_*.png"):
        old.unlink()
    fig_dir = out / f"{scale}_figures"
    if fig_dir.exists():
        shutil.rmtree(fig_dir)
    fig_dir.mkdir()
    figures = make_figures(spec, part, fig_dir, scale) if not part.empty else []
    extra = layers_table(part) if spec.kind == "layers" else None
    md = [f"# {spec.title} ({scale} scale)", "",
          f"Runs: {len(part)} (tasks: {', '.join(task_names(spec, scale))}); `ours` = this repository, "
          "`paper` = the paper's published numbers, `published` = a newer method's own published numbers (both "
          "reference only, not measured here); mean ± std over seeds where several exist; "
          f"{MISSING} = no run.", "", to_markdown(table, spec.corner), ""]
    if extra is not None:
        md += ["## Per-layer SSIM (mean ± std)", "", to_markdown(extra, "layer"), ""]
    md += [f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in figures]
    (out / f"{scale}.md").write_text("\n".join(md) + "\n")
    (out / f"{scale}.tex").write_text(to_latex(table, f"{spec.title} ({scale} scale)", spec.corner))
    return BuiltTable(spec, table, extra, figures, len(part))


def build_report(outputs: Roots, experiments_dir: Path, scale: str, only: Sequence[str] | None = None
                 ) -> list[BuiltTable]:
    df = load_records(outputs)
    built = [build_table(df, spec, scale, experiments_dir) for spec in TABLES if not only or spec.name in only]
    write_html(built, experiments_dir / f"{scale}.html", scale)
    return built
