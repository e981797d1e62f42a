"""The Hydra app: fit a universal pattern, evaluate it beside noise floors, record everything.

    python -m dominant_patterns model=vgg19 dataset=coco dataset.root=/data/coco/train2017
"""

from __future__ import annotations

import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dominant_patterns.artifacts import save_examples_grid, save_pattern, save_pattern_png
from dominant_patterns.attacks.base import UniversalAttack
from dominant_patterns.cache import cache_if_enabled, cached_clean_predictions, fast_loader
from dominant_patterns.checkpoint import JOB_NOTES, Checkpointer, Interrupted, flat_config, previous_result
from dominant_patterns.config_checks import check_run_config
from dominant_patterns.data import SplitDataset, build_dataset, save_split_record, to_float_batch
from dominant_patterns.errors import UserInputError
from dominant_patterns.metrics import EvaluationResult, evaluate_patterns, noise_floors
from dominant_patterns.models import ClassifierWrapper, build_model
from dominant_patterns.schema import validate_config
from dominant_patterns.summary import format_summary
from dominant_patterns.sweep_status import record_job
from dominant_patterns.tracking import RunRecorder, git_commit
from dominant_patterns.trainer import NonFiniteLossError, TrainerSettings, resolve_device

log = logging.getLogger("dominant_patterns")

