"""Table 6: does the ImageNet pattern still dominate after the task changes?

1. Freeze the ImageNet backbone, replace its classifier head by a new one (linear, or one hidden
   layer) and train only that head on a downstream task (CIFAR-10 in the paper, Fashion-MNIST at
   the embedded scale) from cached backbone features (``downstream.py``); report its test accuracy.
2. Attack the new network with the pattern found on the ImageNet model: dominant (downstream)
   class and confidence of f'(delta), fooling rate, dominance ratio, accuracy under attack, and
   CoSLoss between the backbone features of delta and of x + delta.

    python -m dominant_patterns.transfer experiment=table6_transfer
    python -m dominant_patterns.transfer source.task=table1 dataset=fashion_mnist fit_images=3000
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from dominant_patterns.analysis.downstream import backbone_features, class_names_for, make_head, train_head
from dominant_patterns.analysis.metrics import evaluate_patterns, noise_floors
from dominant_patterns.conf import CONFIG_PATH
from dominant_patterns.data.loaders import make_loader
from dominant_patterns.runs.app_index import refuse_foreign_experiments
from dominant_patterns.runs.hydra_hooks import register_resolvers
from dominant_patterns.runs.jobs import container, guarded, load_source_pattern, load_split, open_job, skipped_counts
from dominant_patterns.runs.sweep_status import exit_if_jobs_failed

log = logging.getLogger("dominant_patterns.apps.head_transfer")


def transfer(cfg: DictConfig) -> dict[str, Any]:
    """Fine-tune the head, score it, attack it with the source pattern; write metrics.json and head.pt."""
    with open_job(cfg, "transfer") as job:
        settings, out_dir = job.settings, job.out_dir
        model, delta, meta, path, xi, source = load_source_pattern(cfg, settings)
        data_cfg = container(cfg.dataset)
        fit_set = load_split({**data_cfg, "max_images": cfg.get("fit_images") or data_cfg.get("max_images")}, "fit",
                             model, int(cfg.seed))
        eval_set = load_split({**data_cfg, "max_images": cfg.get("eval_images") or data_cfg.get("max_images")},
                              "eval", model, int(cfg.seed))
        recorder = job.record(**source, model=model.name, dataset=fit_set.name,
                              eval_dataset=eval_set.name, fit_size=len(fit_set), eval_size=len(eval_set))
        start = time.perf_counter()
        batch = settings.eval_batch_size
        feats, labels = backbone_features(model, make_loader(fit_set, batch_size=batch, shuffle=False))
        feature_seconds = time.perf_counter() - start
        num_classes = int(labels.max()) + 1
        class_names = class_names_for(fit_set.label_space, num_classes)
        head_cfg = cfg.head
        torch.manual_seed(int(cfg.seed))
        head = make_head(feats.shape[1], num_classes, head_cfg.get("hidden"), float(head_cfg.get("dropout") or 0))
        history = train_head(head, feats, labels, epochs=int(head_cfg.epochs), lr=float(head_cfg.lr),
                             weight_decay=float(head_cfg.weight_decay), batch_size=int(head_cfg.batch_size),
                             seed=int(cfg.seed))
        for step, value in enumerate(history, 1):
            recorder.log({"head/loss": value}, step=step)
        torch.save(head.state_dict(), out_dir / "head.pt")
        downstream = model.with_head(head, class_names, fit_set.label_space)
        patterns = {"pattern": delta, **noise_floors(tuple(delta.shape), xi, int(cfg.seed))}
        result = evaluate_patterns(downstream, patterns, make_loader(eval_set, batch_size=batch, shuffle=False),
                                   precision=settings.precision, channels_last=settings.channels_last,
                                   progress=settings.progress, labels_match=True)
        metrics = {**result.patterns["pattern"], "head_accuracy": result.patterns["pattern"].get("clean_accuracy"),
                   "head_train_loss": history[-1] if history else None, "num_classes": num_classes}
        results = {"metrics": metrics, "floors": {k: v for k, v in result.patterns.items() if k != "pattern"},
                   "timing": {"feature_seconds": feature_seconds, "total_seconds": time.perf_counter() - start},
                   **skipped_counts(fit=fit_set, eval=eval_set)}
        recorder.log({"eval": metrics})
        recorder.finish(results)
        print(f"{model.name} backbone + new head on {fit_set.name}: accuracy {metrics['head_accuracy']:.1%}; "
              f"ImageNet pattern -> '{metrics['dominant_class_name']}' ({metrics['dominant_confidence']:.1%}), "
              f"fooling {metrics['fooling_rate']:.1%}, dominance {metrics['dominance_ratio']:.1%}, "
              f"CoSLoss(features) {metrics['cos_loss_features']:.3e}; outputs in {out_dir}", flush=True)
        return results


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="transfer")
def hydra_main(cfg: DictConfig) -> None:
    guarded(lambda: transfer(cfg))


def main() -> None:
    refuse_foreign_experiments("transfer", sys.argv[1:])
    register_resolvers()
    hydra_main()
    exit_if_jobs_failed()


if __name__ == "__main__":
    main()
