"""Compute-matched comparison on the embedded default: every attack's anytime curve over image passes.

    python experiments/budget_embedded/run.py            # the table, figures and records from what has finished
    make budget-embedded                                  # restore records, run both sweeps (finished jobs are
                                                          # skipped, interrupted ones resume), then this

Reads the finished records of ``task_name=budget_embedded`` under ``outputs/`` and ``records/`` beside this file,
copies each finished ``metrics.json`` (with its curve; no ``.pt``) into ``records/<job>/``, and writes
``README.md`` (each metric at 2k, 8k, 16k and 64k passes, then the hand-written ``reading.md``), ``dominance.png``
and ``fooling.png`` (one line per method, log x-axis). A point "at N passes" is the curve's first point at or
after N: the loop measures at the end of the first step that reaches each grid value.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path
from typing import Any

from dominant_patterns.analysis.artifacts import pyplot
from dominant_patterns.attacks.card import display_name, row_rank
from dominant_patterns.reporting.budget_claims import point_at
from dominant_patterns.runs.display import LOSS_NAMES
from dominant_patterns.runs.records import attack_info, read_records

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TASK = "budget_embedded"
#: The table's columns: passes (the grid points the issue asks for).
CHECKPOINTS = (2000, 8000, 16000, 64000)
METRICS = {"dominance_ratio": "dominance %", "fooling_rate": "fooling %"}


def method_name(record: dict[str, Any]) -> str:
    info = attack_info(record)
    name = display_name(info)
    return f"{name} ({LOSS_NAMES.get(record.get('loss'), record.get('loss'))})" if info.get("card", {}).get("ours") \
        else name


def restore(outputs: Path) -> int:
    """Put the committed records back into the sweep's job dirs (a fresh clone then skips the finished jobs)."""
    restored = 0
    for record in sorted((HERE / "records").glob("*/metrics.json")):
        target = outputs / TASK / "sweep" / record.parent.name / "metrics.json"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(record, target)
            restored += 1
    return restored


