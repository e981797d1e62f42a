"""Which input side suits EfficientNet-Lite0/1/2 here: clean accuracy on labelled photo crops at each size.

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 .venv/bin/python experiments/input_size/measure.py

For each model and side, the network is built for that side (the port pads its convolutions statically
for the image size it is built with), and the same seeded random crops of scikit-image photographs with
a clear ImageNet class are resized to it (the embedded pipeline's bilinear resize). Top-1 accuracy: the
prediction is in the photo's set of acceptable classes; confidence: the softmax mass on that set.
Writes experiments/input_size/README.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from dominant_patterns.data.photos import load_photo, random_crops
from dominant_patterns.models.classifier import build_model

#: photo -> (acceptable ImageNet class indices, why). Only photos whose subject has ImageNet classes.
LABELLED_PHOTOS: dict[str, tuple[tuple[int, ...], str]] = {
    "chelsea": ((281, 282, 285), "a tabby cat: tabby, tiger cat, Egyptian cat"),
    "coffee": ((967, 968, 504), "a cup of coffee on a saucer: espresso, cup, coffee mug"),
    "rocket": ((657, 744), "a rocket on its launch pad: missile, projectile"),
    "stereo_motorcycle": ((665, 670, 535), "a motorcycle (no such class): moped, motor scooter, disk brake"),
    "astronaut": ((812, 518, 557), "an astronaut with a shuttle model, helmet, flag: space shuttle, crash helmet, "
                                   "flagpole"),
    "camera": ((872, 759, 732), "a cameraman at a tripod: tripod, reflex camera, Polaroid camera"),
}
MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
SIDES = (224, 240, 260)
NOMINAL = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
HERE = Path(__file__).resolve().parent


@torch.no_grad()
def measure(model_name: str, side: int, crops: int, seed: int, min_scale: float) -> dict[str, float]:
    """Top-1 accuracy and mean softmax mass of the acceptable set over every photo's crops."""
    model = build_model(model_name, input_size=side)
    hits, mass, per_photo = [], [], {}
    for i, (photo, (classes, _)) in enumerate(LABELLED_PHOTOS.items()):
        x = random_crops([load_photo(photo)], crops, side, seed + i, min_scale=min_scale).float() / 255
        probs = torch.cat([model(x[j:j + 32]).softmax(-1) for j in range(0, len(x), 32)])
        wanted = torch.tensor(classes)
        hit = torch.isin(probs.argmax(-1), wanted).float()
        hits.append(hit)
        mass.append(probs[:, wanted].sum(-1))
        per_photo[photo] = float(hit.mean())
    acc, conf = torch.cat(hits), torch.cat(mass)
    return {"accuracy": float(acc.mean()), "accuracy_se": float(acc.std() / len(acc) ** 0.5),
            "confidence": float(conf.mean()), **{f"acc/{k}": v for k, v in per_photo.items()}}


def choose(results: list[tuple[int, dict[str, float]]], nominal: int) -> int:
    """224 or the nominal side: the higher top-1 when it differs by more than two standard errors of the
    difference, else the higher confidence (the same crops at both sides)."""
    (a_side, a), (b_side, b) = [(s, r) for s, r in results if s == 224][0], [(s, r) for s, r in results
                                                                             if s == nominal][0]
    if a_side == b_side:
        return a_side
    margin = 2 * (a["accuracy_se"] ** 2 + b["accuracy_se"] ** 2) ** 0.5
    if abs(a["accuracy"] - b["accuracy"]) > margin:
        return a_side if a["accuracy"] > b["accuracy"] else b_side
    return a_side if a["confidence"] >= b["confidence"] else b_side


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crops", type=int, default=64, help="crops per photo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-scale", type=float, default=0.25, help="smallest crop area (fraction of the square)")
    parser.add_argument("--out", type=Path, default=HERE / "README.md")
    args = parser.parse_args()
    torch.manual_seed(0)
    start = time.time()
    rows = []
    for name in MODELS:
        for side in SIDES:
            r = measure(name, side, args.crops, args.seed, args.min_scale)
            rows.append((name, side, r))
            print(f"{name} @ {side}: top-1 {r['accuracy']:.1%} ± {r['accuracy_se']:.1%}, "
                  f"confidence {r['confidence']:.1%}", flush=True)
    choice = {name: choose([(side, r) for n, side, r in rows if n == name], NOMINAL[name]) for name in MODELS}
    (HERE / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                   "rows": rows, "choice": choice}, indent=1))
    photos = list(LABELLED_PHOTOS)
    n = args.crops * len(photos)
    lines = [
        "# Input side of the embedded EfficientNet-Lite models",
        "",
        "Clean top-1 accuracy (prediction in the photo's set of acceptable ImageNet classes, ± its standard "
        "error) and mean softmax mass of that set, on the same seeded random crops of scikit-image photographs "
        f"({args.crops} per photo, {n} in all, crop area {args.min_scale:g}-1 of the short side's square, random "
        "flips, bilinear resize as in the embedded datasets), each model built for the side it runs at (the port's "
        "static 'same' padding depends on it). Nominal sides: Lite0 224, Lite1 240, Lite2 260.",
        "",
        "Command (CPU, 2 cores; wall time below):",
        "",
        "```",
        "MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 .venv/bin/python experiments/input_size/measure.py"
        + (f" --crops {args.crops}" if args.crops != 64 else "") + (f" --seed {args.seed}" if args.seed else ""),
        "```",
        "",
        "| model | side | top-1 (%) | confidence (%) | " + " | ".join(photos) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(photos),
    ]
    for name, side, r in rows:
        mark = " (nominal)" if NOMINAL[name] == side else ""
        pick = " **chosen**" if choice[name] == side else ""
        lines.append(f"| {name} | {side}{mark}{pick} | {r['accuracy'] * 100:.1f} ± {r['accuracy_se'] * 100:.1f} | "
                     f"{r['confidence'] * 100:.1f} | " + " | ".join(f"{r[f'acc/{p}'] * 100:.0f}" for p in photos)
                     + " |")
    lines += ["", "Per-photo columns: top-1 (%) on that photo's crops. Labelled photos (photo: acceptable "
              "classes):", ""]
    lines += [f"- `{p}` {list(c)}: {why}" for p, (c, why) in LABELLED_PHOTOS.items()]
    lines += ["", "Choice between 224 and the nominal side (Lite0 stays at 224, the reference): the higher top-1 "
              "when the two differ by more than two standard errors of the difference, else the higher "
              "confidence: "
              + ", ".join(f"{k} {v}" for k, v in choice.items())
              + " (`dominant_patterns/model_zoo.py` EFFICIENTNET_LITE).", "",
              f"Wall time: {time.time() - start:.0f} s (on the 2 shared cores of the development machine).", ""]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}; choice {choice}")


if __name__ == "__main__":
    main()
