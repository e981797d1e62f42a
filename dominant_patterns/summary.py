"""Plain-text summary tables of pattern metrics (for the terminal and summary.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

COLUMNS = (
    ("fooling %", "fooling_rate", True),
    ("dominance %", "dominance_ratio", True),
    ("dominant class", "dominant_class_name", False),
    ("confidence %", "dominant_confidence", True),
    ("top-1 %", "top1_ratio", True),
    ("top-3 %", "top3_ratio", True),
    ("top-5 %", "top5_ratio", True),
)


def _cell(value: Any, percent: bool) -> str:
    if value is None:
        return "-"
    if percent:
        return f"{100 * float(value):.1f}"
    return str(value)


def format_summary(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """A Markdown table, one row per pattern name."""
    header = ["pattern", *(c[0] for c in COLUMNS)]
    body = [[name, *(_cell(m.get(key), pct) for _, key, pct in COLUMNS)] for name, m in rows.items()]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])
