"""The Hydra app: fit a universal pattern, evaluate it beside noise floors, record everything.

    python -m dominant_patterns model=vgg19 dataset=coco dataset.root=/data/coco/train2017
    python -m dominant_patterns attack.num_patterns=3      # seeds 0, 1, 2 in one pass (pattern_plan.py)
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from dominant_patterns.analysis.artifacts import save_examples_grid, save_pattern_png
from dominant_patterns.analysis.clean_predictions import cached_clean_predictions
from dominant_patterns.analysis.curves import AnytimeCurve, CurveTarget
from dominant_patterns.analysis.metrics import EvaluationResult, evaluate_patterns, mean_over_samples, noise_floors
from dominant_patterns.attacks.base import UniversalAttack
from dominant_patterns.conf import CONFIG_PATH
from dominant_patterns.core.atomic import atomic_write_text
from dominant_patterns.core.batches import to_float_batch
from dominant_patterns.core.checkpoint import Checkpointer, fingerprint
from dominant_patterns.core.devices import peak_memory_gib
from dominant_patterns.core.loops import NonFiniteLossError, TrainerSettings
from dominant_patterns.core.pattern_files import check_pattern, save_pattern
from dominant_patterns.data.datasets import SplitDataset, save_split_record, skipped_files
from dominant_patterns.data.image_cache import prepare_split
from dominant_patterns.data.loaders import fast_loader
from dominant_patterns.models.classifier import ClassifierWrapper
from dominant_patterns.models.fold import fold_for_attack
from dominant_patterns.runs.app_index import refuse_foreign_experiments
from dominant_patterns.runs.display import run_summary
from dominant_patterns.runs.hydra_hooks import register_resolvers
from dominant_patterns.runs.identity import flat_config
from dominant_patterns.runs.jobs import container, guarded, load_datasets, load_model, open_job, seed_everything
from dominant_patterns.runs.pattern_plan import PatternPlan
from dominant_patterns.runs.run_dir import write_essential, write_optional
from dominant_patterns.runs.sweep_status import JOB_NOTES, exit_if_jobs_failed
from dominant_patterns.runs.tracking import RunRecorder

log = logging.getLogger("dominant_patterns")

FLOORS = ("random_noise", "random_sign")


def build_attack(cfg: DictConfig, model: ClassifierWrapper, settings: TrainerSettings) -> UniversalAttack:
    """Instantiate ``cfg.attack`` (a ``_target_`` class) with the runtime objects it needs."""
    params = {k: v for k, v in container(cfg.attack).items() if k != "name"}
    factory = instantiate(params, _partial_=True, _convert_="all")
    return factory(model=model, xi=float(cfg.xi), trainer=settings, seed=int(cfg.seed))


def fit_identity(cfg: DictConfig, model: ClassifierWrapper, fit_set: SplitDataset,
                 eval_set: SplitDataset, seed: int) -> dict[str, Any]:
    """The identity fields of a fitting run of ``seed`` (beside kind, task, tags and commit)."""
    return {
        "model": model.name,
        "dataset": fit_set.name,
        "eval_dataset": eval_set.name,
        "fit_size": len(fit_set),
        "eval_size": len(eval_set),
        "epochs": int(cfg.trainer.epochs),
        "batch_size": int(cfg.trainer.batch_size),
        "loss": cfg.loss.name,
        "loss_layer": cfg.loss.get("layer", "logits"),
        "attack": cfg.attack.name,
        "target_class": cfg.attack.get("target_class"),
        "xi": float(cfg.xi),
        "xi_255": float(cfg.xi) * 255,
        "seed": seed,
        "precision": cfg.trainer.precision,
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


@dataclass
class RunData:
    """The fit and evaluation sets of a run, and what caching them cost."""

    fit_set: SplitDataset
    eval_set: SplitDataset
    cache_seconds: float
    cache_dir: str | None


def load_run_data(cfg: DictConfig, model: ClassifierWrapper, out_dir: Path, seed: int) -> RunData:
    """The datasets of ``seed`` (cached as decoded shards when ``dataset.cache``), their split records written
    beside the run."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fit_set, eval_set = load_datasets(cfg, model, seed)
    # every file decoded once before the fit (into uint8 shards under paths.cache_dir when dataset.cache, reused
    # by later runs): unreadable files are named and left out, an empty split stops the run here
    cache_dir = cfg.paths.get("cache_dir")
    eval_set, eval_cache_seconds = prepare_split(eval_set, cfg.get("eval_dataset") or cfg.dataset, cache_dir)
    fit_set, fit_cache_seconds = prepare_split(fit_set, cfg.dataset, cache_dir)
    for split, dataset in (("fit", fit_set), ("eval", eval_set)):
        path = out_dir / f"split_{split}.json"
        write_essential(path, lambda d=dataset, p=path: save_split_record(d, p))
    return RunData(fit_set, eval_set, fit_cache_seconds + eval_cache_seconds, cache_dir)


