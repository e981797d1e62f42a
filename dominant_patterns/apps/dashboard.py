"""``python -m dominant_patterns.dashboard``: a W&B workspace (and report) with one section per paper table.

    python -m dominant_patterns.dashboard --dry-run            # the spec as JSON, offline (no login)
    python -m dominant_patterns.dashboard                      # save the workspace + report, print their URLs
    python -m dominant_patterns.dashboard --scale full --entity me --project dominant-patterns

Sections follow the report's table specs (:data:`dominant_patterns.reporting.table_specs.TABLES`, one source of
truth): per table, bar panels of its metrics with runs grouped by attack x model x fit set (mean ± std
over seeds), its media (the runs log ``pattern`` and ``examples``; layers runs ``fig3`` and ``fig4``),
and a note naming the tasks that feed it. Then the training curves (``train/loss``) and a runs table
with the identity fields (:data:`dominant_patterns.runs.records.IDENTITY_FIELDS`) pinned. A workspace has one
run set for all its sections, so the saved report repeats each table with its own run set (the table's
tasks and filters): the per-table view. Summary keys are the flattened ``metrics.json``
(``metrics/dominance_ratio``); config keys the resolved Hydra config (``model.name``).

``wandb-workspaces`` is imported only to build or save (``--dry-run`` writes the spec without it when
it is missing). Entity and project default to ``conf/logger/wandb.yaml``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from dominant_patterns.analysis.metric_table import METRICS, label, metric
from dominant_patterns.conf import CONFIG_DIR
from dominant_patterns.reporting.table_specs import SCALES, TABLES, TableSpec, task_names
from dominant_patterns.runs.identity import CONFIG_KEYS, IDENTITY_FIELDS

#: The workspace's grouping: attack x model x fit set, and the loss so that ED and CoS fits of one cell never
#: average together; the seeds of a group average into one bar (mean ± std).
GROUP_BY = ("attack", "loss", "model", "dataset")
MEDIA = {"patterns": ["pattern"], "examples": ["examples"], "fig3": ["fig3"], "fig4": ["fig4"]}
DEFAULT_OUT = Path("outputs") / "dashboard_spec.json"


def config_key(field: str) -> str:
    """The W&B config key of an identity field (an unknown one is taken as a config path)."""
    return CONFIG_KEYS.get(field, field)


def summary_key(metric: str) -> str:
    """The W&B summary key of a metric of ``metrics.json`` (``RunRecorder.finish`` flattens the record)."""
    return f"metrics/{metric}"


def _numeric(spec: TableSpec) -> list[str]:
    """The spec's values that are numbers (bars), not names."""
    return [v for v in spec.values if metric(v).bars]


def bar(name: str, title: str, groupby: str | None = None) -> dict[str, Any]:
    """A bar panel of one summary metric, mean ± std over the runs of a group (the run set's, else ``groupby``)."""
    unit = " (%)" if metric(name).percent and "%" not in label(name) else ""
    return {"type": "BarPlot", "title": title, "metrics": [summary_key(name)], "orientation": "v",
            "groupby": groupby, "groupby_aggfunc": "mean", "groupby_rangefunc": "stddev",
            "title_y": label(name) + unit}


def table_section(spec: TableSpec, scale: str) -> dict[str, Any]:
    """One paper table as a dashboard section: its bars, media, note, and its own run set (for the report)."""
    tasks = task_names(spec, scale)
    axes = [*spec.rows, *spec.cols]
    panels: list[dict[str, Any]] = []
    headline = [m.name for m in METRICS.values() if m.headline]
    metrics = list(dict.fromkeys([*(headline if spec.kind == "run" else []), *_numeric(spec)]))
    by = " × ".join("fit set" if k == "dataset" else k for k in GROUP_BY)
    panels += [bar(name, f"{label(name)} by {by}") for name in metrics]
    if spec.figure in MEDIA:
        panels.append({"type": "MediaBrowser", "title": f"{spec.figure} ({', '.join(MEDIA[spec.figure])})",
                       "media_keys": MEDIA[spec.figure]})
    filters = {config_key(k): v for k, v in spec.filters.get(scale, {}).items()}
    note = (f"**{spec.title}**: rows {' · '.join(spec.rows) or '—'}, columns {' · '.join(spec.cols) or 'metrics'}; "
            f"runs of task {', '.join(tasks)} (app `{spec.kind}`). In this workspace, filter the run set with "
            f"`task_name in {tasks}`; the saved report shows this table with that run set, grouped by "
            f"{' × '.join(axes)}. Tables: "
            f"`experiments/{spec.name}/{scale}.md`.")
    panels.append({"type": "MarkdownPanel", "markdown": note})
    return {"name": spec.title, "table": spec.name, "kind": spec.kind, "tasks": tasks,
            "filters": {"task_name": tasks, **filters}, "groupby": [config_key(k) for k in axes if k != "metric"],
            "panels": panels}


