"""Every metric a record holds, described once: its label, how it is shown, which way is better, whether it is
averaged over seeds or samples, whether the dashboard draws it as bars, and its column in the run summary.

The run summary, the report's cells and figures, the dashboard and the mean over a generator's samples read this
table; adding a metric column is one row here (plus computing it).
"""

from __future__ import annotations

from dataclasses import dataclass

#: How a value is shown: ``percent`` (a fraction shown x100), ``ssim`` (3 decimals), ``loss`` (scientific),
#: ``number``, ``count`` (an integer), ``class`` (a name or class index), ``layer`` (a layer number).
KINDS = ("percent", "ssim", "loss", "number", "count", "class", "layer")


@dataclass(frozen=True)
class Metric:
    """One metric of ``metrics.json``."""

    name: str
    label: str
    kind: str = "number"
    higher_is_better: bool | None = None
    #: Averaged over seeds and over a generator's samples (names, class indices and counts are taken as they are).
    averaged: bool = True
    #: Drawn as bar panels on the dashboard.
    bars: bool = True
    #: One of the comparison metrics every fitting table of the dashboard shows.
    headline: bool = False
    #: Its column header in the run summary table (None: not a column).
    summary: str | None = None

    @property
    def percent(self) -> bool:
        return self.kind == "percent"


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("fooling_rate", "fooling rate (%)", "percent", True, headline=True, summary="fooling %"),
    Metric("dominance_ratio", "dominance ratio (%)", "percent", True, headline=True, summary="dominance %"),
    Metric("dominant_class_name", "dominant class", "class", averaged=False, bars=False, summary="dominant class"),
    Metric("dominant_confidence", "confidence (%)", "percent", True, summary="confidence %"),
    Metric("top1_ratio", "top-1", "percent", True, summary="top-1 %"),
    Metric("top3_ratio", "top-3", "percent", True, summary="top-3 %"),
    Metric("top5_ratio", "top-5", "percent", True, summary="top-5 %"),
    Metric("clean_top1_ratio", "clean top-1", "percent"),
    Metric("clean_top3_ratio", "clean top-3", "percent"),
    Metric("clean_top5_ratio", "clean top-5", "percent"),
    Metric("dominant_class", "dominant class index", "class", averaged=False, bars=False),
    Metric("most_frequent_class", "most frequent class index", "class", averaged=False, bars=False),
    Metric("most_frequent_class_name", "most frequent class", "class", averaged=False, bars=False),
    Metric("n_images", "images", "count", averaged=False, bars=False),
    Metric("cos_loss_features", "CoSLoss (backbone feature)", "loss", False),
    Metric("cos_loss_logits", "CoSLoss (logits)", "loss", False),
    Metric("linf", "l_inf", "number"), Metric("linf_255", "l_inf (/255)", "number"), Metric("l2", "l_2", "number"),
    Metric("clean_accuracy", "clean accuracy (%)", "percent", True),
    Metric("adv_accuracy", "accuracy under attack (%)", "percent", False),
    Metric("head_accuracy", "head accuracy (%)", "percent", True),
    Metric("ssim_pattern_last", "last layer SSIM(δ+x, δ)", "ssim", True),
    Metric("ssim_image_last", "last layer SSIM(δ+x, x)", "ssim", False),
    Metric("ssim_pattern_first", "first layer SSIM(δ+x, δ)", "ssim", True),
    Metric("ssim_image_first", "first layer SSIM(δ+x, x)", "ssim", False),
    Metric("takeover_layer", "SSIM(δ+x, δ) > SSIM(δ+x, x) from layer", "layer", False),
    Metric("num_layers", "layers", "count", averaged=False, bars=False),
    Metric("num_images", "images", "count", averaged=False, bars=False),
)}


def metric(name: str) -> Metric:
    """The description of ``name`` (an unknown metric is a plain number under its own name)."""
    return METRICS.get(name) or Metric(name, name)


def label(name: str) -> str:
    return metric(name).label


def summary_columns() -> list[tuple[str, str]]:
    """The run summary's columns: (header, metric name), in table order."""
    return [(m.summary, m.name) for m in METRICS.values() if m.summary]