def fit_attack(attack: UniversalAttack, plan: PatternPlan, loaders: list[Any], out_dir: Path,
               identity: dict[str, Any], checkpointer: Checkpointer) -> tuple[list[torch.Tensor], float]:
    """The patterns (one per loader, ``PatternPlan.fit``), checked (finite, within xi), and their seconds
    (earlier segments of a resumed fit included); a non-finite loss keeps the last good pattern(s) and says how
    to go on."""
    checkpointer.start_clock()
    try:
        deltas = plan.fit(attack, loaders)
    except NonFiniteLossError as exc:
        kept = out_dir / "pattern_last_good.pt"
        if exc.pattern is not None:
            save_pattern(kept, exc.pattern.detach().float().cpu(), {**identity, "status": "non-finite loss"})
        ckpt = f"; last checkpoint: {checkpointer.path}" if checkpointer.path.exists() else ""
        raise NonFiniteLossError(f"{exc}. The last good pattern is in {kept}{ckpt}. Try a smaller attack.lr "
                                 "or trainer.precision=fp32, then rerun with resume=false",
                                 pattern=exc.pattern) from None
    deltas = [check_pattern(d, source=f"the pattern the {attack.name} fit returned", xi=attack.xi) for d in deltas]
    return deltas, checkpointer.elapsed()


def eval_target(cfg: DictConfig, model: ClassifierWrapper, data: RunData, settings: TrainerSettings) -> CurveTarget:
    """The evaluation loader of a pattern and its clean predictions (cached under ``paths.cache_dir``)."""
    eval_cfg = cfg.get("eval_dataset") or cfg.dataset
    loader = fast_loader(data.eval_set, batch_size=settings.eval_batch_size, shuffle=False,
                         num_workers=int(eval_cfg.get("num_workers") or 0), device=model.device)
    clean_pred = cached_clean_predictions(model, data.eval_set, loader, precision=settings.precision,
                                          channels_last=settings.channels_last, cache_dir=data.cache_dir)
    return CurveTarget(loader, clean_pred)


def attach_curve(attack: UniversalAttack, cfg: DictConfig, model: ClassifierWrapper, settings: TrainerSettings,
                 plan: PatternPlan, data: list[RunData], recorders: list[RunRecorder | None]) -> AnytimeCurve | None:
    """With ``trainer.curve_start``, the fit's anytime curve (``analysis.curves``): one per pattern, logged to its
    record's ``metrics.jsonl`` and W&B (x-axis ``curve/passes``)."""
    if settings.curve_start is None:
        return None

    def log_point(index: int, point: dict[str, Any]) -> None:
        if recorders[index] is not None:
            recorders[index].log({"curve": point})

    curve = AnytimeCurve(model, [eval_target(cfg, model, d, settings) for d in data], start=settings.curve_start,
                         factor=settings.curve_factor, samples=not plan.joint, precision=settings.precision,
                         channels_last=settings.channels_last, on_point=log_point)
    attack.curve = curve
    return curve


def evaluate_run(cfg: DictConfig, model: ClassifierWrapper, data: RunData, settings: TrainerSettings,
                 patterns: dict[str, torch.Tensor], seed: int) -> tuple[EvaluationResult, float]:
    """The patterns and the two noise floors of ``seed`` scored on the evaluation set, and the seconds it took."""
    delta = next(iter(patterns.values()))
    patterns = {**patterns, **noise_floors(tuple(delta.shape), float(cfg.xi), seed)}
    start = time.perf_counter()
    target = eval_target(cfg, model, data, settings)
    loader, clean_pred = target.loader, target.clean_pred
    labels_match = data.eval_set.label_space is not None and data.eval_set.label_space == model.label_space
    result = evaluate_patterns(model, patterns, loader, precision=settings.precision,
                               channels_last=settings.channels_last, progress=settings.progress,
                               labels_match=labels_match, clean_pred=clean_pred)
    return result, time.perf_counter() - start


def write_summary(out_dir: Path, record: dict[str, Any]) -> None:
    """``summary.md`` of a finished record (optional: a failure is a warning) and the same on the terminal."""
    summary, text = run_summary(record)
    write_optional(out_dir / "summary.md", lambda: atomic_write_text(out_dir / "summary.md", summary + "\n"))
    print(text, flush=True)


