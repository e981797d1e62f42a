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
