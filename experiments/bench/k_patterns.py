"""K patterns in one pass against K separate fits: the speed-up of ``attack.num_patterns=K``.

    nice -n 10 python experiments/bench/k_patterns.py          # EfficientNet-Lite0, 160 photo crops, 1 epoch, K=3
    python experiments/bench/k_patterns.py --device cuda --num-fit 1280 --rounds 5

Both arms fit what the app fits for seeds 0 ... K-1 (same model, loss, batch 32, epochs): each seed on
its own photo crops in its own loader order (``cache.fast_loader`` seeded with the seed, as
``python -m dominant_patterns`` builds it). The separate arm runs ``DominantPattern.fit`` once per seed,
the joint arm ``DominantPattern.fit_many`` over the K loaders (one forward of K * (B + 1) rows per step).
After a warm-up, the rounds alternate which arm goes first; the speed-up is the median over rounds of
(sum of the K separate fit seconds) / (joint fit seconds). It also compares each seed's joint and separate
pattern: how far apart they are (the stacked pass rounds its convolutions differently from a (B + 1)-row
pass, and Adam's normalised step turns that into +-xi flips where a pixel's gradient is near zero) and
their fooling and dominance ratios on the seed's held-out crops. ``--rounding-control`` refits seed 0
alone in the contiguous memory format (the same maths, rounded differently) to show how far rounding
alone moves a pattern. Results go to
``experiments/bench/k_patterns-<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from dominant_patterns.analysis.metrics import evaluate_patterns
from dominant_patterns.attacks.dominant import DominantPattern
from dominant_patterns.core.devices import resolve_device
from dominant_patterns.core.loops import TrainerSettings
from dominant_patterns.data.datasets import SplitDataset, build_dataset
from dominant_patterns.data.loaders import fast_loader
from dominant_patterns.models.classifier import ClassifierWrapper, build_model

HERE = Path(__file__).resolve().parent
XI = 10 / 255


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fit_sets(model: ClassifierWrapper, seeds: list[int], num_fit: int) -> list[SplitDataset]:
    """Each seed's photo crops (``conf/dataset/photos.yaml`` with ``num_fit``), as the app builds them."""
    return [build_dataset({"name": "photos", "num_fit": num_fit, "num_eval": 8}, split="fit",
                          image_size=model.input_size, seed=s) for s in seeds]


def loaders(model: ClassifierWrapper, sets: list[SplitDataset], seeds: list[int], batch_size: int) -> list[Any]:
    return [fast_loader(ds, batch_size=batch_size, shuffle=True, seed=s, device=model.device)
            for ds, s in zip(sets, seeds, strict=True)]


def separate(model: ClassifierWrapper, sets: list[SplitDataset], seeds: list[int], settings: TrainerSettings,
             loss: str) -> tuple[float, torch.Tensor]:
    """K fits one after the other: (seconds, patterns [K, 3, S, S])."""
    sync(model.device)
    start = time.perf_counter()
    deltas = [DominantPattern(model, XI, trainer=settings, seed=s, loss=loss).fit(loader)
              for s, loader in zip(seeds, loaders(model, sets, seeds, settings.batch_size), strict=True)]
    sync(model.device)
    return time.perf_counter() - start, torch.stack(deltas).cpu()


def joint(model: ClassifierWrapper, sets: list[SplitDataset], seeds: list[int], settings: TrainerSettings,
          loss: str) -> tuple[float, torch.Tensor]:
    """The K fits in one pass: (seconds, patterns [K, 3, S, S])."""
    sync(model.device)
    start = time.perf_counter()
    deltas = DominantPattern(model, XI, trainer=settings, seed=seeds[0], loss=loss).fit_many(
        loaders(model, sets, seeds, settings.batch_size))
    sync(model.device)
    return time.perf_counter() - start, deltas.cpu()


def drift(a: torch.Tensor, b: torch.Tensor) -> dict[str, Any]:
    """How far pattern ``a`` is from ``b``."""
    diff = (a - b).abs()
    return {"bitwise_equal": bool(torch.equal(a, b)), "max_abs_difference": float(diff.max()),
            "mean_abs_difference_over_xi": float(diff.mean() / XI),
            "share_of_pixels_off_by_more_than_xi_over_10": float((diff > XI / 10).float().mean()),
            "cosine": float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))}


def describe_drift(row: dict[str, Any]) -> str:
    return (f"bitwise equal {row['bitwise_equal']}, max |diff| {row['max_abs_difference']:.2e}, "
            f"mean |diff| {row['mean_abs_difference_over_xi']:.1%} of xi, "
            f"{row['share_of_pixels_off_by_more_than_xi_over_10']:.1%} of values off by > xi/10, "
            f"cosine {row['cosine']:.4f}")


