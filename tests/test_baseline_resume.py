"""Every attack resumes from its checkpoint to the pattern of an uninterrupted fit, bitwise (CPU, tiny model).

For each attack in ``conf/attack/`` (plus the multi-seed dominant pattern and GD-UAP's ``range``
prior) a fit is stopped after ``stop`` steps, either hard (an exception: the run resumes from the
last periodic checkpoint, as after SIGKILL) or by a stop signal (the checkpoint is written at that
step, as after SIGTERM/preemption), then a fresh attack with a fresh Checkpointer on the same dir
finishes it. The budgets keep every fit under a second: 40 synthetic 32x32 images, loader batch 8.
One app run (TUAP, a real SIGKILL, a rerun) checks that the app hands its Checkpointer to baselines.
"""

from __future__ import annotations

import importlib
import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import CONF

from dominant_patterns.attacks.base import UniversalAttack
from dominant_patterns.core.checkpoint import CHECKPOINT, Checkpointer, Interrupted
from dominant_patterns.core.checkpoint_file import read_checkpoint
from dominant_patterns.core.loops import TrainerSettings
from dominant_patterns.core.pattern_files import load_pattern
from dominant_patterns.data.datasets import build_dataset
from dominant_patterns.data.loaders import make_loader
from dominant_patterns.models.classifier import build_model

XI = 10 / 255
EVERY = 3
# Per case: the attack's config, overrides (tiny budgets) and the step to stop at. 5 loader batches per
# epoch/pass; tuap and gd_uap re-batch 8 -> 12 images, so a checkpoint also carries the rows left over.
CASES: dict[str, tuple[str, dict[str, Any], int]] = {
    "dominant": ("dominant", {"loss": "cos"}, 7),
    "cosine_uap": ("cosine_uap", {}, 7),
    "sgd_uap": ("sgd_uap", {}, 7),
    "ft_uap": ("ft_uap", {}, 7),
    "uap": ("uap", {"max_passes": 2, "max_images": 24, "deepfool_batch": 4, "target_fooling": 1.01}, 4),
    "uap_target": ("uap", {"max_passes": 3, "max_images": 24, "deepfool_batch": 4, "target_fooling": 0.3}, 3),
    "tuap": ("tuap", {"max_iterations": 10, "batch_size": 12}, 7),
    "gd_uap": ("gd_uap", {"max_iterations": 12, "batch_size": 12, "val_every": 3, "val_every_after_rescale": 2,
                          "val_images": 16}, 7),
    "gd_uap_early": ("gd_uap", {"max_iterations": 20, "batch_size": 12, "val_every": 2, "patience": 1,
                                "val_images": 16}, 5),  # early stop at step 6
    "gd_uap_range": ("gd_uap", {"prior": "range", "max_iterations": 10, "batch_size": 4, "val_every": 3,
                                "val_images": 16}, 7),
    "fff": ("fff", {"max_iterations": 12, "val_every": 3, "halve_every": 5, "val_images": 16}, 7),
    "pd_ua": ("pd_ua", {"max_iterations": 10, "val_every": 3, "val_images": 16, "mc_samples": 2}, 7),
    "multi_seed": ("dominant", {"loss": "cos"}, 7),
    # generators: GAP re-batches 8 -> 12 (rows carried), the 16 validation images are held out of training
    "gap": ("gap", {"max_iterations": 10, "batch_size": 12, "val_every": 3, "val_images": 16, "ngf": 4,
                    "n_blocks": 1}, 7),
    "nag": ("nag", {"max_iterations": 10, "batch_size": 8, "val_every": 3, "val_images": 16, "ngf": 4,
                    "val_samples": 4, "eval_samples": 3}, 7),
    "nag_early": ("nag", {"max_iterations": 20, "batch_size": 8, "val_every": 2, "patience": 1, "val_images": 16,
                          "ngf": 4, "val_samples": 4, "eval_samples": 3}, 3),
    # AAA: 8 impressions, 3 at a time, at most 4 steps each (stage 1 up to step 12), then 6 generator steps;
    # stopped in stage 1 (step 7) and in stage 2 (ci_steps 2: stage 1 ends by step 6)
    "aaa": ("aaa", {"num_classes": 4, "per_class": 2, "ci_steps": 4, "ci_batch": 3, "max_iterations": 6,
                    "batch_size": 4, "val_every": 3, "val_images": 16, "ngf": 4, "val_samples": 4,
                    "eval_samples": 3, "cache_dir": None}, 7),
    "aaa_stage2": ("aaa", {"num_classes": 4, "per_class": 2, "ci_steps": 2, "ci_batch": 3, "max_iterations": 6,
                           "batch_size": 4, "val_every": 3, "val_images": 16, "ngf": 4, "val_samples": 4,
                           "eval_samples": 3, "cache_dir": None}, 8),
    # SGA: outer batches of 12 (3 per pass, then the pass's last 4 rows), 2 inner steps of 4 images per 12
    "sga": ("sga", {"max_epochs": 2, "batch_size": 12, "minibatch": 4, "inner_iterations": 2}, 7),
    "sga_cap": ("sga", {"max_epochs": 2, "max_iterations": 6, "batch_size": 12, "minibatch": 4,
                        "inner_iterations": 2}, 5),
    # FG-UAP: 2 epochs of 5 loader batches, the per-epoch best-of check at step 5 (before the stop) and 10
    "fg_uap": ("fg_uap", {"val_images": 16}, 7),
    # DM-UAP: the first 36 images of each pass re-batched to 10 (3 delta-steps per epoch, 6 rows carried over),
    # 3 epochs (the curriculum steps up at 4 and 7), 2 weight and 2 image steps per delta-step
    "dm_uap": ("dm_uap", {"max_epochs": 3, "batch_size": 10, "max_images": 36, "theta_steps": 2, "x_steps": 2}, 5),
    # TRM-UAP: gauss prior (augmentation draws from the attack's generator), checks after 3 steps (2 before a
    # rescale); a loose saturation_change makes the rescales (which read the last step's saturation) happen
    "trm_uap": ("trm_uap", {"max_iterations": 12, "val_every": 3, "val_every_after_rescale": 2, "val_images": 16,
                            "saturation_change": 0.02}, 7),
    # jigsaw prior, batch 2, early stop after 1 check without improvement in total
    "trm_uap_jigsaw": ("trm_uap", {"prior": "jigsaw_googlenet", "prior_batch": 2, "max_iterations": 20,
                                   "val_every": 2, "patience": 1, "val_images": 16, "return_best": True}, 3),
    # PSP-UAP: 2 crops per prior image, the three transforms drawn per crop
    "psp_uap": ("psp_uap", {"max_iterations": 10, "num_copies": 2, "val_every": 3, "val_images": 16}, 7),
    "psp_uap_jigsaw": ("psp_uap", {"prior": "jigsaw", "prior_batch": 2, "max_iterations": 8, "num_copies": 2,
                                   "val_every": 2, "val_images": 16, "temperature": 3.0}, 5),
}


