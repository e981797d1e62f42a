"""The figures of the report: pattern grids, copied run figures, transfer heatmaps, the targeted bars and
the comparison bars (dominance ratio and fooling rate per method / loss / fit set and backbone)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from dominant_patterns.analysis.artifacts import pyplot
from dominant_patterns.analysis.metric_table import label
from dominant_patterns.reporting.table_specs import TableSpec
from dominant_patterns.runs.display import LOSS_NAMES

#: The chart next to a comparison table (the HTML page puts it beside the table).
BARS = "bars.png"
#: Keys whose values a comparison chart groups the bars by, in order of preference.
CATEGORY_KEYS = ("attack", "loss", "dataset")
#: A key that splits a category into several bar groups when the table has it as a second axis (Table 4's proxy
#: sets, the sweep's fit sets), so that no bar averages over two fit sets.
SPLIT_KEYS = ("dataset",)
BAR_METRICS = ("dominance_ratio", "fooling_rate")


def figure_patterns(part: pd.DataFrame, out: Path) -> list[Path]:
    """Figure 2 / A.1: the pattern images (pattern.png of each run) in a fit set x model grid."""
    rows = [r for r in part.itertuples() if (Path(r.run_dir) / "pattern.png").is_file()]
    if not rows:
        return []
    plt = pyplot()
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
    plt = pyplot()
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
        ax.set_title(label(metric))
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    path = out / "matrix.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def figure_targeted(part: pd.DataFrame, out: Path) -> list[Path]:
    if part.empty:
        return []
    plt = pyplot()
    part = part.sort_values(["target_class", "model"], na_position="first")
    several = part["model"].nunique() > 1  # then each bar names its backbone
    labels = [("untargeted" if pd.isna(t) else f"{int(t)}") + f"\n{c}" + (f"\n{m}" if several else "")
              for t, c, m in zip(part["target_class"], part["dominant_class_name"], part["model"], strict=True)]
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


def _ordered(values: pd.Series, order: Sequence[object]) -> list[object]:
    present = list(dict.fromkeys(values.dropna().tolist()))
    return sorted(present, key=lambda v: (order.index(v) if v in order else len(order), str(v)))


def comparison_keys(spec: TableSpec) -> tuple[str, str] | None:
    """(category key, series key) of a comparison table (a fitting table with a method, loss or fit-set axis
    and a backbone axis), else None."""
    keys = [*spec.rows, *spec.cols]
    category = next((k for k in CATEGORY_KEYS if k in keys), None)
    if spec.kind != "run" or category is None or "model" not in keys or spec.figure == "targeted":
        return None
    return category, "model"


def bar_groups(spec: TableSpec, part: pd.DataFrame, category: str,
               orders: dict[str, list[object]]) -> list[tuple[str, pd.Series]]:
    """(label, row mask) of each bar group: one per value of ``category``, split by fit set (:data:`SPLIT_KEYS`)
    when the table has that axis too and the records hold several, so that no bar averages two fit sets."""
    names = ({str(a): str(label) for a, label in zip(part["attack"], part["attack_label"], strict=False)}
             if category == "attack" and "attack_label" in part.columns else LOSS_NAMES if category == "loss" else {})
    keys = [*spec.rows, *spec.cols]
    split = next((k for k in SPLIT_KEYS if k in keys and k != category and part[k].nunique() > 1), None)
    groups = []
    for value in _ordered(part[category], orders.get(category, [])):
        mask = part[category] == value
        name = names.get(str(value), str(value))
        if split is None:
            groups.append((name, mask))
            continue
        groups += [(f"{name} · {sub}", mask & (part[split] == sub))
                   for sub in _ordered(part.loc[mask, split], orders.get(split, []))]
    return groups


def figure_bars(spec: TableSpec, part: pd.DataFrame, out: Path, scale: str) -> list[Path]:
    """Grouped bars of dominance ratio and fooling rate (mean ± std over seeds): one group per method /
    loss / fit set, one bar per backbone, in the table's orders."""
    keys = comparison_keys(spec)
    metrics = [m for m in BAR_METRICS if m in part.columns and part[m].notna().any()]
    if keys is None or not metrics:
        return []
    category, series = keys
    part = part[part[category].notna() & part[series].notna()]
    if part.empty:
        return []
    rows, cols = spec.orders(scale)
    orders = {**rows, **cols}
    models = _ordered(part[series], orders.get(series, []))
    groups = bar_groups(spec, part, category, orders)
    plt = pyplot()
    width = 0.8 / len(models)
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(4.0, 0.9 * len(groups) * max(1, len(models) / 2)) *
                                                      len(metrics) / 1.4, 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for j, model in enumerate(models):
            stats = [part.loc[mask & (part[series] == model), metric].astype(float) * 100 for _, mask in groups]
            means = [s.mean() if len(s) else float("nan") for s in stats]
            errs = [s.std(ddof=1) if len(s) > 1 else 0.0 for s in stats]
            xs = [i + (j - (len(models) - 1) / 2) * width for i in range(len(groups))]
            ax.bar(xs, means, width * 0.95, yerr=errs, capsize=2, label=str(model))
        ax.set_xticks(range(len(groups)), [label for label, _ in groups], rotation=30 if len(groups) > 3
                      else 0, ha="right" if len(groups) > 3 else "center", fontsize=7)
        ax.set_ylim(0, 100)
        ax.set_ylabel(label(metric), fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(models), 4), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.9 if len(models) <= 4 else 0.84))
    path = out / BARS
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]


def make_figures(spec: TableSpec, part: pd.DataFrame, out: Path, scale: str = "embedded") -> list[Path]:
    """The spec's own figure, with the comparison bars first for comparison tables."""
    return figure_bars(spec, part, out, scale) + _own_figure(spec, part, out)


def _own_figure(spec: TableSpec, part: pd.DataFrame, out: Path) -> list[Path]:
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
