"""Display names of methods, losses and metrics, and the terminal summary table: one place for the
run summary, the report and the embedded comparison."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ATTACK_NAMES = {"uap": "UAP", "gap": "GAP", "nag": "NAG", "ft_uap": "FT-UAP", "tuap": "TUAP", "sgd_uap": "SGD-UAP",
                "cosine_uap": "Cosine-UAP", "fff": "FFF", "aaa": "AAA", "pd_ua": "PD-UA", "gd_uap": "GD-UAP",
                "sga": "SGA", "dominant": "Ours (dominant pattern)"}
LOSS_NAMES = {"cos": "CoSLoss", "ed": "EDLoss", "kld": "KLLoss"}
METRIC_NAMES = {
    "fooling_rate": "fooling rate (%)", "dominance_ratio": "dominance ratio (%)",
    "dominant_class_name": "dominant class", "dominant_confidence": "confidence (%)",
    "top1_ratio": "top-1", "top3_ratio": "top-3", "top5_ratio": "top-5",
    "cos_loss_features": "CoSLoss (backbone feature)", "cos_loss_logits": "CoSLoss (logits)",
    "head_accuracy": "head accuracy (%)", "adv_accuracy": "accuracy under attack (%)",
    "ssim_pattern_last": "last layer SSIM(δ+x, δ)", "ssim_image_last": "last layer SSIM(δ+x, x)",
    "takeover_layer": "SSIM(δ+x, δ) > SSIM(δ+x, x) from layer", "num_layers": "layers", "num_images": "images",
}
#: Metrics shown as percentages (fractions in metrics.json).
PERCENT = {"fooling_rate", "dominance_ratio", "dominant_confidence", "top1_ratio", "top3_ratio", "top5_ratio",
           "head_accuracy", "adv_accuracy", "clean_accuracy"}
#: The run summary's columns: (header, metric key).
SUMMARY_COLUMNS = (
    ("fooling %", "fooling_rate"),
    ("dominance %", "dominance_ratio"),
    ("dominant class", "dominant_class_name"),
    ("confidence %", "dominant_confidence"),
    ("top-1 %", "top1_ratio"),
    ("top-3 %", "top3_ratio"),
    ("top-5 %", "top5_ratio"),
)


def attack_label(info: Mapping[str, Any]) -> str:
    """A method's display name from its ``attack_info`` (GD-UAP names its prior; ``*`` = from description)."""
    name = ATTACK_NAMES.get(info["name"], info["name"])
    if info["name"] == "gd_uap":
        name += f" ({info['prior']} prior)"
    if info.get("provenance"):
        name += " *"
    return name


def _cell(value: Any, percent: bool) -> str:
    if value is None:
        return "-"
    if percent:
        return f"{100 * float(value):.1f}"
    return str(value)


def format_summary(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """A Markdown table, one row per pattern name."""
    header = ["pattern", *(c[0] for c in SUMMARY_COLUMNS)]
    body = [[name, *(_cell(m.get(key), key in PERCENT) for _, key in SUMMARY_COLUMNS)] for name, m in rows.items()]
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
