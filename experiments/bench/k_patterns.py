"""K patterns in one pass against K separate fits: the speed-up of ``attack.num_patterns=K``.

    nice -n 10 python experiments/bench/k_patterns.py          # EfficientNet-Lite0, 160 photo crops, 1 epoch, K=3
    python experiments/bench/k_patterns.py --device cuda --num-fit 1280 --rounds 5

Both arms fit what the app fits for seeds 0 ... K-1 (same model, loss, batch 32, epochs): each seed on
its own photo crops in its own loader order (``cache.fast_loader`` seeded with the seed, as
``python -m dominant_patterns`` builds it). The separate arm runs ``DominantPattern.fit`` once per seed,
the joint arm ``MultiSeedDominant.fit_many`` over the K loaders (one forward of K * (B + 1) rows per step).
After a warm-up, the rounds alternate which arm goes first; the speed-up is the median over rounds of
(sum of the K separate fit seconds) / (joint fit seconds). It also prints the largest difference between
each seed's joint and separate pattern. Results go to ``experiments/bench/k_patterns-<device>.json``.
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

from dominant_patterns.attacks.dominant import DominantPattern
from dominant_patterns.attacks.multi_seed import MultiSeedDominant
from dominant_patterns.cache import fast_loader
from dominant_patterns.data import SplitDataset, build_dataset
from dominant_patterns.devices import resolve_device
from dominant_patterns.loops import TrainerSettings
from dominant_patterns.models import ClassifierWrapper, build_model

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
    deltas = MultiSeedDominant(model, XI, trainer=settings, seed=seeds[0], loss=loss).fit_many(
        loaders(model, sets, seeds, settings.batch_size))
    sync(model.device)
    return time.perf_counter() - start, deltas.cpu()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--loss", default="cos", help="cos (Table A.1's), ed, kld")
    parser.add_argument("--k", type=int, default=3, help="patterns (seeds 0 ... k-1)")
    parser.add_argument("--num-fit", type=int, default=160, help="photo crops per seed")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds of both arms (after one warm-up)")
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

    diff = (patterns["joint"] - patterns["separate"]).abs().flatten(1).max(1).values.tolist()
    steps = args.epochs * -(-args.num_fit // args.batch_size)
    result = {
        "model": args.model, "loss": args.loss, "k": args.k, "num_fit": args.num_fit, "epochs": args.epochs,
        "batch_size": args.batch_size, "steps_per_fit": steps, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "threads": torch.get_num_threads(), "rounds": rounds,
        "median_separate_seconds": statistics.median(r["separate"] for r in rounds),
        "median_joint_seconds": statistics.median(r["joint"] for r in rounds),
        "median_speedup": statistics.median(r["speedup"] for r in rounds),
        "max_abs_pattern_difference": diff,
        "bitwise_equal": bool(torch.equal(patterns["joint"], patterns["separate"])),
    }
    out = args.out or HERE / f"k_patterns-{device.type}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n| {args.model}, {args.k} seeds x {args.num_fit} crops x {args.epochs} epoch(s), batch {args.batch_size}, "
          f"{device} ({result['threads']} threads) | seconds (median of {args.rounds}) |\n|---|---|\n"
          f"| {args.k} separate fits | {result['median_separate_seconds']:.1f} |\n"
          f"| one {args.k}-pattern fit | {result['median_joint_seconds']:.1f} |\n"
          f"| speed-up | {result['median_speedup']:.2f}x |\n\n"
          f"max |joint - separate| per seed: {', '.join(f'{d:.2e}' for d in diff)} "
          f"(xi = {XI:.4f}; bitwise equal: {result['bitwise_equal']}); written to {out}")


if __name__ == "__main__":
    main()