@dataclass
class JointFit:
    """What the patterns of one job share: the fitted attack (its pass meter), its seconds, where it resumed."""

    attack: UniversalAttack
    seconds: float
    segments: int
    resumed_from_step: int | None
    plan: PatternPlan
    curve: AnytimeCurve | None = None


def finish_pattern(cfg: DictConfig, model: ClassifierWrapper, settings: TrainerSettings, fit: JointFit,
                   index: int, data: RunData, recorder: RunRecorder, delta: torch.Tensor) -> dict[str, Any]:
    """Pattern ``index`` of the job: ``pattern.pt``, its evaluation (pattern and floors) and ``metrics.json``
    first (an essential file that cannot be written stops the job with one line), then the optional pictures,
    ``summary.md`` and W&B images (a failure there is a warning)."""
    attack, slot = fit.attack, fit.plan.slots[index]
    out_dir = slot.out_dir
    pattern_pt = out_dir / "pattern.pt"
    write_essential(pattern_pt, lambda: save_pattern(pattern_pt, delta.cpu(),
                                                     {**recorder.identity, "model_info": model.describe()}))
    artifacts = write_essential(out_dir, lambda: attack.save_artifacts(out_dir))
    name = str(cfg.attack.name)  # the record names the attack as its config does (a K-pattern fit too)
    # a generator's result is a distribution: score Z samples (the first is pattern.pt), report their mean
    samples = attack.sample_patterns()
    scored = {name: delta} if samples is None else {f"{name}/sample_{i}": s for i, s in enumerate(samples)}
    result, eval_seconds = evaluate_run(cfg, model, data, settings, scored, slot.seed)
    metrics, sample_stats = (result.patterns[name], None) if samples is None else mean_over_samples(
        [result.patterns[k] for k in scored])
    n_eval, n_patterns = len(data.eval_set), len(result.patterns)
    joint_timing, joint = fit.plan.record_extras(index, fit.seconds)
    timing = {
        "fit_seconds": fit.seconds,  # every segment of a resumed fit (stored in its checkpoint)
        "fit_segments": fit.segments,
        "eval_seconds": eval_seconds,
        "cache_build_seconds": data.cache_seconds,
        # what the fit spent (its pass meter: budgets, caps and early stops included), not epochs x images
        "fit_images_per_second": attack.meter.passes / fit.seconds if fit.seconds else None,
        "eval_images_per_second": n_eval * (n_patterns + 1) / eval_seconds if eval_seconds else None,
        **joint_timing,
        **({"curve_seconds": fit.curve.seconds} if fit.curve is not None else {}),  # inside fit_seconds
    }
    peak = peak_memory_gib(model.device)
    skipped = {split: skipped_files(dataset) for split, dataset in (("fit", data.fit_set), ("eval", data.eval_set))}
    results = {
        "metrics": metrics,
        "floors": {k: result.patterns[k] for k in FLOORS},
        "timing": {**timing, **({"peak_memory_gib": peak} if peak is not None else {})},
        "attack_info": {**attack.describe(), "name": name},
        "model_info": model.describe(),  # with bn_folded / bn_total (dominant_patterns.models.fold)
        # unreadable image files are found before the fit, left out, counted and named here
        "skipped_fit_images": len(skipped["fit"]),
        "skipped_fit_files": skipped["fit"],
        "skipped_eval_images": len(skipped["eval"]) + n_eval - int(metrics["n_images"]),
        "skipped_eval_files": skipped["eval"],
        # a separate run's fingerprint of this seed (``pattern_plan.pattern_config``)
        "config_fingerprint": fingerprint(slot.config),
        "resumed_from_step": fit.resumed_from_step,
        **({"sample_stats": sample_stats} if sample_stats is not None else {}),
        **({"artifacts": artifacts} if artifacts else {}),
        **joint,
        **({"curve": fit.curve.points[index]} if fit.curve is not None else {}),
    }
    recorder.log({"eval": metrics, "floors": results["floors"], "timing": results["timing"]})
    record = recorder.finish(results)
    pictures = {"pattern": out_dir / "pattern.png", "examples": out_dir / "examples.png"}
    write_optional(pictures["pattern"], lambda: save_pattern_png(pictures["pattern"], delta, float(cfg.xi)))
    write_optional(pictures["examples"], lambda: write_examples(pictures["examples"], model, data.eval_set, delta,
                                                                result))
    recorder.log_images({k: p for k, p in pictures.items() if p.is_file()})
    write_summary(out_dir, record)
    return results


