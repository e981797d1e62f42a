"""Display names of losses and the run summary (its table from :mod:`dominant_patterns.analysis.metric_table`, attacks'
names from their cards)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dominant_patterns.analysis.metric_table import metric, summary_columns

LOSS_NAMES = {"cos": "CoSLoss", "ed": "EDLoss", "kld": "KLLoss"}
def _cell(value: Any, percent: bool) -> str:
    if value is None:
        return "-"
    if percent:
        return f"{100 * float(value):.1f}"
    return str(value)


def format_summary(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """A Markdown table, one row per pattern name."""
    columns = summary_columns()
    header = ["pattern", *(c[0] for c in columns)]
    body = [[name, *(_cell(m.get(key), metric(key).percent) for _, key in columns)] for name, m in rows.items()]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])


def skipped_note(record: Mapping[str, Any], limit: int = 5) -> str:
    """One line per split naming the unreadable files a run left out ('' when none)."""
    lines = []
    for split in ("fit", "eval"):
        files = record.get(f"skipped_{split}_files") or []
        count = int(record.get(f"skipped_{split}_images") or 0)
        if count:
            shown = ", ".join(files[:limit]) + (f" (+{count - limit} more)" if count > limit else "")
            lines.append(f"skipped {count} unreadable {split} image(s): {shown}")
    return "\n".join(lines)


def run_summary(record: Mapping[str, Any]) -> tuple[str, str]:
    """A finished fit's ``summary.md`` (the table, then the skipped files) and the terminal text around it:
    one line saying what ran, the same table, the timings and where the outputs are."""
    info = record.get("attack_info") or {}
    name = str(info.get("name") or record.get("attack"))
    table = format_summary({name: record["metrics"], **(record.get("floors") or {})})
    note = skipped_note(record)
    summary = table + (f"\n\n{note}" if note else "")
    loss_note = f" ({info['loss']} loss)" if info.get("loss") else ""  # attacks that fit with a named loss report it
    joint = record.get("multi_fit")
    seed_note = f" | seed {joint['seeds'][joint['index']]} of a {joint['num_patterns']}-pattern fit" if joint else ""
    timing = record.get("timing") or {}
    resumed = f" over {timing['fit_segments']} segments" if (timing.get("fit_segments") or 1) > 1 else ""
    headline = (f"{record.get('model')} | {name}{loss_note}{seed_note} | fit: {record.get('dataset')} "
                f"({record.get('fit_size')} images) | eval: {record.get('eval_dataset')} ({record.get('eval_size')} "
                f"images) | xi = {float(record.get('xi') or 0) * 255:.1f}/255")
    footer = (f"fit {float(timing.get('fit_seconds') or 0):.1f}s{resumed}, evaluation "
              f"{float(timing.get('eval_seconds') or 0):.1f}s; outputs in {record.get('output_dir')}")
    return summary, f"\n{headline}\n{summary}\n{footer}"
