"""Rebuild the paper's tables and figures from the runs' ``metrics.json`` records.

    python -m dominant_patterns.report                 # embedded scale (tasks named <task>_embedded)
    python -m dominant_patterns.report --scale full    # the full-scale tasks (table1, table2, ...)

Every ``metrics.json`` under ``--outputs`` becomes one DataFrame row. Reruns of the same cell
(same kind, model, data, loss, attack, target class, xi and seed) keep only the newest record;
seeds are then averaged (mean +- std). Each table is written in the paper's layout as Markdown
and LaTeX under ``experiments/<table>/<scale>.md|.tex``, with the published numbers of
``experiments/<table>/paper.csv`` as labeled reference rows, its figures as PNG, and one static
HTML page (``experiments/<scale>.html``) shows everything.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import math
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
MISSING = "—"
SCALES = ("embedded", "full")
# Identity fields that define a table cell; the newest record per cell wins.
CELL_KEYS = ("kind", "model", "dataset", "eval_dataset", "loss", "loss_layer", "attack", "target_class", "xi",
             "seed", "source_model", "source_dataset")
ATTACK_NAMES = {"uap": "UAP", "gap": "GAP", "nag": "NAG", "ft_uap": "FT-UAP", "tuap": "TUAP", "sgd_uap": "SGD-UAP",
                "cosine_uap": "Cosine-UAP", "fff": "FFF", "aaa": "AAA", "pd_ua": "PD-UA", "gd_uap": "GD-UAP",
                "dominant": "Ours (dominant pattern)"}
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
# Metrics shown as percentages (fractions in metrics.json).
PERCENT = {"fooling_rate", "dominance_ratio", "dominant_confidence", "top1_ratio", "top3_ratio", "top5_ratio",
           "head_accuracy", "adv_accuracy", "clean_accuracy"}


# ---------------------------------------------------------------------------------------------
# Loading


def _timestamp(record: dict[str, Any], path: Path) -> float:
    value = record.get("finished_at")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            pass
    return path.stat().st_mtime


def record_to_row(record: dict[str, Any], path: Path) -> dict[str, Any]:
    """Flatten one ``metrics.json``: identity fields, ``metrics`` as columns, floors as ``floor/<name>/<key>``."""
    row: dict[str, Any] = {k: v for k, v in record.items() if not isinstance(v, (dict, list))}
    row["tags"] = ",".join(map(str, record.get("tags") or []))
    for key, value in (record.get("metrics") or {}).items():
        if not isinstance(value, (dict, list)):
            row[key] = value
    for floor, values in (record.get("floors") or {}).items():
        for key, value in (values or {}).items():
            if not isinstance(value, (dict, list)):
                row[f"floor/{floor}/{key}"] = value
    info = record.get("attack_info") or {}
    row.setdefault("target_class", info.get("target_class"))
    row.setdefault("kind", "run")
    row["run_dir"] = str(path.parent)
    row["timestamp"] = _timestamp(record, path)
    return row


def load_records(root: str | Path, tasks: Iterable[str] | None = None) -> pd.DataFrame:
    """All finished ``metrics.json`` under ``root`` (optionally only ``tasks``) as a DataFrame."""
    wanted = set(tasks) if tasks is not None else None
    rows = []
    for path in sorted(Path(root).glob("**/metrics.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("skipping unreadable %s: %s", path, exc)
            continue
        if not isinstance(record, dict) or record.get("status", "finished") != "finished":
            continue
        if wanted is not None and record.get("task_name") not in wanted:
            continue
        rows.append(record_to_row(record, path))
    df = pd.DataFrame(rows)
    for key in CELL_KEYS:
        if key not in df.columns:
            df[key] = None
    return df


def newest_per_cell(df: pd.DataFrame, keys: Sequence[str] = CELL_KEYS) -> pd.DataFrame:
    """Keep the newest record of each cell (reruns replace older runs)."""
    if df.empty:
        return df
    key_frame = df[list(keys)].astype(object).where(df[list(keys)].notna(), "<none>").astype(str)
    order = df.assign(_key=key_frame.agg("|".join, axis=1)).sort_values("timestamp")
    return order.drop_duplicates("_key", keep="last").drop(columns="_key").sort_index()


def select(df: pd.DataFrame, filters: dict[str, Any]) -> pd.DataFrame:
    """Rows whose columns match ``filters`` (a value, a list of values, or None for missing)."""
    mask = pd.Series(True, index=df.index)
    for key, allowed in filters.items():
        column = df[key] if key in df.columns else pd.Series(None, index=df.index, dtype=object)
        if allowed is None:
            mask &= column.isna()
        else:
            values = allowed if isinstance(allowed, (list, tuple, set)) else [allowed]
            mask &= column.isin(list(values))
    return df[mask]


# ---------------------------------------------------------------------------------------------
# Aggregation and layout


def format_cell(values: pd.Series, metric: str, digits: int = 2) -> str:
    """Mean +- std over seeds (percent for ratios); non-numeric values joined; empty -> missing."""
    values = values.dropna()
    if values.empty:
        return MISSING
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.isna().any():
        return " / ".join(dict.fromkeys(map(str, values)))
    scale = 100.0 if metric in PERCENT else 1.0
    mean = float(numeric.mean()) * scale
    if metric.startswith("ssim"):
        digits = 3
    elif scale == 1.0 and len(numeric) == 1 and float(numeric.iloc[0]).is_integer():
        return str(int(numeric.iloc[0]))
    if metric.startswith("cos_loss"):
        text = f"{mean:.3e}"
        return text if len(numeric) < 2 else f"{text} ± {float(numeric.std(ddof=1)) * scale:.1e}"
    if len(numeric) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {float(numeric.std(ddof=1)) * scale:.{digits}f}"


def _label(key: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "untargeted" if key == "target_class" else MISSING
    if key == "attack":
        return ATTACK_NAMES.get(str(value), str(value))
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

    def row_label(parts: Sequence[tuple[str, Any]], metric: str | None) -> str:
        parts = [(k, v) for k, v in parts if v is not None or k == "target_class"]
        text = " · ".join(_label(k, v) for k, v in parts) if parts else ""
        if metric is not None:
            text = f"{text} · {METRIC_NAMES.get(metric, metric)}" if text else METRIC_NAMES.get(metric, metric)
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
                    cl = " · ".join(_label(k, v) for k, v in zip(cols, ckey, strict=False))
                else:
                    rl = row_label(parts, None)
                    cl = METRIC_NAMES.get(metric, metric)
                add(row_labels, rl)
                add(col_labels, cl)
                groups.setdefault((rl, cl), {})["v"] = format_cell(cell, metric)
    table = pd.DataFrame(MISSING, index=row_labels, columns=col_labels, dtype=object)
    for (rl, cl), v in groups.items():
        table.loc[rl, cl] = v["v"]
    return table


def with_paper_rows(ours: pd.DataFrame, paper: pd.DataFrame | None) -> pd.DataFrame:
    """Stack our table over the published numbers, each row labeled ``ours`` or ``paper``."""
    ours = ours.copy()
    ours.index = [f"ours: {i}" for i in ours.index]
    if paper is None or paper.empty:
        return ours
    ref = paper.pivot_table(index="row", columns="column", values="value", aggfunc="first", sort=False)
    ref = ref.astype(object).where(ref.notna(), MISSING)
    ref.index = [f"paper: {i}" for i in ref.index]
    columns = list(ours.columns) + [c for c in ref.columns if c not in ours.columns]
    combined = pd.concat([ours, ref]).reindex(columns=columns)
    return combined.astype(object).where(combined.notna(), MISSING)


def read_paper(table_dir: Path) -> pd.DataFrame | None:
    path = table_dir / "paper.csv"
    if not path.is_file():
        return None
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, comment="#")
    return frame[["row", "column", "value"]]


# ---------------------------------------------------------------------------------------------
# Rendering


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


# ---------------------------------------------------------------------------------------------
# Table specifications (one per experiment file)


@dataclass
class TableSpec:
    """How one paper table is rebuilt from the records.

    Args:
        name: folder under ``experiments/`` (the experiment config's name).
        tasks: task names whose runs feed the table (embedded scale appends ``_embedded``).
        filters: per scale, column -> allowed values.
    """

    name: str
    title: str
    tasks: list[str]
    rows: list[str]
    cols: list[str]
    values: list[str]
    kind: str = "run"
    filters: dict[str, dict[str, Any]] = field(default_factory=dict)
    row_order: dict[str, list[Any]] = field(default_factory=dict)
    col_order: dict[str, list[Any]] = field(default_factory=dict)
    corner: str = ""
    figure: str | None = None


PAPER_MODELS = ["alexnet", "googlenet", "vgg16", "vgg19", "resnet50", "resnet152", "densenet121"]
UNTARGETED = {"attack": "dominant", "loss": "cos", "loss_layer": "logits", "target_class": None}

TABLES: list[TableSpec] = [
    TableSpec("table1_loss", "Table 1: dominance ratio (%) by similarity loss", ["table1"],
              rows=["model", "dataset"], cols=["loss"],
              values=["dominance_ratio", "dominant_confidence", "top1_ratio", "fooling_rate"],
              filters={"full": {"attack": "dominant", "target_class": None},
                       "embedded": {"attack": "dominant", "target_class": None}},
              col_order={"loss": ["cos", "ed", "kld"]}, corner="model · fit set"),
    TableSpec("table2_patterns", "Table 2 / A.2: dominant class, confidence and dominance ratio",
              ["table2", "table1"], rows=["dataset"], cols=["model"],
              values=["dominant_class_name", "dominant_confidence", "dominance_ratio"],
              filters={"full": {**UNTARGETED, "seed": 0}, "embedded": {**UNTARGETED, "seed": 0}},
              row_order={"dataset": ["imagenet", "coco", "biggan", "photos", "synthetic"]},
              col_order={"model": PAPER_MODELS}, corner="fit set", figure="patterns"),
    TableSpec("table3_label_dependent", "Table 3: fooling rate (%), attacks fitted on the in-distribution set",
              ["table3", "table1", "table2"], rows=["attack"], cols=["model"], values=["fooling_rate"],
              filters={"full": {"dataset": "imagenet", "loss": "cos", "target_class": None},
                       "embedded": {"dataset": "photos", "loss": "cos", "target_class": None}},
              row_order={"attack": ["uap", "gap", "nag", "ft_uap", "tuap", "sgd_uap", "cosine_uap", "dominant"]},
              col_order={"model": PAPER_MODELS}, corner="method"),
    TableSpec("table4_proxy", "Table 4: fooling rate (%) with proxy data (data-free / label-free)",
              ["table4", "table2"], rows=["attack", "dataset"], cols=["model"], values=["fooling_rate"],
              filters={"full": {"dataset": ["coco", "biggan"], "loss": "cos", "target_class": None},
                       "embedded": {"dataset": ["synthetic"], "loss": "cos", "target_class": None}},
              row_order={"attack": ["fff", "aaa", "pd_ua", "gd_uap", "tuap", "cosine_uap", "dominant"]},
              col_order={"model": PAPER_MODELS}, corner="method · proxy set"),
    TableSpec("table5_topk", "Table 5: top-k ratios (%) of each attack", ["table5", "table3", "table1"],
              rows=["model"], cols=["attack"], values=["top1_ratio", "top3_ratio", "top5_ratio"],
              filters={"full": {"model": "vgg19", "dataset": "imagenet", "loss": "cos", "target_class": None},
                       "embedded": {"dataset": "photos", "loss": "cos", "target_class": None}},
              col_order={"attack": ["uap", "gap", "nag", "ft_uap", "tuap", "sgd_uap", "cosine_uap", "dominant"]},
              corner="model · top-k"),
    TableSpec("table6_transfer", "Table 6: the ImageNet pattern against a new head on the frozen backbone",
              ["table6"], kind="transfer", rows=["model", "dataset"], cols=[],
              values=["head_accuracy", "dominant_class_name", "dominant_confidence", "fooling_rate",
                      "dominance_ratio", "cos_loss_features", "adv_accuracy"],
              corner="backbone · downstream task"),
    TableSpec("tableA1_seeds", "Table A.1: fooling rate (%), mean ± std over seeds",
              ["tableA1", "table2", "table1", "table3", "fig5"], rows=["dataset"], cols=["model"],
              values=["fooling_rate"], filters={"full": dict(UNTARGETED), "embedded": dict(UNTARGETED)},
              row_order={"dataset": ["imagenet", "coco", "biggan", "photos", "synthetic"]},
              col_order={"model": PAPER_MODELS}, corner="fit set"),
    TableSpec("fig3_layers", "Figure 3: per-layer SSIM for one image", ["fig3"], kind="layers",
              rows=["model", "dataset"], cols=[], values=["ssim_pattern_last", "ssim_image_last", "takeover_layer",
                                                          "num_layers"], figure="fig3"),
    TableSpec("fig4_layers", "Figure 4: per-layer SSIM, mean ± std over the evaluation set", ["fig4"],
              kind="layers", rows=["model", "dataset"], cols=[],
              values=["ssim_pattern_last", "ssim_image_last", "takeover_layer", "num_layers", "num_images"],
              figure="fig4"),
    TableSpec("fig5_examples", "Figure 5: adversarial examples (dominance ratio %, dominant class)",
              ["fig5", "table2", "table1"], rows=["model"], cols=[], values=["dominant_class_name", "dominance_ratio"],
              filters={"full": {**UNTARGETED, "dataset": "imagenet", "seed": 0},
                       "embedded": {**UNTARGETED, "dataset": "photos", "seed": 0}},
              figure="examples"),
    TableSpec("transfer_matrix", "Transfer matrix: fooling rate (%) of each source pattern on each target",
              ["transfer_matrix"], kind="evaluate", rows=["source_model", "source_dataset"],
              cols=["model", "dataset"], values=["fooling_rate", "dominance_ratio"],
              corner="pattern (source model · fit set)", figure="matrix"),
    TableSpec("targeted", "Targeted: dominance ratio (%) per chosen class vs the untargeted pattern",
              ["targeted", "table1"], rows=["target_class"], cols=["model"],
              values=["dominant_class_name", "dominant_confidence", "dominance_ratio"],
              filters={"full": {"attack": "dominant", "loss": "cos", "dataset": "imagenet"},
                       "embedded": {"attack": "dominant", "loss": "cos", "dataset": "photos"}},
              corner="target class", figure="targeted"),
]


def task_names(spec: TableSpec, scale: str) -> list[str]:
    return [f"{t}_embedded" if scale == "embedded" else t for t in spec.tasks]


def table_frame(df: pd.DataFrame, spec: TableSpec, scale: str) -> pd.DataFrame:
    """The newest records feeding ``spec`` at ``scale``."""
    if df.empty or "task_name" not in df.columns:
        return df
    part = df[df["task_name"].isin(task_names(spec, scale)) & (df["kind"].fillna("run") == spec.kind)]
    return select(newest_per_cell(part), spec.filters.get(scale, {}))


# ---------------------------------------------------------------------------------------------
# Figures


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_patterns(part: pd.DataFrame, out: Path) -> list[Path]:
    """Figure 2 / A.1: the pattern images (pattern.png of each run) in a fit set x model grid."""
    rows = [r for r in part.itertuples() if (Path(r.run_dir) / "pattern.png").is_file()]
    if not rows:
        return []
    plt = _plt()
    from PIL import Image

    datasets = list(dict.fromkeys(r.dataset for r in rows))
    models = list(dict.fromkeys(r.model for r in rows))
    fig, axes = plt.subplots(len(datasets), len(models), figsize=(2.6 * len(models), 2.9 * len(datasets)),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r in rows:
        ax = axes[datasets.index(r.dataset)][models.index(r.model)]
        ax.imshow(Image.open(Path(r.run_dir) / "pattern.png"))
        ax.set_title(f"{r.model} / {r.dataset}\n{r.dominant_class_name} ({float(r.dominance_ratio):.0%})", fontsize=8)
    fig.tight_layout()
    path = out / "patterns.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def copy_run_figures(part: pd.DataFrame, out: Path, names: Sequence[str]) -> list[Path]:
    """Copy figures a run left behind (e.g. examples.png) as ``<model>_<dataset>_<name>``."""
    paths = []
    for r in part.itertuples():
        for name in names:
            src = Path(r.run_dir) / name
            if src.is_file():
                dst = out / f"{r.model}_{r.dataset}_{name}"
                shutil.copyfile(src, dst)
                paths.append(dst)
    return paths


def figure_matrix(part: pd.DataFrame, out: Path) -> list[Path]:
    """Heatmaps of fooling rate and dominance ratio, source pattern x target."""
    if part.empty:
        return []
    plt = _plt()
    part = part.assign(src=part["source_model"].astype(str) + " · " + part["source_dataset"].astype(str),
                       dst=part["model"].astype(str) + " · " + part["dataset"].astype(str))
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, metric in zip(axes, ("fooling_rate", "dominance_ratio"), strict=True):
        grid = part.pivot_table(index="src", columns="dst", values=metric, aggfunc="mean") * 100
        im = ax.imshow(grid.to_numpy(), vmin=0, vmax=100, cmap="viridis")
        ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(grid.shape[0]), grid.index, fontsize=7)
        for (i, j), v in pd.DataFrame(grid.to_numpy()).stack().items():
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", color="w", fontsize=7)
        ax.set_title(METRIC_NAMES[metric])
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    path = out / "matrix.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def figure_targeted(part: pd.DataFrame, out: Path) -> list[Path]:
    if part.empty:
        return []
    plt = _plt()
    part = part.sort_values("target_class", na_position="first")
    labels = [("untargeted" if pd.isna(t) else f"{int(t)}") + f"\n{c}"
              for t, c in zip(part["target_class"], part["dominant_class_name"], strict=True)]
    fig, ax = plt.subplots(figsize=(1.6 * len(part) + 2, 3.6))
    ax.bar(range(len(part)), part["dominance_ratio"].astype(float) * 100, color="tab:red")
    ax.set_xticks(range(len(part)), labels, fontsize=7)
    ax.set_ylabel("dominance ratio (%)")
    ax.set_ylim(0, 100)
    fig.tight_layout()
    path = out / "targeted.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def _takeover(run_dir: Path) -> int | None:
    """The layer from which the pattern's SSIM stays above the image's, recomputed from layers.json."""
    path = run_dir / "layers.json"
    if not path.is_file():
        return None
    from dominant_patterns.layers import takeover_layer

    return takeover_layer(json.loads(path.read_text())["layers"])


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


def make_figures(spec: TableSpec, part: pd.DataFrame, out: Path) -> list[Path]:
    if spec.figure == "patterns":
        return figure_patterns(part, out)
    if spec.figure == "examples":
        return copy_run_figures(part, out, ["examples.png"])
    if spec.figure in ("fig3", "fig4"):  # each layers run draws both; a figure's table shows its own
        return copy_run_figures(part, out, [f"{spec.figure}.png"])
    if spec.figure == "matrix":
        return figure_matrix(part, out)
    if spec.figure == "targeted":
        return figure_targeted(part, out)
    return []


# ---------------------------------------------------------------------------------------------
# Driver


@dataclass
class BuiltTable:
    spec: TableSpec
    table: pd.DataFrame
    extra: pd.DataFrame | None
    figures: list[Path]
    runs: int


def build_table(df: pd.DataFrame, spec: TableSpec, scale: str, experiments_dir: Path) -> BuiltTable:
    """Write ``experiments/<table>/<scale>.md`` and ``.tex`` (+ figures) and return what was built."""
    out = experiments_dir / spec.name
    out.mkdir(parents=True, exist_ok=True)
    part = table_frame(df, spec, scale)
    if spec.kind == "layers" and not part.empty:
        part = part.assign(takeover_layer=[_takeover(Path(d)) for d in part["run_dir"]])
    # at the embedded scale only missing attacks and losses show as empty rows/columns (no paper models/data here)
    ours = pivot(part, spec.rows, spec.cols, spec.values, spec.row_order, spec.col_order,
                 fill_missing=None if scale == "full" else ["attack", "loss"])
    table = with_paper_rows(ours, read_paper(out))
    for old in out.glob(f"{scale}_*.png"):
        old.unlink()
    fig_dir = out / f"{scale}_figures"
    if fig_dir.exists():
        shutil.rmtree(fig_dir)
    fig_dir.mkdir()
    figures = make_figures(spec, part, fig_dir) if not part.empty else []
    extra = layers_table(part) if spec.kind == "layers" else None
    md = [f"# {spec.title} ({scale} scale)", "",
          f"Runs: {len(part)} (tasks: {', '.join(task_names(spec, scale))}); `ours` = this repository, "
          "`paper` = published numbers (reference only); mean ± std over seeds where several exist; "
          f"{MISSING} = no run.", "", to_markdown(table, spec.corner), ""]
    if extra is not None:
        md += ["## Per-layer SSIM (mean ± std)", "", to_markdown(extra, "layer"), ""]
    md += [f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in figures]
    (out / f"{scale}.md").write_text("\n".join(md) + "\n")
    (out / f"{scale}.tex").write_text(to_latex(table, f"{spec.title} ({scale} scale)", spec.corner))
    return BuiltTable(spec, table, extra, figures, len(part))


def write_html(built: Sequence[BuiltTable], path: Path, scale: str) -> None:
    """One static page with every table and figure (no W&B needed)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>dominant-patterns: {scale} results</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;"
             "font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:center}"
             "th:first-child,td:first-child{text-align:left}tr.paper td{color:#777;font-style:italic}"
             "img{max-width:640px;margin:4px;border:1px solid #eee}section{margin-bottom:2.5em}</style></head><body>",
             f"<h1>dominant-patterns: {scale}-scale tables and figures</h1>",
             "<p>Rows labeled <i>paper</i> are the published numbers (reference only). "
             f"{MISSING} = no run for that cell.</p>"]
    for b in built:
        parts.append(f"<section id='{b.spec.name}'><h2>{html.escape(b.spec.title)}</h2>"
                     f"<p>{b.runs} runs · <code>experiments/{b.spec.name}/{scale}.md</code></p>")
        parts.append(_html_table(b.table, b.spec.corner))
        if b.extra is not None:
            parts.append("<details><summary>per-layer SSIM</summary>" + _html_table(b.extra, "layer") + "</details>")
        for fig in b.figures:
            rel = fig.relative_to(path.parent).as_posix()
            parts.append(f"<a href='{rel}'><img src='{rel}' alt='{html.escape(fig.stem)}'></a>")
        parts.append("</section>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts))


def _html_table(table: pd.DataFrame, corner: str) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in [corner, *table.columns])
    rows = []
    for label, row in table.iterrows():
        cls = " class='paper'" if str(label).startswith("paper:") else ""
        cells = "".join(f"<td>{html.escape(str(v))}</td>" for v in [label, *row.tolist()])
        rows.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def build_report(outputs: Path, experiments_dir: Path, scale: str, only: Sequence[str] | None = None
                 ) -> list[BuiltTable]:
    df = load_records(outputs)
    built = [build_table(df, spec, scale, experiments_dir) for spec in TABLES if not only or spec.name in only]
    write_html(built, experiments_dir / f"{scale}.html", scale)
    return built


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outputs", type=Path, default=Path("outputs"), help="root searched for metrics.json")
    parser.add_argument("--experiments", type=Path, default=ROOT / "experiments", help="where tables are written")
    parser.add_argument("--scale", choices=SCALES, default="embedded")
    parser.add_argument("--only", nargs="*", help="table names (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    built = build_report(args.outputs, args.experiments, args.scale, args.only)
    for b in built:
        print(f"{b.spec.name}: {b.runs} runs -> {args.experiments / b.spec.name / (args.scale + '.md')}")
    print(f"HTML: {args.experiments / (args.scale + '.html')}")


if __name__ == "__main__":
    main()