def config_values(name: str) -> dict[str, Any]:
    cfg = yaml.safe_load((CONF / "attack" / f"{name}.yaml").read_text())
    return {k: v for k, v in cfg.items() if not k.startswith("_") and k not in ("name", "loss")}


def loader(seed: int = 0):  # noqa: ANN201
    ds = build_dataset({"name": "synthetic", "num_fit": 40}, split="fit", image_size=32)
    return make_loader(ds, batch_size=8, shuffle=True, seed=seed)


Logs = list[tuple[int, dict[str, float]]]


def fitter(case: str, ck: Checkpointer | None = None) -> tuple[Callable[[], torch.Tensor], Logs]:
    """A fresh attack of ``case`` (as a new process would build it), the call that fits it and its logs.

    Every step logs its loss (``log_every=1``), so the logs show the whole trajectory, also where the
    returned pattern is the best validated one from before the interruption.
    """
    torch.manual_seed(0)
    logs: Logs = []
    config, overrides, _ = CASES[case]
    params = {**config_values(config), **overrides}
    attack: UniversalAttack = attack_class(config)(build_model("tiny"), XI, seed=0, **params,
                                  on_log=lambda metrics, step: logs.append((step, dict(metrics))),
                                  trainer=TrainerSettings(epochs=2, batch_size=8, progress=False, log_every=1,
                                                          channels_last=False))
    if ck is not None:
        attack.checkpointer = ck
    if case == "multi_seed":  # K = 2 patterns in one pass
        loaders = [loader(0), loader(1)]
        return (lambda: attack.fit_many(loaders)), logs
    fit_loader = loader()
    return (lambda: attack.fit(fit_loader)), logs