FLOORS = ("random_noise", "random_sign")
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def container(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def build_attack(cfg: DictConfig, model: ClassifierWrapper, settings: TrainerSettings,
                 recorder: RunRecorder) -> UniversalAttack:
    """Instantiate ``cfg.attack`` (a ``_target_`` class) with the runtime objects it needs."""
    params = container(cfg.attack)
    params.pop("name", None)
    factory = instantiate(params, _partial_=True, _convert_="all")
    return factory(model=model, xi=float(cfg.xi), trainer=settings, seed=int(cfg.seed), on_log=recorder.log)


def load_model(cfg: DictConfig, settings: TrainerSettings) -> ClassifierWrapper:
    model = build_model(**container(cfg.model)).to(resolve_device(settings.device))
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def load_datasets(cfg: DictConfig, model: ClassifierWrapper) -> tuple[SplitDataset, SplitDataset]:
    """Fit and evaluation sets; the evaluation set defaults to the fit dataset's held-out split."""
    fit_set = build_dataset(container(cfg.dataset), split="fit", image_size=model.input_size, seed=int(cfg.seed))
    eval_cfg = cfg.get("eval_dataset") or cfg.dataset
    eval_set = build_dataset(container(eval_cfg), split="eval", image_size=model.input_size, seed=int(cfg.seed))
    return fit_set, eval_set


def identity_of(cfg: DictConfig, model: ClassifierWrapper, fit_set: SplitDataset,
                eval_set: SplitDataset) -> dict[str, Any]:
    return {
        "task_name": cfg.task_name,
        "tags": list(cfg.tags),
        "model": model.name,
        "dataset": fit_set.name,
        "eval_dataset": eval_set.name,
        "fit_size": len(fit_set),
        "eval_size": len(eval_set),
        "loss": cfg.loss.name,
        "loss_layer": cfg.loss.get("layer", "logits"),
        "attack": cfg.attack.name,
        "xi": float(cfg.xi),
        "xi_255": float(cfg.xi) * 255,
        "seed": int(cfg.seed),
        "precision": cfg.trainer.precision,
        "commit": git_commit(),
        "clip_rule": "clamp(x + delta, 0, 1)",
    }


def write_examples(path: Path, model: ClassifierWrapper, eval_set: SplitDataset, delta: torch.Tensor,
                   result: EvaluationResult, n: int = 8) -> None:
    n = min(n, len(eval_set))
    x, _ = to_float_batch(torch.stack([eval_set[i][0] for i in range(n)]), "cpu")
    perturbed = (x + delta.cpu()).clamp(0, 1)
    clean_names = [model.class_names[int(c)] for c in result.clean_pred[:n]]
    adv_names = [model.class_names[int(c)] for c in next(iter(result.adv_pred.values()))[:n]]
    dom = next(iter(result.patterns.values()))
    save_examples_grid(path, x, perturbed, clean_names, adv_names,
                       title=f"{model.name}: pattern predicted as '{dom['dominant_class_name']}' "
                             f"({dom['dominant_confidence']:.0%}); dominance {dom['dominance_ratio']:.1%}")


def run(cfg: DictConfig) -> dict[str, Any]:
    """One job: fit, evaluate (pattern and floors), save artifacts, write metrics.json."""
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    JOB_NOTES.clear()
    validate_config(cfg)
    check_run_config(cfg)
    # Never overwrite a finished result; resume an interrupted one (checkpoint.py).
    run_config = flat_config(container(cfg))
    previous = previous_result(out_dir, run_config, overwrite=bool(cfg.get("overwrite", False)))
    if previous is not None:
        JOB_NOTES["status"] = "skipped"
        log.info("skipped: %s already holds a finished metrics.json (add overwrite=true to run it again)", out_dir)
        print(f"skipped: {out_dir} already holds a finished result (overwrite=true runs it again)", flush=True)
        return previous
    checkpointer = Checkpointer(out_dir, every=int(cfg.get("checkpoint_every", 0)), config=run_config,
                                resume="false" if cfg.get("overwrite", False) else cfg.get("resume", "auto"))
    resumed = checkpointer.prepare()
    seed_everything(int(cfg.seed))
    settings = TrainerSettings.from_config(container(cfg.trainer))
    model = load_model(cfg, settings)
    fit_set, eval_set = load_datasets(cfg, model)
    # dataset.cache: decode file-backed sets once into uint8 shards under paths.cache_dir (reused by later runs)
    cache_dir = cfg.paths.get("cache_dir")
    fit_set, fit_cache_seconds = cache_if_enabled(fit_set, cfg.dataset, cache_dir)
    eval_set, eval_cache_seconds = cache_if_enabled(eval_set, cfg.get("eval_dataset") or cfg.dataset, cache_dir)
    save_split_record(fit_set, out_dir / "split_fit.json")
    save_split_record(eval_set, out_dir / "split_eval.json")
    (out_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    identity = identity_of(cfg, model, fit_set, eval_set)
    recorder = RunRecorder(out_dir, container(cfg.logger), container(cfg), identity)
    exit_code = 1
    checkpointer.install_signal_handlers()
    try:
        attack = build_attack(cfg, model, settings, recorder)
        attack.checkpointer = checkpointer
        num_workers = int(cfg.dataset.get("num_workers") or 0)
        fit_loader = fast_loader(fit_set, batch_size=settings.batch_size, shuffle=True, seed=int(cfg.seed),
                                 num_workers=num_workers, device=model.device)
        log.info("fitting %s on %s (%d images, %d epochs) for %s", attack.name, fit_set.name, len(fit_set),
                 settings.epochs, model.name)
        start = time.perf_counter()
        try:
            delta = attack.fit(fit_loader).detach().float()
        except NonFiniteLossError as exc:
            kept = out_dir / "pattern_last_good.pt"
            if exc.pattern is not None:
                save_pattern(kept, exc.pattern.detach().float().cpu(), {**identity, "status": "non-finite loss"})
            ckpt = f"; last checkpoint: {checkpointer.path}" if checkpointer.path.exists() else ""
            raise NonFiniteLossError(f"{exc}. The last good pattern is in {kept}{ckpt}. Try a smaller attack.lr "
                                     "or trainer.precision=fp32, then rerun with resume=false",
                                     pattern=exc.pattern) from None
        fit_seconds = time.perf_counter() - start
        save_pattern(out_dir / "pattern.pt", delta.cpu(), {**identity, "model_info": model.describe()})
        save_pattern_png(out_dir / "pattern.png", delta, float(cfg.xi))

        patterns = {attack.name: delta, **noise_floors(tuple(delta.shape), float(cfg.xi), int(cfg.seed))}
        eval_loader = fast_loader(eval_set, batch_size=settings.eval_batch_size, shuffle=False,
                                  num_workers=int((cfg.get("eval_dataset") or cfg.dataset).get("num_workers") or 0),
                                  device=model.device)
        start = time.perf_counter()
        clean_pred = cached_clean_predictions(model, eval_set, eval_loader, precision=settings.precision,
                                              channels_last=settings.channels_last, cache_dir=cache_dir)
        result = evaluate_patterns(model, patterns, eval_loader, precision=settings.precision,
                                   channels_last=settings.channels_last, progress=settings.progress,
                                   labels_match=eval_set.label_space is not None
                                   and eval_set.label_space == model.label_space, clean_pred=clean_pred)
        eval_seconds = time.perf_counter() - start
        write_examples(out_dir / "examples.png", model, eval_set, delta, result)
        main_metrics = result.patterns[attack.name]
        results = {
            "metrics": main_metrics,
            "floors": {k: result.patterns[k] for k in FLOORS},
            "timing": {
                "fit_seconds": fit_seconds,
                "eval_seconds": eval_seconds,
                "cache_build_seconds": fit_cache_seconds + eval_cache_seconds,
                "fit_images_per_second": settings.epochs * len(fit_set) / fit_seconds if fit_seconds else None,
                "eval_images_per_second": len(eval_set) * (len(patterns) + 1) / eval_seconds if eval_seconds else None,
            },
            "attack_info": attack.describe(),
            # unreadable image files are skipped (with a warning each) and counted here
            "skipped_eval_images": len(eval_set) - int(main_metrics["n_images"]),
            "config_fingerprint": checkpointer.fingerprint,
            "resumed_from_step": int(resumed["step"]) if resumed else None,
        }
        recorder.log({"eval": main_metrics, "floors": results["floors"], "timing": results["timing"]})
        recorder.log_images({"pattern": out_dir / "pattern.png", "examples": out_dir / "examples.png"})
        recorder.finish(results)
        table = format_summary({attack.name: main_metrics, **results["floors"]})
        (out_dir / "summary.md").write_text(table + "\n")
        loss = results["attack_info"].get("loss")  # attacks that fit with a named loss report it
        loss_note = f" ({loss} loss)" if loss else ""
        print(f"\n{model.name} | {attack.name}{loss_note} | fit: {fit_set.name} ({len(fit_set)} images) | eval: "
              f"{eval_set.name} ({len(eval_set)} images) | xi = {float(cfg.xi) * 255:.1f}/255\n{table}\n"
              f"fit {fit_seconds:.1f}s, evaluation {eval_seconds:.1f}s; outputs in {out_dir}", flush=True)
        exit_code = 0
        return results
    finally:
        checkpointer.restore_signal_handlers()
        recorder.close(exit_code)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Entry point of ``python -m dominant_patterns`` and the ``dominant-patterns`` script."""
    try:
        return float(run(cfg)["metrics"]["dominance_ratio"])
    except (UserInputError, NonFiniteLossError) as exc:  # exit 2: bad input, 3: non-finite loss
        log.error("%s", exc)
        if HydraConfig.get().mode == RunMode.RUN:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(3 if isinstance(exc, NonFiniteLossError) else 2)
        raise
    except Interrupted as exc:
        stop_after_interrupt(exc)
    return None


def stop_after_interrupt(exc: Interrupted) -> None:
    """Say how to continue, let submitit requeue the job (its handler), else exit with 128 + signal."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.RUN:
        how = " ".join([*hydra_cfg.overrides.task, f"hydra.run.dir={hydra_cfg.runtime.output_dir}"])
    else:
        how = f"the same sweep with hydra.sweep.dir={hydra_cfg.sweep.dir}"
    record_job(hydra_cfg, list(hydra_cfg.overrides.task), "interrupted", str(exc))
    log.warning("%s; continue with: %s", exc, how)
    print(f"{exc}\ncontinue with: python -m dominant_patterns {how}", file=sys.stderr, flush=True)
    if callable(exc.previous_handler):  # submitit: checkpoint() and requeue, then it exits itself
        exc.previous_handler(exc.signum, None)
    sys.exit(128 + exc.signum)


if __name__ == "__main__":
    main()