def collect(outputs: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The finished records of the task, newest per job folder; copies new ones into ``records/``."""
    found: dict[str, tuple[Path, dict[str, Any]]] = {}
    for path, record in read_records([HERE / "records", outputs], [TASK]):
        job = path.parent.name
        if job not in found or record.get("finished_at", 0) > found[job][1].get("finished_at", 0):
            found[job] = (path, record)
    for job, (path, _) in found.items():
        target = HERE / "records" / job / "metrics.json"
        if path.resolve() != target.resolve():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    return sorted(found.values(), key=lambda item: (row_rank(attack_info(item[1])), str(item[1].get("loss"))))


def at(record: dict[str, Any], passes: int, key: str) -> str:
    """The cell at ``passes``: the curve's first point at or after it; for a method that stopped itself before,
    its returned pattern's value marked with a dagger; "-" when the fit was not run that far."""
    point, stopped = point_at(record, passes)
    return "-" if point is None else pct(point[key]) + (" †" if stopped else "")


def pct(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def table(records: list[tuple[Path, dict[str, Any]]]) -> str:
    head = ["method", *(f"{label} @{n // 1000}k" for label in METRICS.values() for n in CHECKPOINTS),
            "class @end", "returned pattern: fooling / dominance %", "passes run", "fit s (curve s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in records:
        curve = r.get("curve") or []
        cells = [at(r, n, key) for key in METRICS for n in CHECKPOINTS]
        last = curve[-1] if curve else {}
        final, timing = r.get("metrics") or {}, r["timing"]
        lines.append("| " + " | ".join([method_name(r), *cells, str(last.get("dominant_class_name", "-")),
                                        f"{pct(final.get('fooling_rate'))} / {pct(final.get('dominance_ratio'))}",
                                        f"{attack_info(r).get('passes', 0):,}",
                                        f"{timing['fit_seconds']:.0f} ({timing.get('curve_seconds', 0):.0f})"]) + " |")
    return "\n".join(lines)


def figure(records: list[tuple[Path, dict[str, Any]]], key: str, label: str, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 6))
    colours, markers = plt.rcParams["axes.prop_cycle"].by_key()["color"], "osv^Dx"
    for i, r in enumerate(record for _, record in records if record.get("curve")):
        curve = r["curve"]
        ours = attack_info(r).get("card", {}).get("ours")
        # the colour cycle repeats past 10 lines: each repeat gets its own marker and line style
        ax.plot([p["passes"] for p in curve], [100 * p[key] for p in curve], color=colours[i % len(colours)],
                marker=markers[i // len(colours) % len(markers)], markersize=4, linewidth=2.2 if ours else 1.0,
                linestyle="-" if i < len(colours) else "--", label=method_name(r))
    floors = records[0][1].get("floors", {}) if records else {}
    for name, style in (("random_noise", ":"), ("random_sign", "--")):
        if key in floors.get(name, {}):
            ax.axhline(100 * floors[name][key], color="grey", linestyle=style, linewidth=1,
                       label=f"floor: {name.replace('_', ' ')}")
    ax.set_xscale("log")
    ax.set_xlabel("image passes with an input gradient (log)")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def reading(path: Path) -> str:
    """The hand-written reading of the curves (``reading.md`` beside this file), if there is one."""
    return f"\n## Reading\n\n{path.read_text().strip()}\n" if path.is_file() else ""


def write(records: list[tuple[Path, dict[str, Any]]], note: str) -> Path:
    for key, label in METRICS.items():
        figure(records, key, label, HERE / f"{key.split('_')[0]}.png")
    first = records[0][1]
    noise, sign = (pct(first.get("floors", {}).get(k, {}).get("fooling_rate")) for k in ("random_noise", "random_sign"))
    text = f"""# Compute-matched comparison: anytime curves on EfficientNet-Lite0 and the photo pool

Every attack on one compute axis: image passes through the classifier with an input gradient (the pattern row
counts; forward-only validation passes are counted apart). EfficientNet-Lite0, fit on {first['fit_size']} crops of
the photo pool's fit scenes, the curve measured on {first['eval_size']} crops of its held-out scenes (the photo pool:
49 natural photographs from 6 registry packages, split by scene; `conf/dataset/photo_pool.yaml`), seed 0,
xi = 10/255. The dominant pattern runs to 64k passes with each loss, every baseline to 16k (its
`conf/method/` entry: the budget replaces the entry's caps on epochs and iterations and lifts its caps on the fit
data to the published setting, all fit crops for UAP and 500 per epoch for DM-UAP; AAA keeps its 32 class
impressions, and the generators of GAP, NAG and AAA their width 16). A cell "at N" is the first curve point at or
after N passes (measured at the end of the step that reaches the grid value 1k, 2k, 4k, ...); "returned
pattern" is the final record: the pattern the method returns (e.g. its best by its own validation on fit images),
scored on the same held-out crops; † = the method stopped itself (its own validation rule) before that budget,
so the cell is its returned pattern. "Passes run" counts gradient passes only; a pass is one forward row with
autograd, so UAP's DeepFool, which takes 10 class gradients from each forward, spends several backward passes per
counted pass (its fit seconds show it). One seed: a few
points are within run-to-run noise. Floors on the same crops: random noise {noise}% fooling, random sign {sign}%.

Produced by `make budget-embedded` (the sweeps `experiment=budget_embedded_ours` and
`experiment=budget_embedded_baselines`, then `python experiments/budget_embedded/run.py`); the finished records
are in `records/` (`python -m dominant_patterns.report --records experiments/budget_embedded/records` reads them).

{table(records)}

![dominance](dominance.png)
![fooling](fooling.png)
{reading(HERE / "reading.md")}
Machine: {note or 'load not recorded'}.
"""
    out = HERE / "README.md"
    out.write_text(text)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outputs", type=Path, default=ROOT / "outputs", help="where the sweeps wrote their runs")
    parser.add_argument("--note", default="", help="how the machine was shared while the sweeps ran")
    parser.add_argument("--restore", action="store_true", help="only copy the committed records into the sweep's "
                        "job dirs, so that the sweeps skip the jobs that finished in an earlier session")
    args = parser.parse_args()
    if args.restore:
        print(f"restored {restore(args.outputs)} finished records into {args.outputs / TASK / 'sweep'}")
        return
    records = collect(args.outputs)
    if not records:
        raise SystemExit(f"no finished {TASK} record under {args.outputs} or {HERE / 'records'}")
    print(table(records))
    print(f"wrote {write(records, args.note)}")
    print(json.dumps({method_name(r): len(r.get('curve') or []) for _, r in records}))


if __name__ == "__main__":
    main()