def fit_loaders(cfg: DictConfig, settings: TrainerSettings, model: ClassifierWrapper, plan: PatternPlan,
                data: list[RunData]) -> list[Any]:
    """Each pattern's fit loader: its fit set in the order of its seed."""
    return [fast_loader(d.fit_set, batch_size=settings.batch_size, shuffle=True, seed=slot.seed,
                        num_workers=int(cfg.dataset.get("num_workers") or 0), device=model.device)
            for slot, d in zip(plan.slots, data, strict=True)]


def skip(plan: PatternPlan) -> dict[str, Any]:
    """The finished records of a job that has nothing left to do (a summary a kill lost is written now)."""
    JOB_NOTES["status"] = "skipped"
    log.info("skipped: %s already holds a finished metrics.json (add overwrite=true to run it again)", plan.job_dir)
    print(f"skipped: {plan.job_dir} already holds a finished result (overwrite=true runs it again)", flush=True)
    for slot in plan.slots:  # a job killed right after metrics.json: its summary is written now
        if slot.previous is not None and not (slot.out_dir / "summary.md").is_file() and "metrics" in slot.previous:
            write_summary(slot.out_dir, slot.previous)
    return plan.result([slot.previous for slot in plan.slots if slot.previous is not None])


def run(cfg: DictConfig) -> dict[str, Any]:
    """One job: fit, evaluate (pattern and floors), save artifacts, write metrics.json.

    ``attack.num_patterns=K`` > 1 fits seeds ``seed ... seed+K-1`` in one pass, one record each under
    ``seed_<s>/`` (:mod:`dominant_patterns.runs.pattern_plan`). A finished job (every pattern) is skipped, an
    interrupted one resumes; from the attack's start to the end, SIGTERM/SIGUSR1 checkpoint and stop the
    job (``checkpoint.py``).
    """
    with open_job(cfg, "run") as job:
        settings = job.settings
        plan = PatternPlan.of(cfg, job.out_dir, flat_config(container(cfg)))
        if plan.all_finished(overwrite=bool(cfg.get("overwrite", False))):
            return skip(plan)
        checkpointer = Checkpointer(job.out_dir, every=int(cfg.get("checkpoint_every", 0)),
                                    config=plan.checkpoint_config(),
                                    resume="false" if cfg.get("overwrite", False) else cfg.get("resume", "auto"))
        resumed = checkpointer.prepare()
        seed_everything(int(cfg.seed))
        model = load_model(cfg, settings)
        data = [load_run_data(cfg, model, slot.out_dir, slot.seed) for slot in plan.slots]
        identities = [fit_identity(cfg, model, d.fit_set, d.eval_set, slot.seed)
                      for slot, d in zip(plan.slots, data, strict=True)]
        recorders = plan.open_recorders(job, cfg, identities)
        with checkpointer.handle_signals():
            attack = build_attack(cfg, model, settings)
            attack.on_log = plan.logger(attack, recorders)
            fold_for_attack(model, attack, settings.fold_bn)  # BN into convs when exact; metrics.json model_info
            curve = attach_curve(attack, cfg, model, settings, plan, data, recorders)
            attack.checkpointer = checkpointer
            loaders = fit_loaders(cfg, settings, model, plan, data)
            log.info("fitting %s on %s (%d images, %s) for %s%s", attack.name, data[0].fit_set.name,
                     len(data[0].fit_set),
                     f"{settings.epochs} epochs" if settings.budget is None else f"to {settings.budget} passes",
                     model.name, plan.fit_note())
            meta = {**(recorders[0].identity if recorders[0] is not None else identities[0]), "seeds": plan.seeds}
            deltas, fit_seconds = fit_attack(attack, plan, loaders, job.out_dir, meta, checkpointer)
            fit = JointFit(attack, fit_seconds, checkpointer.segments, int(resumed["step"]) if resumed else None,
                           plan, curve)
            results = [slot.previous if recorder is None else  # finished before an interruption: kept
                       finish_pattern(cfg, model, settings, fit, i, d, recorder, delta)
                       for i, (slot, d, recorder, delta) in enumerate(zip(plan.slots, data, recorders, deltas,
                                                                          strict=True))]
            return plan.result(results)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
def hydra_main(cfg: DictConfig) -> float | None:
    return guarded(lambda: float(run(cfg)["metrics"]["dominance_ratio"]))


def main() -> None:
    """Entry point of ``python -m dominant_patterns`` and the ``dominant-patterns`` script."""
    refuse_foreign_experiments("run", sys.argv[1:])
    register_resolvers()
    hydra_main()
    exit_if_jobs_failed()


if __name__ == "__main__":
    main()
