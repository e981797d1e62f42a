"""Selecting and summarizing the records behind the claims scorecard (``report/claims.py``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from dominant_patterns.reporting.render import to_markdown

MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
XI_10 = 10 / 255
HOLDS, FAILS, MIXED, UNTESTABLE = "holds", "does not hold", "mixed", "not testable offline"
#: The command that makes the scorecard's runs (named where a claim has none).
MAKE_CLAIMS = "make claims"


@dataclass
class Claim:
    """One scorecard row and its detail."""

    key: str
    title: str
    paper: str
    ours: str
    verdict: str
    detail: str = ""
    figures: list[Path] = field(default_factory=list)


def fits(df: pd.DataFrame, *, tasks: Sequence[str] | None = None, xi: float = XI_10, **filters: Any) -> pd.DataFrame:
    """Fitting runs at ``xi`` (untargeted), optionally of ``tasks``, matching ``filters`` (value or list)."""
    if df.empty:
        return df
    part = df[(df["kind"].fillna("run") == "run") & df["target_class"].isna()]
    part = part[(part["xi"].astype(float) - xi).abs() < 1e-6]
    if tasks is not None:
        part = part[part["task_name"].isin(list(tasks))]
    for key, value in filters.items():
        values = value if isinstance(value, (list, tuple, set)) else [value]
        part = part[part[key].isin(list(values))] if key in part.columns else part.iloc[0:0]
    return part


def analyses(df: pd.DataFrame, kind: str, source_model: str, loss: str = "cos") -> pd.DataFrame:
    """Records of an analysis app (``transfer``, ``layers``) on ``source_model``'s patterns fitted with ``loss``."""
    if df.empty:
        return df
    return df[(df["kind"] == kind) & (df["source_model"] == source_model) & (df["loss"] == loss)]


def floor_dominance(part: pd.DataFrame) -> float:
    """The larger of the two noise floors' mean dominance ratios."""
    return max(stats(part[f"floor/{name}/dominance_ratio"])[0] for name in ("random_noise", "random_sign"))


def stats(values: pd.Series) -> tuple[float, float, int]:
    """Mean, sample std (0 for one value) and count of the non-missing values."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    if v.empty:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v)


def pct(values: pd.Series) -> str:
    """``mean ± std (n)`` in percent, or ``—``."""
    mean, std, n = stats(values)
    if not n:
        return "—"
    return f"{100 * mean:.1f} ± {100 * std:.1f} (n={n})" if n > 1 else f"{100 * mean:.1f} (n=1)"


def classes(values: pd.Series) -> str:
    """The dominant classes of the seeds, with counts."""
    counts = values.dropna().astype(str).value_counts()
    return ", ".join(f"{name} ×{n}" if n > 1 else name for name, n in counts.items()) or "—"


def majority(values: pd.Series) -> str | None:
    counts = values.dropna().astype(str).value_counts()
    return str(counts.index[0]) if len(counts) and counts.iloc[0] * 2 > len(values.dropna()) else None


def verdict_of(passes: Sequence[bool]) -> str:
    """All pass: holds; none: does not hold; some: mixed; no data: not testable."""
    if not passes:
        return UNTESTABLE
    return HOLDS if all(passes) else FAILS if not any(passes) else MIXED


def model_label(model: str) -> str:
    return model.replace("efficientnet_lite", "Lite")


def summary(rows: list[dict[str, Any]], key: str, prefix: str = "", cols: Sequence[str] | None = None) -> str:
    """One line per backbone (and loss) for the scorecard cell."""
    parts = []
    for r in rows:
        label = " ".join(str(r[k]) for k in ("backbone", "loss", "fit set") if k in r)
        value = " / ".join(str(r[c]).split(" (n=")[0] for c in cols) if cols else str(r[key]).split(" (n=")[0]
        parts.append(f"{label}: {value}")
    return prefix + "; ".join(parts) if parts else "no runs"


def table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return f"_No records for this claim: run `{MAKE_CLAIMS}`._"
    frame = pd.DataFrame(rows)
    return to_markdown(frame.set_index(frame.columns[0]), frame.columns[0])
