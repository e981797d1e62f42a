"""Score any saved ``pattern.pt`` on any model and dataset (the transfer matrix's entry point).

    python -m dominant_patterns.evaluate pattern=outputs/table2/multiruns/.../0/pattern.pt model=resnet50
    python -m dominant_patterns.evaluate source.task=table2 source.model=vgg19 model=resnet50 dataset=imagenet

Without ``pattern``, the newest finished run under ``paths.output_dir`` whose identity matches
``source`` (task, model, dataset, loss, attack, seed, target class) provides the pattern.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import hydra
from omegaconf import DictConfig

from dominant_patterns.analysis.metrics import evaluate_patterns, noise_floors
from dominant_patterns.conf import CONFIG_PATH
from dominant_patterns.data.loaders import make_loader
from dominant_patterns.runs.app_index import refuse_foreign_experiments
from dominant_patterns.runs.hydra_hooks import register_resolvers
from dominant_patterns.runs.jobs import (
    container,
    guarded,
    limit,
    load_source_pattern,
    load_split,
    open_job,
    skipped_counts,
)
from dominant_patterns.runs.sweep_status import exit_if_jobs_failed

log = logging.getLogger("dominant_patterns.apps.evaluate")


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Score the pattern on ``cfg.model`` over the eval split of ``cfg.dataset``; write metrics.json."""
    with open_job(cfg, "evaluate") as job:
        settings = job.settings
        model, delta, meta, path, xi, source = load_source_pattern(cfg, settings)
        data_cfg = container(cfg.dataset)
        if cfg.get("max_images"):  # datasets with a max_images key decode only that many
            data_cfg = {**data_cfg, "max_images": data_cfg.get("max_images") or int(cfg.max_images)}
        eval_set = load_split(data_cfg, "eval", model, int(cfg.seed))
        loader = make_loader(limit(eval_set, cfg.get("max_images")), batch_size=settings.eval_batch_size,
                             shuffle=False, num_workers=int(cfg.dataset.get("num_workers") or 0))
        recorder = job.record(**source, model=model.name, dataset=eval_set.name,
                              eval_dataset=eval_set.name, eval_size=len(loader.dataset))  # type: ignore[arg-type]
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
                   "timing": {"eval_seconds": time.perf_counter() - start}, **skipped_counts(eval=eval_set)}
        recorder.log({"eval": metrics})
        recorder.finish(results)
        origin = f"{meta.get('model')} pattern ({meta.get('dataset')})" if meta.get("model") else f"pattern {path.name}"
        print(f"{origin} on {model.name} / {eval_set.name}: "
              f"fooling {metrics['fooling_rate']:.1%}, dominance {metrics['dominance_ratio']:.1%} "
              f"({metrics['dominant_class_name']})", flush=True)
        return results


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="evaluate")
def hydra_main(cfg: DictConfig) -> float | None:
    return guarded(lambda: float(evaluate(cfg)["metrics"]["fooling_rate"]))


def main() -> None:
    refuse_foreign_experiments("evaluate", sys.argv[1:])
    register_resolvers()
    hydra_main()
    exit_if_jobs_failed()


if __name__ == "__main__":
    main()
