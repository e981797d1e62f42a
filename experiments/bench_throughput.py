"""Fit and evaluation throughput of our loop against a naive reference loop, measured in one run.

    python experiments/bench_throughput.py            # auto: CUDA when present, else a short CPU version
    python experiments/bench_throughput.py --device cpu --models efficientnet_lite0

For each model (random-init weights; the speed does not depend on them):

* naive: fp32, parameters requiring grad (backward also computes weight gradients), f(delta) in a
  separate forward, a DataLoader decoding JPEG files every step, default memory format, a host
  sync per step (``loss.item()``);
* ours fp32 / bf16: ``DominantPattern.fit`` (frozen model with its BatchNorm folded into the convolutions
  as the app does by default, one forward of B + 1 rows, channels-last, no per-step sync) on the
  decoded-image cache built from the same JPEGs, random crops and flips done on the device.

Then the demo's own fit (EfficientNet-Lite0 with its weights, photo crops, batch 32) with BatchNorm
unfolded vs folded (vs folded + ``torch.compile`` with ``--demo-compile``), side by side
(``experiments/bench/demo_fit.py``).

The variants run interleaved in rounds in one process (median per variant), so the ratios hold
even when other processes share the machine. FLOPs per step (forward + input-gradient backward)
come from ``torch.utils.flop_counter.FlopCounterMode``; the roofline is a bf16 matrix product
measured in the same run. Results go to ``experiments/bench/<device>.md``.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from dominant_patterns.analysis.metrics import evaluate_patterns
from dominant_patterns.attacks.dominant import DominantPattern
from dominant_patterns.core.checkpoint import Checkpointer
from dominant_patterns.core.loops import TrainerSettings
from dominant_patterns.data.datasets import TensorImageDataset, build_dataset, skip_none_collate
from dominant_patterns.data.image_cache import cache_dataset
from dominant_patterns.data.loaders import DeviceLoader
from dominant_patterns.models.classifier import ClassifierWrapper, build_model

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "bench"))
import demo_fit  # noqa: E402  (experiments/bench/demo_fit.py)

XI = 10 / 255
PAPER_IMAGE_STEPS = 400_000  # 40,000 images x 10 epochs


@dataclass
class Plan:
    """Batch size, steps per round, rounds and eval images for one model on one device kind."""

    batch: int
    steps: int
    rounds: int
    eval_images: int


GPU_PLAN = {"vgg19": Plan(32, 20, 5, 2048), "resnet50": Plan(32, 20, 5, 2048),
            "efficientnet_lite0": Plan(32, 20, 5, 2048)}
# The CPU plan is short (a 2-core CPU shared with other jobs): small batches, few steps.
CPU_PLAN = {"vgg19": Plan(1, 1, 2, 2), "resnet50": Plan(2, 1, 3, 4), "efficientnet_lite0": Plan(8, 1, 4, 16)}


@dataclass
class Row:
    model: str
    batch: int
    images_per_s: dict[str, float] = field(default_factory=dict)
    eval_images_per_s: dict[str, float] = field(default_factory=dict)
    peak_mem_gib: dict[str, float] = field(default_factory=dict)
    gflop_per_image: float = float("nan")
    cache_build_s: float = float("nan")
    spread: dict[str, float] = field(default_factory=dict)
    #: BatchNorm layers folded into convolutions in "ours" (as the app does; 0 for VGG19)
    bn_folded: int = 0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {name} ({torch.get_num_threads()} threads)"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# ---------------------------------------------------------------------------------------------
# Data: temporary JPEGs (the naive loop decodes them every step; ours caches them once)


def write_jpegs(folder: Path, count: int, seed: int = 0) -> None:
    """Smooth random photos-like images of ImageNet's typical size (500x375), JPEG quality 90."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        low = torch.from_numpy(rng.random((1, 3, 12, 16), dtype=np.float32))
        img = F.interpolate(low, size=(375, 500), mode="bicubic", align_corners=False)[0]
        img = (img + 0.08 * torch.from_numpy(rng.standard_normal((3, 375, 500), dtype=np.float32))).clamp(0, 1)
        array = (img.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        Image.fromarray(array).save(folder / f"img_{i:05d}.jpg", quality=90)


def cycle(loader: Iterable[Any]) -> Iterator[Any]:
    while True:
        yield from loader


class Take:
    """The next ``n`` batches of an endless iterator (a loader for one round of ``fit``)."""

    def __init__(self, source: Iterator[Any], n: int) -> None:
        self.source, self.n = source, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(self.source, self.n)


# ---------------------------------------------------------------------------------------------
# The two loops


def naive_steps(model: ClassifierWrapper, batches: Iterator[Any], steps: int, state: dict[str, Any]) -> None:
    """The reference loop: weight gradients on, two forwards, per-step host sync, default memory format."""
    device = model.device
    delta, opt = state["delta"], state["opt"]
    for _ in range(steps):
        x, _ = next(batches)
        x = x.to(device).float() / 255
        f_delta = model(delta[None])
        f_adv = model((x + delta).clamp(0, 1))
        loss = (1 - F.cosine_similarity(f_delta.expand_as(f_adv), f_adv, dim=1)).mean()
        opt.zero_grad()
        model.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            delta.clamp_(-XI, XI)
        state["losses"].append(loss.item())


def our_steps(attack: DominantPattern, batches: Iterator[Any], steps: int) -> None:
    attack.checkpointer = Checkpointer()  # fresh: an attack's checkpointer resumes past a finished fit
    attack.fit(Take(batches, steps))


def timed(fn: Callable[[], None], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def flops_per_step(attack: DominantPattern, x: torch.Tensor) -> float:
    """FLOPs of one step of our loop: forward of B + 1 rows and the input-gradient backward."""
    delta = torch.zeros(attack.shape, device=attack.device, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        attack.loss(x, delta).backward()
    return float(counter.get_total_flops())


def matmul_ceiling(device: torch.device, dtype: torch.dtype, n: int, repeats: int) -> float:
    """Median FLOP/s of an n x n x n matrix product in ``dtype`` (random inputs, several buffers)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    pairs = [(torch.randn(n, n, generator=g).to(device, dtype), torch.randn(n, n, generator=g).to(device, dtype))
             for _ in range(3)]
    for a, b in pairs:
        a @ b
    times = []
    for i in range(repeats):
        a, b = pairs[i % 3]
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            a @ b
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            times.append(timed(lambda a=a, b=b: a @ b, device))
    return 2 * n**3 / statistics.median(times)


# ---------------------------------------------------------------------------------------------


def bench_model(name: str, plan: Plan, device: torch.device, folder: Path, cache_dir: Path,
                naive_workers: int, input_size: int | None = None) -> Row:
    """One model's row; ``input_size`` overrides the model's (a quick smoke run), else 224."""
    row = Row(model=name, batch=plan.batch)
    model = build_model(name, weights=None, input_size=input_size).to(device)
    size = model.input_size
    fit_files = build_dataset({"name": "folder", "root": str(folder), "eval_size": 1}, split="fit", image_size=size)

    # naive: weights require grad, default memory format, decode JPEGs every step
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    naive_loader = DataLoader(fit_files, batch_size=plan.batch, shuffle=True, num_workers=naive_workers,
                              collate_fn=skip_none_collate, drop_last=True, persistent_workers=naive_workers > 0,
                              pin_memory=device.type == "cuda")
    naive_batches = cycle(naive_loader)
    delta = torch.zeros(3, size, size, device=device, requires_grad=True)
    naive_state = {"delta": delta, "opt": torch.optim.Adam([delta], lr=0.01), "losses": []}

    # ours: the decoded-image cache of the same files, frozen channels-last model
    start = time.perf_counter()
    cached, _ = cache_dataset(fit_files, cache_dir, num_workers=naive_workers)
    row.cache_build_s = time.perf_counter() - start
    ours_batches = cycle(DeviceLoader(cached, batch_size=plan.batch, shuffle=True, seed=0, device=device,
                                      drop_last=True))
    frozen = build_model(name, weights=None, input_size=input_size).to(device).to(memory_format=torch.channels_last)
    frozen.load_state_dict(model.state_dict())
    row.bn_folded = frozen.fold_batchnorm()  # trainer.fold_bn=true, the app's default for DominantPattern
    attacks = {p: DominantPattern(frozen, XI, trainer=TrainerSettings(precision=p, batch_size=plan.batch, epochs=1,
                                                                      progress=False, log_every=10**9))
               for p in ("fp32", "bf16")}

    variants: dict[str, Callable[[], None]] = {
        "naive": lambda: naive_steps(model, naive_batches, plan.steps, naive_state),
        "fp32": lambda: our_steps(attacks["fp32"], ours_batches, plan.steps),
        "bf16": lambda: our_steps(attacks["bf16"], ours_batches, plan.steps),
    }
    for fn in variants.values():  # warm-up: allocator, cuDNN autotuning, first decode
        fn()
    samples: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(plan.rounds):
        for key, fn in variants.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            samples[key].append(plan.steps * plan.batch / timed(fn, device))
            if device.type == "cuda":
                row.peak_mem_gib[key] = max(row.peak_mem_gib.get(key, 0.0),
                                            torch.cuda.max_memory_allocated(device) / 2**30)
    for key, values in samples.items():
        row.images_per_s[key] = statistics.median(values)
        row.spread[key] = (max(values) - min(values)) / statistics.median(values)
    gc.collect()

    x, _ = next(ours_batches)
    row.gflop_per_image = flops_per_step(attacks["fp32"], x.float() / 255) / plan.batch / 1e9

    # evaluation: one pattern on cached eval images, clean predictions given (they are cached per model)
    eval_images = torch.randint(0, 256, (plan.eval_images, 3, size, size), dtype=torch.uint8,
                                generator=torch.Generator().manual_seed(1))
    eval_set = TensorImageDataset(eval_images, torch.full((plan.eval_images,), -1), name="bench", split="eval",
                                  label_space=None)
    pattern = {"pattern": (torch.rand(3, size, size) * 2 - 1) * XI}
    eval_batch = min(128, plan.eval_images) if device.type == "cuda" else plan.batch
    for precision in ("fp32", "bf16"):
        loader = DeviceLoader(eval_set, batch_size=eval_batch, shuffle=False, device=device)
        clean = torch.zeros(plan.eval_images, dtype=torch.long)
        run = lambda loader=loader, precision=precision, clean=clean: evaluate_patterns(  # noqa: E731
            frozen, pattern, loader, precision=precision, progress=False, clean_pred=clean)
        run()
        times = [timed(run, device) for _ in range(2 if device.type == "cuda" else 1)]
        row.eval_images_per_s[precision] = plan.eval_images / min(times)
    return row


def fmt(value: float, digits: int = 1) -> str:
    """``digits`` decimals, or 3 significant digits for values under 10; n/a for NaN."""
    if value != value:
        return "n/a"
    return f"{value:,.{digits}f}" if abs(value) >= 10 else f"{value:.3g}"


def render(rows: list[Row], info: dict[str, Any]) -> str:
    bf16_ceiling = info["bf16_matmul_tflops"] * 1e12
    fp32_ceiling = info["fp32_matmul_tflops"] * 1e12
    lines = [
        "| model | batch | naive img/s | ours fp32 img/s | ours bf16 img/s | fp32/naive | bf16/naive | "
        "GFLOP/img | bf16 % of bf16 matmul | fp32 % of fp32 matmul | eval img/s fp32 | eval img/s bf16 | "
        "peak GiB naive/fp32/bf16 | cache build s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ips = r.images_per_s
        frac_bf16 = ips["bf16"] * r.gflop_per_image * 1e9 / bf16_ceiling * 100
        frac_fp32 = ips["fp32"] * r.gflop_per_image * 1e9 / fp32_ceiling * 100
        mem = "/".join(fmt(r.peak_mem_gib.get(k, float("nan")), 2) for k in ("naive", "fp32", "bf16"))
        lines.append(
            f"| {r.model} | {r.batch} | {fmt(ips['naive'])} | {fmt(ips['fp32'])} | {fmt(ips['bf16'])} | "
            f"{ips['fp32'] / ips['naive']:.2f}x | {ips['bf16'] / ips['naive']:.2f}x | {r.gflop_per_image:.2f} | "
            f"{frac_bf16:.1f}% | {frac_fp32:.1f}% | {fmt(r.eval_images_per_s['fp32'])} | "
            f"{fmt(r.eval_images_per_s['bf16'])} | {mem} | {r.cache_build_s:.1f} |")
    lines.append("")
    lines.append("| model | paper setting (400k image steps) in bf16 | 10k-image evaluation (one pattern, bf16) | "
                 "round-to-round spread naive/fp32/bf16 |")
    lines.append("|---|---|---|---|")
    for r in rows:
        spread = "/".join(f"{r.spread[k] * 100:.0f}%" for k in ("naive", "fp32", "bf16"))
        lines.append(f"| {r.model} | {PAPER_IMAGE_STEPS / r.images_per_s['bf16']:,.0f} s | "
                     f"{10_000 / r.eval_images_per_s['bf16']:,.1f} s | {spread} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--models", default="efficientnet_lite0,resnet50,vgg19", help="comma list, or none")
    parser.add_argument("--naive-workers", type=int, default=None,
                        help="DataLoader workers of the naive loop (default: 0 on CPU, min(8, cores) on CUDA)")
    parser.add_argument("--out", default=str(ROOT / "bench"), help="folder for <device>.md and .json")
    parser.add_argument("--note", default="", help="a line added to the report (e.g. machine load)")
    parser.add_argument("--render", metavar="JSON", help="only rewrite the .md from an earlier run's .json")
    parser.add_argument("--demo-steps", type=int, default=None, help="demo fit: steps per round (CPU 3, GPU 10)")
    parser.add_argument("--demo-rounds", type=int, default=None, help="demo fit: rounds (CPU 4, GPU 5)")
    parser.add_argument("--demo-compile", action=argparse.BooleanOptionalAction, default=None,
                        help="demo fit: add folded + torch.compile (default: on with CUDA, off on CPU, where it "
                             "compiled for ~2 min and ran slower than eager)")
    parser.add_argument("--demo-full-epochs", type=int, default=0,
                        help="demo fit: also fit each variant over the whole demo loader (3 = the demo's 120 steps)")
    parser.add_argument("--skip-demo", action="store_true", help="no demo-fit comparison")
    args = parser.parse_args(argv)
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        rows = [Row(**r) for r in saved["rows"]]
        info = saved["info"]
        if saved.get("demo_fit"):
            info["demo_fit"] = demo_fit.DemoFitResult(**saved["demo_fit"])
        device = torch.device("cpu" if info["device"].startswith("CPU") else "cuda")
        plans = GPU_PLAN if device.type == "cuda" else CPU_PLAN
        args.note = args.note or info.get("note", "")
        print(f"written: {write_report(rows, info, plans, info['naive_workers'], device, args)}")
        return 0
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    plans = GPU_PLAN if device.type == "cuda" else CPU_PLAN
    naive_workers = args.naive_workers if args.naive_workers is not None else (
        0 if device.type == "cpu" else min(8, os.cpu_count() or 1))
    warnings.filterwarnings("ignore", category=UserWarning)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    name = device_name(device)
    print(f"device: {name} | torch {torch.__version__} | naive DataLoader workers: {naive_workers}", flush=True)
    started = time.perf_counter()
    if device.type == "cuda":
        bf16 = matmul_ceiling(device, torch.bfloat16, 8192, 30)
        fp32 = matmul_ceiling(device, torch.float32, 8192, 10)
    else:
        bf16 = matmul_ceiling(device, torch.bfloat16, 1024, 5)
        fp32 = matmul_ceiling(device, torch.float32, 1024, 5)
    info = {"device": name, "torch": torch.__version__, "python": sys.version.split()[0],
            "bf16_matmul_tflops": bf16 / 1e12, "fp32_matmul_tflops": fp32 / 1e12,
            "naive_workers": naive_workers, "threads": torch.get_num_threads(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": " ".join(sys.argv),
            "note": args.note}
    print(f"measured matmul ceiling: bf16 {bf16 / 1e12:.2f} TFLOP/s, fp32 {fp32 / 1e12:.2f} TFLOP/s", flush=True)

    rows: list[Row] = []
    path: Path | None = None
    with tempfile.TemporaryDirectory(prefix="bench_") as tmp:
        folder, cache_dir = Path(tmp) / "jpegs", Path(tmp) / "cache"
        folder.mkdir()
        names = [m for m in args.models.split(",") if m and m != "none"]
        need = max(((plans[m].steps * (plans[m].rounds + 1) + 1) * plans[m].batch for m in names), default=0) + 2
        write_jpegs(folder, need if names else 0)
        for model_name in names:
            t0 = time.perf_counter()
            row = bench_model(model_name, plans[model_name], device, folder, cache_dir, naive_workers)
            rows.append(row)
            print(f"{model_name}: " + ", ".join(f"{k} {v:.1f} img/s" for k, v in row.images_per_s.items())
                  + f" ({time.perf_counter() - t0:.0f}s)", flush=True)
            shutil.rmtree(cache_dir, ignore_errors=True)
            info["total_seconds"] = time.perf_counter() - started
            path = write_report(rows, info, plans, naive_workers, device, args)
    if not args.skip_demo:
        gpu = device.type == "cuda"
        steps = args.demo_steps or (10 if gpu else 3)
        rounds = args.demo_rounds or (5 if gpu else 4)
        compile_variant = gpu if args.demo_compile is None else args.demo_compile
        print(f"demo fit: {steps} steps x {rounds} rounds, load average {os.getloadavg()[0]:.1f}", flush=True)
        result = demo_fit.run(device, steps=steps, rounds=rounds, compile_variant=compile_variant,
                              full_epochs=args.demo_full_epochs)
        result.note = f"1-min load average at the end of the demo fit: {os.getloadavg()[0]:.1f}."
        info["demo_fit"] = result
        info["total_seconds"] = time.perf_counter() - started
        path = write_report(rows, info, plans, naive_workers, device, args)
    if rows:
        print("\n" + render(rows, info), flush=True)
    if "demo_fit" in info:
        print("\n" + demo_fit.render(info["demo_fit"]), flush=True)
    print(f"\nwritten: {path}")
    return 0


def write_report(rows: list[Row], info: dict[str, Any], plans: dict[str, Plan], naive_workers: int,
                 device: torch.device, args: argparse.Namespace) -> Path:
    """Write ``<device>.md`` and ``<device>.json`` (after every model, so a cut run keeps its rows)."""
    name = info["device"]
    table = render(rows, info) if rows else "(no model rows: --models none)"
    if not args.render:  # a re-render keeps the measured run's load
        info["load_average"] = os.getloadavg()[0]

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = slug(("cpu-" if device.type == "cpu" else "") + name.replace("CPU ", ""))
    plan_text = ", ".join(f"{m}: batch {p.batch}, {p.steps} steps x {p.rounds} rounds" for m, p in plans.items()
                          if m in [r.model for r in rows])
    text = (f"# Fit and evaluation throughput: {name}\n\n"
            f"`{info['command']}` ({info['date']}, torch {info['torch']}, Python {info['python']}, "
            f"{info['threads']} torch threads, {info['total_seconds']:.0f} s in all, 1-min load average "
            f"{info.get('load_average', float('nan')):.1f} at the end)\n\n"
            f"Measured in one process, the variants interleaved in rounds (medians): {plan_text}. "
            f"Matrix-product ceiling measured in the same run: bf16 {info['bf16_matmul_tflops']:.2f} TFLOP/s, "
            f"fp32 {info['fp32_matmul_tflops']:.2f} TFLOP/s. Naive DataLoader workers: {naive_workers}. "
            "GFLOP/img: forward + input-gradient backward of our step divided by the batch "
            "(FlopCounterMode; the pattern row is counted as overhead). Random-init weights.\n\n"
            + (f"{args.note}\n\n" if args.note else "") + table + "\n")
    demo = info.get("demo_fit")
    if rows:
        folded = ", ".join(f"{r.model} {r.bn_folded}" for r in rows)
        text += f"\nBatchNorm layers folded in \"ours\" (the app's default, trainer.fold_bn=true): {folded}.\n"
    if demo is not None:
        text += "\n## BatchNorm folding on the demo fit\n\n" + demo_fit.render(demo) + "\n"
    saved = {k: v for k, v in info.items() if k != "demo_fit"}
    payload = {"info": saved, "rows": [asdict(r) for r in rows],
               **({"demo_fit": demo.as_dict()} if demo is not None else {})}
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=1))
    (out / f"{stem}.md").write_text(text)
    return out / f"{stem}.md"


if __name__ == "__main__":
    sys.exit(main())
