"""How a dominant pattern takes over the network, layer by layer (Figures 3 and 4).

Per-layer SSIM of features(delta + x) vs features(delta) and vs features(x) (``layer_ssim.py``),
written as ``layers.json``, ``fig3.png`` (one image), ``fig4.png`` (mean +- std) and ``metrics.json``
(with the takeover layer: the first unit from which the pattern's SSIM stays above the image's).

    python -m dominant_patterns.layers experiment=fig4_layers
    python -m dominant_patterns.layers source.task=table1 num_images=64
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig

from dominant_patterns.analysis.layer_ssim import layer_ssim, summarize, takeover_layer
from dominant_patterns.conf import CONFIG_PATH
from dominant_patterns.data.loaders import make_loader
from dominant_patterns.models.hooks import layer_names
from dominant_patterns.reporting.layer_figures import plot_fig3, plot_fig4
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

log = logging.getLogger("dominant_patterns.apps.figure_layers")


def analyze(cfg: DictConfig) -> dict[str, Any]:
    """Compute the per-layer SSIMs, write layers.json, fig3.png, fig4.png and metrics.json."""
    with open_job(cfg, "layers") as job:
        settings = job.settings
        model, delta, meta, path, _xi, source = load_source_pattern(cfg, settings)
        eval_set = load_split(container(cfg.dataset), "eval", model, int(cfg.seed))
        subset = limit(eval_set, cfg.get("num_images"))
        loader = make_loader(subset, batch_size=min(settings.eval_batch_size, 32), shuffle=False)
        names = layer_names(model, str(cfg.layer_group))
        recorder = job.record(**source, model=model.name, dataset=eval_set.name,
                              eval_dataset=eval_set.name, layer_group=str(cfg.layer_group))
        out_dir = job.out_dir
        start = time.perf_counter()
        example = min(int(cfg.example_index), len(subset) - 1)
        scores, maps = layer_ssim(model, delta, loader, names, int(cfg.ssim_window), keep_maps_of=example)
        rows = summarize(names, scores)
        valid = [r for r in rows if np.isfinite(r["ssim_pattern_mean"])]
        crossover = takeover_layer(rows)
        (out_dir / "layers.json").write_text(json.dumps({"layers": rows, "num_images": len(subset)}, indent=1))
        title = (f"{model.name}: pattern '{meta.get('model')}/{meta.get('dataset')}' on {len(subset)} "
                 f"{eval_set.name} images")
        plot_fig3(out_dir / "fig3.png", names, scores, maps, example, f"{model.name}, image {example}")
        plot_fig4(out_dir / "fig4.png", rows, title)
        metrics = {"num_layers": len(names), "num_images": len(subset), "takeover_layer": crossover,
                   "ssim_pattern_last": valid[-1]["ssim_pattern_mean"] if valid else None,
                   "ssim_image_last": valid[-1]["ssim_image_mean"] if valid else None,
                   "ssim_pattern_first": valid[0]["ssim_pattern_mean"] if valid else None,
                   "ssim_image_first": valid[0]["ssim_image_mean"] if valid else None}
        results = {"metrics": metrics, "timing": {"seconds": time.perf_counter() - start},
                   **skipped_counts(eval=eval_set)}
        recorder.log({"layers": metrics})
        recorder.log_images({"fig3": out_dir / "fig3.png", "fig4": out_dir / "fig4.png"})
        recorder.finish(results)
        print(f"{model.name}: {len(names)} layers, pattern takes over from layer {crossover}; last layer "
              f"SSIM(δ+x, δ) {metrics['ssim_pattern_last']}, SSIM(δ+x, x) {metrics['ssim_image_last']}; "
              f"outputs in {out_dir}", flush=True)
        return results


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="layers")
def hydra_main(cfg: DictConfig) -> None:
    guarded(lambda: analyze(cfg))


def main() -> None:
    refuse_foreign_experiments("layers", sys.argv[1:])
    register_resolvers()
    hydra_main()
    exit_if_jobs_failed()


if __name__ == "__main__":
    main()
