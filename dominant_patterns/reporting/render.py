"""Renderers of a built table: Markdown, LaTeX and the static HTML page."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dominant_patterns.reporting.figures import BARS
from dominant_patterns.reporting.table_specs import TableSpec
from dominant_patterns.reporting.tables import MISSING


@dataclass
class BuiltTable:
    """One table as built: the spec, the table, an extra table (per-layer SSIM), its figures, its run count."""

    spec: TableSpec
    table: pd.DataFrame
    extra: pd.DataFrame | None
    figures: list[Path]
    runs: int


def to_markdown(table: pd.DataFrame, corner: str = "") -> str:
    header = [corner, *map(str, table.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + [":---:"] * len(table.columns)) + "|"]
    for label, row in table.iterrows():
        lines.append("| " + " | ".join([str(label), *map(str, row.tolist())]) + " |")
    return "\n".join(lines)


def _tex(text: Any) -> str:
    out = str(text)
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("±", r"$\pm$"), ("—", "--"), ("·", r"$\cdot$")):
        out = out.replace(a, b)
    return out


def to_latex(table: pd.DataFrame, caption: str, corner: str = "") -> str:
    cols = "l" + "c" * len(table.columns)
    body = [" & ".join([_tex(corner), *map(_tex, table.columns)]) + r" \\", r"\midrule"]
    body += [" & ".join([_tex(label), *map(_tex, row.tolist())]) + r" \\" for label, row in table.iterrows()]
    return "\n".join([r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex(caption)}}}",
                      rf"\begin{{tabular}}{{{cols}}}", r"\toprule", *body, r"\bottomrule", r"\end{tabular}",
                      r"\end{table}"]) + "\n"


def write_html(built: Sequence[BuiltTable], path: Path, scale: str) -> None:
    """One static page with every table and figure (no W&B needed, nothing loaded from elsewhere); a
    comparison table's bar chart (``figures.BARS``) stands beside it."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>dominant-patterns: {scale} results</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;"
             "font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:center}"
             "th:first-child,td:first-child{text-align:left}tr.paper td{color:#777;font-style:italic}"
             "img{max-width:640px;margin:4px;border:1px solid #eee}section{margin-bottom:2.5em}"
             ".pair{display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start}.pair img.bars{max-width:620px}"
             "</style></head><body>",
             f"<h1>dominant-patterns: {scale}-scale tables and figures</h1>",
             "<p>Rows labeled <i>paper</i> are the published numbers (reference only). "
             f"{MISSING} = no run for that cell.</p>"]
    for b in built:
        parts.append(f"<section id='{b.spec.name}'><h2>{html.escape(b.spec.title)}</h2>"
                     f"<p>{b.runs} runs · <code>experiments/{b.spec.name}/{scale}.md</code></p>")
        bars = [f for f in b.figures if f.name == BARS]
        parts.append("<div class='pair'>" + _html_table(b.table, b.spec.corner)
                     + "".join(_html_image(f, path, "bars") for f in bars) + "</div>")
        if b.extra is not None:
            parts.append("<details><summary>per-layer SSIM</summary>" + _html_table(b.extra, "layer") + "</details>")
        parts += [_html_image(fig, path) for fig in b.figures if fig not in bars]
        parts.append("</section>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts))


def _html_image(fig: Path, page: Path, cls: str = "") -> str:
    rel = fig.relative_to(page.parent).as_posix()
    klass = f" class='{cls}'" if cls else ""
    return f"<a href='{rel}'><img{klass} src='{rel}' alt='{html.escape(fig.stem)}'></a>"


def _html_table(table: pd.DataFrame, corner: str) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in [corner, *table.columns])
    rows = []
    for label, row in table.iterrows():
        cls = " class='paper'" if str(label).startswith("paper:") else ""
        cells = "".join(f"<td>{html.escape(str(v))}</td>" for v in [label, *row.tolist()])
        rows.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"