def attack_class(config: str) -> type[UniversalAttack]:
    module, _, name = yaml.safe_load((CONF / "attack" / f"{config}.yaml").read_text())["_target_"].rpartition(".")
    return getattr(importlib.import_module(module), name)


class Kill(Exception):
    pass


References = dict[str, tuple[torch.Tensor, Logs]]


@pytest.fixture(scope="module")
def references() -> References:
    return {}


def reference(references: References, case: str) -> tuple[torch.Tensor, Logs]:
    """The uninterrupted fit's pattern and logs (checkpoints disabled), once per module."""
    if case not in references:
        fit, logs = fitter(case)
        references[case] = fit(), logs
    return references[case]


def test_every_attack_config_is_covered() -> None:
    configs = {p.stem for p in (CONF / "attack").glob("*.yaml")}
    assert configs <= {config for config, _, _ in CASES.values()}, "add the new attack config to CASES"


@pytest.mark.parametrize("how", ["kill", "signal"])
@pytest.mark.parametrize("case", list(CASES))
def test_interrupted_fit_resumes_bitwise(tmp_path: Path, references: References, case: str, how: str) -> None:
    expected, expected_logs = reference(references, case)
    *_, stop = CASES[case]
    ck = Checkpointer(tmp_path, every=EVERY)
    done = ck.step_done

    def interrupt() -> None:
        if ck.step + 1 == stop and how == "signal":
            ck.stop_signal = signal.SIGTERM  # what the handler sets; the checkpoint is written at this step
        done()
        if ck.step == stop:
            raise Kill  # a hard stop: nothing is saved now

    ck.step_done = interrupt  # type: ignore[method-assign]
    with pytest.raises(Interrupted if how == "signal" else Kill):
        fitter(case, ck)[0]()

    resumed = Checkpointer(tmp_path, every=EVERY)
    payload = resumed.prepare()
    assert payload is not None
    if how == "signal":
        assert payload["step"] == stop
    else:
        assert 0 < payload["step"] <= stop  # the last periodic (every 3) or epoch-end checkpoint
    fit, logs = fitter(case, resumed)
    assert torch.equal(fit(), expected)
    assert logs and logs == expected_logs[-len(logs):]  # the same losses, step by step, after the resume


@pytest.mark.parametrize("case", ["uap", "uap_target", "tuap", "gd_uap", "gd_uap_early", "fff", "sgd_uap",
                                  "multi_seed", "gap", "nag_early", "aaa", "sga", "sga_cap"])
def test_resuming_a_finished_fit_returns_its_pattern(tmp_path: Path, references: References, case: str) -> None:
    expected, _ = reference(references, case)
    assert torch.equal(fitter(case, Checkpointer(tmp_path, every=EVERY))[0](), expected)
    ck = Checkpointer(tmp_path, every=EVERY)
    final = ck.prepare()["step"]
    steps: list[int] = []
    done = ck.step_done
    ck.step_done = lambda: (steps.append(ck.step), done())  # type: ignore[method-assign]
    assert torch.equal(fitter(case, ck)[0](), expected)
    assert steps == [] and ck.step == final  # nothing was fitted again


def test_app_resumes_a_baseline_after_sigkill(tmp_path: Path) -> None:
    """The app hands its Checkpointer to a baseline: a real SIGKILL mid-pass, a rerun, the same pattern.

    TUAP re-batches 96 images into batches of 20 (4.8 per pass): the kill at step 9 resumes from the
    checkpoint of step 5, inside the second pass, with rows carried over from the first.
    """
    from test_reliability import fault_run

    tuap = ["attack=tuap", "attack.max_iterations=12", "attack.batch_size=20"]
    ref = fault_run(tmp_path, tmp_path / "ref", "", *tuap)
    assert ref.returncode == 0, ref.stderr[-3000:]
    run_dir = tmp_path / "run"
    killed = fault_run(tmp_path, run_dir, "kill:9", *tuap)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    payload = read_checkpoint(run_dir / CHECKPOINT)
    assert (payload["epoch"], payload["step"]) == (1, 5) and payload["state"]["rest"] is not None
    resumed = fault_run(tmp_path, run_dir, "", *tuap)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["resumed_from_step"] == 5
    delta, expected = (load_pattern(d / "pattern.pt")["delta"] for d in (run_dir, tmp_path / "ref"))
    assert torch.equal(delta, expected)
