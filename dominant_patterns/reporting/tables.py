"""From records to a table in the paper's layout: cells of mean +- std over seeds, the published rows beside them."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from dominant_patterns.analysis.metric_table import label
from dominant_patterns.analysis.metric_table import metric as metric_spec
from dominant_patterns.attacks.card import TABLE_SETTINGS
from dominant_patterns.attacks.catalog import attack_catalog, attack_label, table_attacks
from dominant_patterns.reporting.table_specs import TableSpec, task_names
from dominant_patterns.runs.display import LOSS_NAMES
from dominant_patterns.runs.records import newest_per_cell, select

MISSING = "—"


def format_cell(values: pd.Series, metric: str, digits: int = 2) -> str:
    """Mean +- std over seeds (percent for ratios); non-numeric values joined; empty -> missing."""
    values = values.dropna()
    if values.empty:
        return MISSING
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.isna().any():
        return " / ".join(dict.fromkeys(map(str, values)))
    kind = metric_spec(metric).kind
    scale = 100.0 if kind == "percent" else 1.0
    mean = float(numeric.mean()) * scale
    if kind == "ssim":
        digits = 3
    elif scale == 1.0 and len(numeric) == 1 and float(numeric.iloc[0]).is_integer():
        return str(int(numeric.iloc[0]))
    if kind == "loss":
        text = f"{mean:.3e}"
        return text if len(numeric) < 2 else f"{text} ± {float(numeric.std(ddof=1)) * scale:.1e}"
    if len(numeric) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {float(numeric.std(ddof=1)) * scale:.{digits}f}"


def _label(key: str, value: Any, attack_names: dict[str, str] | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "untargeted" if key == "target_class" else MISSING
    if key == "attack":
        return (attack_names or {}).get(str(value)) or attack_label(str(value))
    if key == "loss":
        return LOSS_NAMES.get(str(value), str(value))
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def pivot(df: pd.DataFrame, rows: Sequence[str], cols: Sequence[str], values: Sequence[str],
          row_order: dict[str, Sequence[Any]] | None = None, col_order: dict[str, Sequence[Any]] | None = None,
          fill_missing: Sequence[str] | None = None) -> pd.DataFrame:
    """Cells ``rows x cols`` of formatted mean +- std over seeds; several metrics become a row level
    (or the columns when ``cols`` is empty). Expected rows/columns (``row_order``/``col_order`` values of
    the keys in ``fill_missing``, default all) with no record show as missing."""
    row_keys = list(rows)
    groups: dict[tuple[str, str], dict[str, str]] = {}
    row_labels: list[str] = []
    col_labels: list[str] = []

    def add(seq: list[str], item: str) -> None:
        if item not in seq:
            seq.append(item)

    # an attack's name as its records' cards give it (a table shows attacks no config of this package names)
    attack_names = (dict(zip(df["attack"].astype(str), df["attack_label"], strict=False))
                    if {"attack", "attack_label"} <= set(df.columns) else {})

    def row_label(parts: Sequence[tuple[str, Any]], metric: str | None) -> str:
        parts = [(k, v) for k, v in parts if v is not None or k == "target_class"]
        text = " · ".join(_label(k, v, attack_names) for k, v in parts) if parts else ""
        if metric is not None:
            text = f"{text} · {label(metric)}" if text else label(metric)
        return text

    def sort_key(key: str, order: dict[str, Sequence[Any]] | None) -> Any:
        wanted = list((order or {}).get(key, []))
        return lambda v: (wanted.index(v) if v in wanted else len(wanted), str(v))

    work = df.copy()
    for key in [*row_keys, *cols]:
        if key not in work.columns:
            work[key] = None
        work[key] = work[key].astype(object).where(work[key].notna(), None)
    expected_rows: list[tuple[Any, ...]] = []
    def fills(key: str) -> bool:
        return fill_missing is None or key in fill_missing

    if row_order and row_keys and row_keys[0] in row_order and fills(row_keys[0]):
        expected_rows = [(v,) for v in row_order[row_keys[0]]]
    present_rows = sorted({tuple(r) for r in work[row_keys].itertuples(index=False)} if row_keys else {()},
                          key=lambda t: tuple(sort_key(k, row_order)(v) for k, v in zip(row_keys, t, strict=False)))
    all_rows: list[tuple[Any, ...]] = []
    for exp in expected_rows:
        matching = [r for r in present_rows if r[:1] == exp]
        all_rows += matching or [exp + (None,) * (len(row_keys) - 1)]
    all_rows += [r for r in present_rows if r not in all_rows]
    present_cols = sorted({tuple(c) for c in work[list(cols)].itertuples(index=False)} if cols else {()},
                          key=lambda t: tuple(sort_key(k, col_order)(v) for k, v in zip(cols, t, strict=False)))
    for c in (col_order or {}).get(cols[0], []) if cols and fills(cols[0]) else []:
        if (c,) not in present_cols and len(cols) == 1:
            present_cols.append((c,))
    present_cols.sort(key=lambda t: tuple(sort_key(k, col_order)(v) for k, v in zip(cols, t, strict=False)))
    for rkey in all_rows:
        rmask = pd.Series(True, index=work.index)
        for k, v in zip(row_keys, rkey, strict=False):
            rmask &= work[k].isna() if v is None else (work[k] == v)
        for metric in values:
            for ckey in present_cols:
                cmask = rmask.copy()
                for k, v in zip(cols, ckey, strict=False):
                    cmask &= work[k].isna() if v is None else (work[k] == v)
                cell = work.loc[cmask, metric] if metric in work.columns else pd.Series(dtype=object)
                parts = list(zip(row_keys, rkey, strict=False))
                if cols:
                    rl = row_label(parts, metric if len(values) > 1 else None)
                    cl = " · ".join(_label(k, v, attack_names) for k, v in zip(cols, ckey, strict=False))
                else:
                    rl = row_label(parts, None)
                    cl = label(metric)
                add(row_labels, rl)
                add(col_labels, cl)
                groups.setdefault((rl, cl), {})["v"] = format_cell(cell, metric)
    table = pd.DataFrame(MISSING, index=row_labels, columns=col_labels, dtype=object)
    for (rl, cl), v in groups.items():
        table.loc[rl, cl] = v["v"]
    return table


def with_paper_rows(ours: pd.DataFrame, paper: pd.DataFrame | None,
                    published: pd.DataFrame | None = None) -> pd.DataFrame:
    """Stack our table over the published numbers: rows labeled ``ours``, ``paper`` (this paper's table) and
    ``published`` (a method's own paper, from its card, :func:`card_reference_rows`)."""
    ours = ours.copy()
    ours.index = [f"ours: {i}" for i in ours.index]
    parts = [ours]
    for kind, ref in (("paper", paper), ("published", published)):
        if ref is None or ref.empty:
            continue
        ref = ref.pivot_table(index="row", columns="column", values="value", aggfunc="first", sort=False)
        ref = ref.astype(object).where(ref.notna(), MISSING)
        ref.index = [f"{kind}: {i}" for i in ref.index]
        parts.append(ref)
    if len(parts) == 1:
        return ours
    columns = list(dict.fromkeys(c for part in parts for c in part.columns))
    combined = pd.concat(parts).reindex(columns=columns)
    return combined.astype(object).where(combined.notna(), MISSING)


def card_reference_rows(table: str, paper: pd.DataFrame | None) -> pd.DataFrame | None:
    """The published fooling rates the cards of ``table``'s methods carry (methods newer than the paper), as
    ``row, column, value`` (the row names the source); methods the paper's own table lists are left to it."""
    if table not in TABLE_SETTINGS:
        return None
    listed = set(paper["row"]) if paper is not None and not paper.empty else set()
    rows = []
    for name in table_attacks(table):
        info = attack_catalog()[name]
        card = info["card"]
        if card["published_fooling"] and info["display_name"] not in listed:
            label = f"{info['display_name']} ({card['published_source']})"
            rows += [{"row": label, "column": model, "value": f"{value:.2f}"}
                     for model, value in card["published_fooling"].items()]
    return pd.DataFrame(rows) if rows else None


def read_paper(table_dir: Path) -> pd.DataFrame | None:
    path = table_dir / "paper.csv"
    if not path.is_file():
        return None
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, comment="#")
    return frame[["row", "column", "value"]]


def table_frame(df: pd.DataFrame, spec: TableSpec, scale: str) -> pd.DataFrame:
    """The newest records feeding ``spec`` at ``scale``."""
    if df.empty or "task_name" not in df.columns:
        return df
    part = df[df["task_name"].isin(task_names(spec, scale)) & (df["kind"].fillna("run") == spec.kind)]
    part = select(newest_per_cell(part), spec.filters.get(scale, {}))
    if spec.name in TABLE_SETTINGS and "data_setting" in part.columns:  # a method's table, from its card
        part = part[part["data_setting"].isin(TABLE_SETTINGS[spec.name])]
    return part


def layers_table(part: pd.DataFrame) -> pd.DataFrame | None:
    """Figure 4's curves as a table: per layer, mean +- std of both SSIMs (newest layers run per model)."""
    tables = []
    for r in part.itertuples():
        path = Path(r.run_dir) / "layers.json"
        if not path.is_file():
            continue
        layers = json.loads(path.read_text())["layers"]
        tables.append(pd.DataFrame({
            "layer": [f"{r.model} {i + 1}: {x['name']}" for i, x in enumerate(layers)],
            "SSIM(δ+x, δ)": [f"{x['ssim_pattern_mean']:.3f} ± {x['ssim_pattern_std']:.3f}" for x in layers],
            "SSIM(δ+x, x)": [f"{x['ssim_image_mean']:.3f} ± {x['ssim_image_std']:.3f}" for x in layers],
        }).set_index("layer"))
    return pd.concat(tables) if tables else None
