"""Score any saved ``pattern.pt`` on any model and dataset (the transfer matrix's entry point).

    python -m dominant_patterns.evaluate pattern=outputs/table2/multiruns/.../0/pattern.pt model=resnet50
    python -m dominant_patterns.evaluate source.task=table2 source.model=vgg19 model=resnet50 dataset=imagenet

Without ``pattern``, the newest finished run under ``paths.output_dir`` whose identity matches
``source`` (task, model, dataset, loss, attack, seed, target class) provides the pattern. Helpers
here (pattern lookup, model/loader setup, run records) are shared by ``layers`` and ``transfer``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, NamedTuple

import hydra
import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Subset

from dominant_patterns.artifacts import load_pattern
from dominant_patterns.data import SplitDataset, build_dataset, make_loader
from dominant_patterns.errors import UserInputError
from dominant_patterns.metrics import evaluate_patterns, noise_floors
from dominant_patterns.models import ClassifierWrapper
from dominant_patterns.report import load_records, newest_per_cell, select
from dominant_patterns.run import CONFIG_DIR, container, load_model, seed_everything
from dominant_patterns.tracking import RunRecorder, git_commit
from dominant_patterns.trainer import TrainerSettings

log = logging.getLogger("dominant_patterns.evaluate")

SOURCE_KEYS = ("model", "dataset", "loss", "attack", "seed", "target_class")


def find_source_run(output_dir: str | Path, source: dict[str, Any]) -> Path:
    """The folder of the newest finished run matching ``source`` (``task`` may be a name or a list)."""
    tasks = source.get("task")
    if isinstance(tasks, str):
        tasks = [tasks]
    df = load_records(output_dir, tasks)
    if not df.empty:
        df = df[df["kind"].fillna("run") == "run"]
    filters = {k: source[k] for k in SOURCE_KEYS if source.get(k) is not None}
    if "target_class" not in filters:
        filters["target_class"] = None
    match = select(newest_per_cell(df), filters) if not df.empty else df
    match = match[[(Path(d) / "pattern.pt").is_file() for d in match["run_dir"]]] if not match.empty else match
    if match.empty:
        raise UserInputError(f"no finished run with a pattern.pt under {output_dir} matches source={source} "
                             f"(tasks {tasks or 'any'}); run that experiment first or pass pattern=PATH")
    if filters.get("seed") is None and "seed" in match.columns:
        match = match.sort_values(["seed", "timestamp"], ascending=[True, False])
    else:
        match = match.sort_values("timestamp", ascending=False)
    return Path(match.iloc[0]["run_dir"])


def resolve_pattern(cfg: DictConfig) -> tuple[torch.Tensor, dict[str, Any], Path]:
    """``(delta, meta, path)`` from ``cfg.pattern`` (file or run folder) or the ``cfg.source`` lookup."""
    if cfg.get("pattern"):
        path = Path(str(cfg.pattern)).expanduser()
        if path.is_dir():
            path = path / "pattern.pt"
    else:
        source = OmegaConf.to_container(cfg.source, resolve=True)
        path = find_source_run(cfg.paths.output_dir, source) / "pattern.pt"  # type: ignore[arg-type]
    obj = load_pattern(path)
    delta = obj.pop("delta").float()
    log.info("pattern %s (model %s, fit on %s)", path, obj.get("model"), obj.get("dataset"))
    return delta, obj, path


class PatternJob(NamedTuple):
    """What every entry point that scores a saved pattern starts from."""

    settings: TrainerSettings
    model: ClassifierWrapper
    delta: torch.Tensor
    meta: dict[str, Any]
    path: Path
    xi: float


def start_pattern_job(cfg: DictConfig) -> PatternJob:
    """Seed, build ``cfg.model`` and load the pattern resized to it (evaluate, layers, transfer)."""
    seed_everything(int(cfg.seed))
    settings = TrainerSettings.from_config(container(cfg.trainer))
    model = load_model(cfg, settings)
    delta, meta, path = resolve_pattern(cfg)
    xi = float(meta.get("xi") or delta.abs().max())
    return PatternJob(settings, model, fit_to_model(delta, model, xi), meta, path, xi)


def fit_to_model(delta: torch.Tensor, model: ClassifierWrapper, xi: float) -> torch.Tensor:
    """Resize a pattern made for another input size (bilinear), keeping ``|delta| <= xi``."""
    size = model.input_size
    if delta.shape[-1] == size and delta.shape[-2] == size:
        return delta
    log.warning("resizing the pattern from %s to %dx%d for %s", tuple(delta.shape[-2:]), size, size, model.name)
    resized = F.interpolate(delta[None], size=(size, size), mode="bilinear", align_corners=False)[0]
    return resized.clamp(-xi, xi)


def limit(dataset: SplitDataset, n: int | None) -> SplitDataset | Subset:
    """The first ``n`` images of a split (all when ``n`` is None)."""
    return dataset if not n or n >= len(dataset) else Subset(dataset, range(int(n)))


def source_identity(meta: dict[str, Any], path: Path) -> dict[str, Any]:
    return {"source_model": meta.get("model"), "source_dataset": meta.get("dataset"),
            "source_task": meta.get("task_name"), "pattern_path": str(path), "loss": meta.get("loss"),
            "loss_layer": meta.get("loss_layer", "logits"), "attack": meta.get("attack"),
            "seed": meta.get("seed"), "xi": meta.get("xi"), "xi_255": meta.get("xi_255")}


def start_record(cfg: DictConfig, kind: str, identity: dict[str, Any]) -> tuple[Path, RunRecorder]:
    """Output folder and a recorder (metrics.json + W&B) for a non-fitting job."""
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    (out_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    identity = {"kind": kind, "task_name": cfg.task_name, "tags": list(cfg.tags), **identity, "commit": git_commit()}
    return out_dir, RunRecorder(out_dir, container(cfg.logger), container(cfg), identity)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Score the pattern on ``cfg.model`` over the eval split of ``cfg.dataset``; write metrics.json."""
    settings, model, delta, meta, path, xi = start_pattern_job(cfg)
    data_cfg = container(cfg.dataset)
    if cfg.get("max_images"):  # datasets with a max_images key decode only that many
        data_cfg = {**data_cfg, "max_images": data_cfg.get("max_images") or int(cfg.max_images)}
    eval_set = build_dataset(data_cfg, split="eval", image_size=model.input_size, seed=int(cfg.seed))
    loader = make_loader(limit(eval_set, cfg.get("max_images")), batch_size=settings.eval_batch_size, shuffle=False,
                         num_workers=int(cfg.dataset.get("num_workers") or 0))
    identity = {**source_identity(meta, path), "model": model.name, "dataset": eval_set.name,
                "eval_dataset": eval_set.name, "eval_size": len(loader.dataset)}  # type: ignore[arg-type]
    out_dir, recorder = start_record(cfg, "evaluate", identity)
    exit_code = 1
    try:
        patterns = {"pattern": delta}
        if cfg.get("floors"):
            patterns.update(noise_floors(tuple(delta.shape), xi, int(cfg.seed)))
        start = time.perf_counter()
        result = evaluate_patterns(model, patterns, loader, precision=settings.precision,
                                   channels_last=settings.channels_last, progress=settings.progress,
                                   labels_match=eval_set.label_space is not None
                                   and eval_set.label_space == model.label_space)
        metrics = result.patterns["pattern"]
        results = {"metrics": metrics, "floors": {k: v for k, v in result.patterns.items() if k != "pattern"},
                   "timing": {"eval_seconds": time.perf_counter() - start}}
        recorder.log({"eval": metrics})
        recorder.finish(results)
        print(f"{meta.get('model')} pattern ({meta.get('dataset')}) on {model.name} / {eval_set.name}: "
              f"fooling {metrics['fooling_rate']:.1%}, dominance {metrics['dominance_ratio']:.1%} "
              f"({metrics['dominant_class_name']})", flush=True)
        exit_code = 0
        return results
    finally:
        recorder.close(exit_code)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> float:
    return float(evaluate(cfg)["metrics"]["fooling_rate"])


if __name__ == "__main__":
    main()