def dashboard_spec(entity: str | None, project: str, scale: str = "embedded",
                   only: Sequence[str] | None = None) -> dict[str, Any]:
    """The whole dashboard as plain JSON-able data: run set, one section per table, curves, runs table."""
    sections = [table_section(s, scale) for s in TABLES if not only or s.name in only]
    sections.append({"name": "Training curves", "table": None, "kind": "run", "tasks": [], "filters": {},
                     "groupby": [], "panels": [
                         {"type": "LinePlot", "title": "train/loss (pattern loss per step)", "x": "Step",
                          "y": ["train/loss"], "groupby_aggfunc": "mean", "groupby_rangefunc": "stddev"},
                         {"type": "LinePlot", "title": "train/epoch_loss", "x": "train/epoch",
                          "y": ["train/epoch_loss"]}]})
    identity = [*IDENTITY_FIELDS, "task_name"]
    sections.append({"name": "Runs", "table": None, "kind": None, "tasks": [], "filters": {}, "groupby": [],
                     "panels": [{"type": "RunComparer", "title": "identity and metrics of the selected runs"}]})
    return {"entity": entity, "project": project, "scale": scale,
            "name": f"dominant-patterns: paper tables ({scale})",
            "runset": {"groupby": [config_key(k) for k in GROUP_BY],
                       "pinned_columns": [f"summary:{k}" for k in identity],
                       "order": "summary:finished_at"},
            "sections": sections}


# ---------------------------------------------------------------------------------------------
# wandb-workspaces objects (imported lazily)


def _metric(name: str) -> Any:
    import wandb_workspaces.reports.v2 as wr

    section, _, key = name.rpartition(":")
    return wr.Config(key) if section == "config" else wr.SummaryMetric(key) if section == "summary" else key


def _panel(p: dict[str, Any]) -> Any:
    import wandb_workspaces.reports.v2 as wr

    kind = p["type"]
    if kind == "BarPlot":
        return wr.BarPlot(title=p["title"], metrics=[wr.SummaryMetric(m) for m in p["metrics"]],
                          orientation=p["orientation"], groupby=_metric(p["groupby"]) if p["groupby"] else None,
                          groupby_aggfunc=p["groupby_aggfunc"], groupby_rangefunc=p["groupby_rangefunc"],
                          title_y=p["title_y"])
    if kind == "LinePlot":
        return wr.LinePlot(title=p["title"], x=p["x"], y=p["y"], groupby_aggfunc=p.get("groupby_aggfunc"),
                           groupby_rangefunc=p.get("groupby_rangefunc"))
    if kind == "MediaBrowser":
        return wr.MediaBrowser(title=p["title"], media_keys=p["media_keys"], mode="gallery")
    if kind == "MarkdownPanel":
        return wr.MarkdownPanel(markdown=p["markdown"])
    if kind == "RunComparer":
        return wr.RunComparer(diff_only="split")
    raise ValueError(f"unknown panel type {kind}")


def _filters(filters: dict[str, Any]) -> list[Any]:
    import wandb_workspaces.workspaces as ws

    out = []
    for key, value in filters.items():
        if value is None:  # "missing" in a table spec (e.g. untargeted): not expressible as a W&B filter
            continue
        out.append(ws.Config(key).isin(list(value)) if isinstance(value, (list, tuple)) else ws.Config(key) == value)
    return out