def compare(model: ClassifierWrapper, patterns: dict[str, torch.Tensor], seeds: list[int],
            num_eval: int) -> list[dict[str, Any]]:
    """Per seed: how the joint pattern differs from the separate one, and both on the seed's held-out crops."""
    out = []
    for k, seed in enumerate(seeds):
        a, b = patterns["joint"][k], patterns["separate"][k]
        row: dict[str, Any] = {"seed": seed, **drift(a, b)}
        if num_eval:
            eval_set = build_dataset({"name": "photos", "num_fit": 8, "num_eval": num_eval}, split="eval",
                                     image_size=model.input_size, seed=seed)
            loader = fast_loader(eval_set, batch_size=32, shuffle=False, device=model.device)
            scores = evaluate_patterns(model, {"joint": a, "separate": b}, loader, progress=False).patterns
            for arm in ("joint", "separate"):
                row[f"{arm}_fooling_rate"] = scores[arm]["fooling_rate"]
                row[f"{arm}_dominance_ratio"] = scores[arm]["dominance_ratio"]
                row[f"{arm}_dominant_class"] = scores[arm]["dominant_class_name"]
        out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--loss", default="cos", help="cos (Table A.1's), ed, kld")
    parser.add_argument("--k", type=int, default=3, help="patterns (seeds 0 ... k-1)")
    parser.add_argument("--num-fit", type=int, default=160, help="photo crops per seed")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds of both arms (after one warm-up)")
    parser.add_argument("--num-eval", type=int, default=64, help="held-out crops to score both patterns on (0: skip)")
    parser.add_argument("--rounding-control", action="store_true",
                        help="refit seed 0 alone, contiguous memory format: the drift rounding alone causes")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default: k_patterns-<device>.json here)")
    args = parser.parse_args()

    device = resolve_device(args.device)
    model = build_model(args.model).to(device).freeze()
    seeds = list(range(args.k))
    settings = TrainerSettings(epochs=args.epochs, batch_size=args.batch_size, progress=False, device=str(device))
    sets = fit_sets(model, seeds, args.num_fit)
    warm = fit_sets(model, seeds, args.batch_size)  # one step of each arm: kernels and caches warm
    separate(model, warm, seeds, replace(settings, epochs=1), args.loss)
    joint(model, warm, seeds, replace(settings, epochs=1), args.loss)

    rounds: list[dict[str, float]] = []
    patterns: dict[str, torch.Tensor] = {}
    for r in range(args.rounds):
        arms = (("separate", separate), ("joint", joint)) if r % 2 == 0 else (("joint", joint), ("separate", separate))
        times = {}
        for name, arm in arms:
            times[name], patterns[name] = arm(model, sets, seeds, settings, args.loss)
            print(f"round {r + 1}/{args.rounds}: {name} {times[name]:.1f}s", flush=True)
        rounds.append({**times, "speedup": times["separate"] / times["joint"]})

    per_seed = compare(model, patterns, seeds, args.num_eval)
    control = None
    if args.rounding_control:
        _, other = separate(model, sets[:1], seeds[:1], replace(settings, channels_last=False), args.loss)
        control = drift(other[0], patterns["separate"][0])
    steps = args.epochs * -(-args.num_fit // args.batch_size)
    result = {
        "model": args.model, "loss": args.loss, "k": args.k, "num_fit": args.num_fit, "epochs": args.epochs,
        "batch_size": args.batch_size, "steps_per_fit": steps, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "threads": torch.get_num_threads(), "rounds": rounds,
        "median_separate_seconds": statistics.median(r["separate"] for r in rounds),
        "median_joint_seconds": statistics.median(r["joint"] for r in rounds),
        "median_speedup": statistics.median(r["speedup"] for r in rounds),
        "per_seed": per_seed,
        "rounding_control_seed0_contiguous_vs_channels_last": control,
    }
    out = args.out or HERE / f"k_patterns-{device.type}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n| {args.model}, {args.k} seeds x {args.num_fit} crops x {args.epochs} epoch(s), batch {args.batch_size}, "
          f"{device} ({result['threads']} threads) | seconds (median of {args.rounds}) |\n|---|---|\n"
          f"| {args.k} separate fits | {result['median_separate_seconds']:.1f} |\n"
          f"| one {args.k}-pattern fit | {result['median_joint_seconds']:.1f} |\n"
          f"| speed-up | {result['median_speedup']:.2f}x |\n", flush=True)
    for row in per_seed:
        scores = (f"; fooling {row['joint_fooling_rate']:.1%} / {row['separate_fooling_rate']:.1%}, dominance "
                  f"{row['joint_dominance_ratio']:.1%} / {row['separate_dominance_ratio']:.1%} (joint / separate, "
                  f"{args.num_eval} held-out crops)" if args.num_eval else "")
        print(f"seed {row['seed']} joint vs separate: {describe_drift(row)}{scores}")
    if control is not None:
        print(f"rounding control, seed 0 separate fit contiguous vs channels-last: {describe_drift(control)}")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