def build_workspace(spec: dict[str, Any]) -> Any:
    """The ``wandb_workspaces`` Workspace of a spec (no network)."""
    import wandb_workspaces.workspaces as ws

    sections = [ws.Section(name=s["name"], panels=[_panel(p) for p in s["panels"]], is_open=i < 2)
                for i, s in enumerate(spec["sections"])]
    runset = ws.RunsetSettings(groupby=[ws.Config(k) for k in spec["runset"]["groupby"]],
                               pinned_columns=list(spec["runset"]["pinned_columns"]))
    return ws.Workspace(entity=spec["entity"], project=spec["project"], name=spec["name"], sections=sections,
                        runset_settings=runset)


def build_report(spec: dict[str, Any]) -> Any:
    """The ``wandb_workspaces`` Report: each table with its own run set (tasks, filters, grouping)."""
    import wandb_workspaces.reports.v2 as wr

    blocks: list[Any] = [wr.P(f"One block per paper table ({spec['scale']} scale); bars are mean ± std over seeds.")]
    for s in spec["sections"]:
        if not s["tasks"]:
            continue
        runset = wr.Runset(entity=spec["entity"], project=spec["project"], name=s["table"],
                           filters=_filters(s["filters"]), groupby=[f"config.{k}" for k in s["groupby"]])
        blocks += [wr.H2(s["name"]), wr.PanelGrid(runsets=[runset], panels=[_panel(p) for p in s["panels"]])]
    return wr.Report(entity=spec["entity"], project=spec["project"], title=spec["name"][:128],
                     description="Generated by python -m dominant_patterns.dashboard", blocks=blocks)


def logger_defaults() -> tuple[str | None, str]:
    """Entity and project of ``conf/logger/wandb.yaml``."""
    cfg = OmegaConf.load(CONFIG_DIR / "logger" / "wandb.yaml")
    return cfg.get("entity"), str(cfg.get("project") or "dominant-patterns")


def main(argv: Sequence[str] | None = None) -> int:
    entity, project = logger_defaults()
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--entity", default=entity, help="W&B entity (default: logger.entity, else your default)")
    parser.add_argument("--project", default=project, help=f"W&B project (default: {project})")
    parser.add_argument("--scale", choices=SCALES, default="embedded", help="which tasks the sections name")
    parser.add_argument("--only", nargs="*", help="table names (default: all)")
    parser.add_argument("--dry-run", action="store_true", help="write the spec as JSON and save nothing")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where --dry-run writes (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.only or []) - {s.name for s in TABLES})
    if unknown:
        parser.error(f"--only {' '.join(unknown)}: no such table. Valid choices: {', '.join(s.name for s in TABLES)}")
    spec = dashboard_spec(args.entity, args.project, args.scale, args.only)
    if args.dry_run:
        try:  # the objects wandb-workspaces would save, when it is installed (no network)
            spec["wandb_workspace"] = build_workspace({**spec, "entity": spec["entity"] or "ENTITY"})._spec
        except ImportError:
            spec["wandb_workspace"] = None
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(spec, indent=1, default=str))
        print(f"dashboard spec ({len(spec['sections'])} sections) -> {args.out}")
        return 0
    try:
        import wandb
    except ImportError:
        print("error: the dashboard needs wandb and wandb-workspaces: pip install -c constraints.txt wandb-workspaces",
              file=sys.stderr)
        return 2
    try:
        api = wandb.Api()
        logged_in = bool(api.api_key)
    except wandb.errors.UsageError:
        logged_in = False
    if not logged_in:
        print("error: no W&B login (run `wandb login` or set WANDB_API_KEY); `--dry-run` writes the spec offline",
              file=sys.stderr)
        return 2
    spec["entity"] = spec["entity"] or api.default_entity
    workspace = build_workspace(spec).save()
    report = build_report(spec).save()
    print(f"workspace: {workspace.url}\nreport: {report.url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
