"""The pass counter, ``trainer.budget`` and the anytime-curve hook of the shared loops (tiny model, CPU).

A pass is one image row through the classifier with autograd recording (the pattern row included); rows
forwarded without it are ``forward_passes``. The fits reuse the small cases of ``test_baseline_resume``:
40 synthetic 32x32 images, loader batch 8.
"""

from __future__ import annotations

import random
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import CONF, LoopHost
from test_baseline_resume import CASES, EVERY, XI, Kill, attack_class, config_values, loader

from dominant_patterns.attacks.base import UniversalAttack
from dominant_patterns.core.checkpoint import CHECKPOINT, Checkpointer, Interrupted
from dominant_patterns.core.checkpoint_file import read_checkpoint, write_checkpoint
from dominant_patterns.core.errors import ConfigError
from dominant_patterns.core.loops import Curve, Feed, TrainerSettings, run_steps
from dominant_patterns.models.classifier import build_model
from dominant_patterns.runs.identity import flat_config

BUDGET = 60
#: No validation-based early stop within the budget (it would end a fit before its budget, as it should), and
#: DeepFool over 3 candidate classes (the tiny model's 10 make UAP the slowest fit here).
QUIET = {"val_every": 10 ** 6, "val_every_after_rescale": 10 ** 6, "target_fooling": 1.01, "num_candidates": 3}


def build(case: str, *, budget: int | None = None, ck: Checkpointer | None = None, quiet: bool = False,
          **extra: Any) -> UniversalAttack:
    """A fresh attack of ``case`` (``test_baseline_resume.CASES``) under ``trainer.budget`` = ``budget``."""
    torch.manual_seed(0)
    config, overrides, _ = CASES[case]
    params = {**config_values(config), **overrides}
    if quiet:
        params.update({k: v for k, v in QUIET.items() if k in params})
    attack = attack_class(config)(build_model("tiny"), XI, seed=0, **{**params, **extra},
                 trainer=TrainerSettings(epochs=2, batch_size=8, progress=False, channels_last=False, budget=budget))
    if ck is not None:
        attack.checkpointer = ck
    if case == "multi_seed":
        JOINT.add(id(attack))
    return attack


#: Attacks built for the K = 2 case (fitted with ``fit_many`` over two loaders).
JOINT: set[int] = set()


def fit(attack: UniversalAttack) -> torch.Tensor:
    if id(attack) in JOINT:
        return attack.fit_many([loader(0), loader(1)])
    return attack.fit(loader())


def passes_per_step(attack: UniversalAttack) -> list[int]:
    """Watch the attack's fit: the pass count at the end of every step."""
    counts: list[int] = []
    ck = attack.checkpointer
    done = ck.step_done
    ck.step_done = lambda: (counts.append(attack.meter.passes), done())  # type: ignore[method-assign]
    return counts


@pytest.mark.parametrize("config", sorted(p.stem for p in (CONF / "attack").glob("*.yaml")))
def test_budget_stops_every_attack_within_one_step(config: str) -> None:
    attack = build(config, budget=BUDGET, quiet=True)
    counts = passes_per_step(attack)
    delta = fit(attack)
    assert float(delta.abs().max()) <= XI + 1e-6
    assert counts[-1] >= BUDGET and (len(counts) == 1 or counts[-2] < BUDGET), counts  # the first step to reach it
    assert attack.describe()["passes"] == counts[-1]


def test_budget_replaces_epochs_and_iterations() -> None:
    """2 epochs of 5 batches are 90 passes; a budget of 150 runs on into a third epoch (17 steps of 9)."""
    dominant = build("dominant", budget=150)
    fit(dominant)
    assert dominant.describe()["passes"] == 153 and dominant.checkpointer.step == 17
    tuap = build("tuap", budget=30)  # its 10 iterations of 12 would be 120 passes
    fit(tuap)
    assert tuap.meter.passes == 36 and tuap.checkpointer.step == 3
    # the record's budget note states the budget, not the epochs or iteration cap it replaced
    assert dominant.describe()["budget_note"] == "153 of 150 passes (trainer.budget)"
    assert tuap.describe()["budget_note"] == "36 of 30 passes (trainer.budget)"
    assert build("tuap").describe()["budget_note"].endswith("it (cap 10 of 2000)")


@pytest.mark.parametrize(("case", "passes", "forward"), [
    ("dominant", 2 * 5 * (8 + 1), 0),  # epochs x batches x (B + 1): the pattern row counts
    ("multi_seed", 2 * 5 * (8 + 1), 0),  # K = 2 patterns in one batch: per pattern
    ("cosine_uap", 2 * 5 * 8, 2 * 5 * 8),  # the clean logits are forward-only
    ("tuap", 10 * 12, 10 * 12),  # iterations x batch; the clean top-1 forward-only
    ("fff", 12, 4 * 16),  # the pattern alone, 1 row per step; validation every 3 steps and the final check
    ("gap", 10 * 12, 10 * 12 + 4 * 16),  # generator: the rows it backpropagates; least-likely targets, 4 checks
    ("nag", 10 * 2 * 8, 10 * 8 + 4 * 16),  # x + delta and x + shuffled delta; clean top-1, 4 checks
    ("sga", 2 * (3 * (2 * 12 // 4) * 4 + 2 * 4), 2 * 40),  # inner minibatch rows; each outer batch's clean top-1
])
def test_reported_passes_match_a_hand_count(case: str, passes: int, forward: int) -> None:
    attack = build(case)
    fit(attack)
    info = attack.describe()
    assert (info["passes"], info["forward_passes"]) == (passes, forward)
    assert "passes_from_step" not in info


@pytest.mark.parametrize("how", ["kill", "signal"])
@pytest.mark.parametrize("case", ["dominant", "tuap", "gap", "uap", "sga"])
def test_a_budget_fit_resumes_with_the_exact_count(tmp_path: Path, case: str, how: str) -> None:
    budget = 100
    reference = build(case, budget=budget, quiet=True)
    expected = fit(reference)
    stop = 2
    ck = Checkpointer(tmp_path, every=1)
    done = ck.step_done

    def interrupt() -> None:
        if ck.step + 1 == stop and how == "signal":
            ck.stop_signal = signal.SIGTERM
        done()
        if ck.step == stop:
            raise Kill

    ck.step_done = interrupt  # type: ignore[method-assign]
    with pytest.raises(Interrupted if how == "signal" else Kill):
        fit(build(case, budget=budget, quiet=True, ck=ck))
    resumed = build(case, budget=budget, quiet=True, ck=Checkpointer(tmp_path, every=1))
    resumed.checkpointer.prepare()
    assert torch.equal(fit(resumed), expected)
    assert resumed.meter.report() == reference.meter.report()
    again = build(case, budget=budget, quiet=True, ck=Checkpointer(tmp_path, every=1))
    again.checkpointer.prepare()
    steps = passes_per_step(again)
    assert torch.equal(fit(again), expected) and steps == []  # finished: nothing is fitted again
    assert again.meter.report() == reference.meter.report()


@pytest.mark.parametrize("case", ["sgd_uap", "tuap"])
def test_a_checkpoint_without_pass_count_resumes(tmp_path: Path, case: str) -> None:
    """Checkpoints written before pass counting (SGD-UAP's: the attack's state at the top level) resume
    bitwise; the count then starts at the resumed step and says so."""
    expected = fit(build(case))
    ck = Checkpointer(tmp_path, every=EVERY)
    done = ck.step_done

    def kill() -> None:
        done()
        if ck.step == 4:
            raise Kill

    ck.step_done = kill  # type: ignore[method-assign]
    with pytest.raises(Kill):
        fit(build(case, ck=ck))
    payload = read_checkpoint(tmp_path / CHECKPOINT)
    state = payload["state"]
    payload["state"] = state["attack"] if case == "sgd_uap" else {k: v for k, v in state.items() if k != "meter"}
    write_checkpoint(tmp_path / CHECKPOINT, payload)
    resumed = build(case, ck=Checkpointer(tmp_path, every=EVERY))
    resumed.checkpointer.prepare()
    assert torch.equal(fit(resumed), expected)
    assert resumed.describe()["passes_from_step"] == 3


class RandomImages:
    """Five batches of 8 images per pass drawn from the global torch RNG: a fit that any RNG leak would change."""

    def __len__(self) -> int:
        return 5

    def __iter__(self) -> Iterator[tuple[torch.Tensor, None]]:
        for _ in range(5):
            yield torch.rand(8, 3, 32, 32), None


class GridCurve:
    """Records the pattern at the first step to reach each of ``points`` passes, and tries to disturb the fit."""

    def __init__(self, points: list[int], model: torch.nn.Module) -> None:
        self.points, self.model = points, model
        self.seen: list[int] = []
        self.recorded: list[tuple[int, torch.Tensor]] = []

    def due(self, passes: int) -> bool:
        self.seen.append(passes)
        return len(self.recorded) < len(self.points) and passes >= self.points[len(self.recorded)]

    def record(self, passes: int, pattern: torch.Tensor) -> None:
        assert not torch.is_grad_enabled() and not pattern.requires_grad
        self.recorded.append((passes, pattern.clone()))
        torch.rand(100), np.random.rand(3), random.random()  # every RNG the fit might use
        self.model((torch.rand(4, 3, 32, 32) + pattern.reshape(-1, 3, 32, 32)[:1]).clamp(0, 1))  # not a fit pass


def test_curve_points_cost_no_pass_and_no_randomness() -> None:
    runs = {}
    for with_curve in (False, True):
        attack = build("dominant")
        curve = GridCurve([20, 40, 80], attack.model) if with_curve else None
        attack.curve = curve
        torch.manual_seed(1)
        runs[with_curve] = attack.fit(RandomImages()), attack.meter.report(), curve
    (plain, plain_info, _), (curved, curved_info, curve) = runs[False], runs[True]
    assert isinstance(curve, Curve)
    assert torch.equal(plain, curved) and plain_info == curved_info == {"passes": 90, "forward_passes": 0}
    assert curve.seen == [9 * k for k in range(1, 11)]  # asked after every step
    assert [p for p, _ in curve.recorded] == [27, 45, 81]
    early = build("dominant", budget=27)  # the same fit stopped at the first point: the pattern it recorded
    torch.manual_seed(1)
    assert torch.equal(early.fit(RandomImages()), curve.recorded[0][1])


class SavedCurve(GridCurve):
    """A curve whose points are checkpointed with the loop."""

    def state_dict(self) -> dict[str, Any]:
        return {"passes": [p for p, _ in self.recorded], "patterns": [x for _, x in self.recorded]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.recorded = list(zip(state["passes"], state["patterns"], strict=True))


def test_curve_points_survive_a_kill(tmp_path: Path) -> None:
    attack = build("tuap")
    attack.curve = expected = SavedCurve([30, 60, 90], attack.model)
    fit(attack)
    ck = Checkpointer(tmp_path, every=EVERY)
    done = ck.step_done

    def kill() -> None:
        done()
        if ck.step == 8:  # after the point at 96 passes; the last checkpoint (step 6) holds those at 36 and 60
            raise Kill

    ck.step_done = kill  # type: ignore[method-assign]
    killed = build("tuap", ck=ck)
    killed.curve = SavedCurve([30, 60, 90], killed.model)
    with pytest.raises(Kill):
        fit(killed)
    resumed = build("tuap", ck=Checkpointer(tmp_path, every=EVERY))
    resumed.curve = curve = SavedCurve([30, 60, 90], resumed.model)
    resumed.checkpointer.prepare()
    fit(resumed)
    assert [p for p, _ in curve.recorded] == [p for p, _ in expected.recorded] == [36, 60, 96]
    assert all(torch.equal(x, y) for (_, x), (_, y) in zip(curve.recorded, expected.recorded, strict=True))


def test_a_generator_curve_gets_its_samples() -> None:
    plain, attack = build("nag"), build("nag")
    attack.curve = curve = GridCurve([50, 100], attack.model)
    assert torch.equal(fit(attack), fit(plain))
    weights = plain.net.state_dict()  # reading samples leaves the generator as it was
    assert all(torch.equal(v, weights[k]) for k, v in attack.net.state_dict().items())
    assert [(p, x.shape) for p, x in curve.recorded] == [(64, (3, 3, 32, 32)), (112, (3, 3, 32, 32))]


def test_a_budget_no_step_can_spend_ends_after_an_idle_pass() -> None:
    """A loop whose steps make no classifier pass (here: no classifier at all) stops after one whole pass."""
    host = LoopHost(TrainerSettings(progress=False, budget=10), lambda d: d)
    steps: list[int] = []
    run_steps(host, lambda x: steps.append(x.shape[0]), Feed(loader()))
    assert steps == [8] * 5 and host.checkpointer.epoch == 0


def test_budget_setting_and_fingerprint() -> None:
    assert TrainerSettings.from_config({"budget": 64}).budget == 64
    with pytest.raises(ConfigError, match="trainer.budget"):
        TrainerSettings.from_config({"budget": 0})
    # a null budget leaves the fingerprint of configs written before it existed unchanged
    assert flat_config({"trainer": {"epochs": 3, "budget": None}}) == flat_config({"trainer": {"epochs": 3}})
    assert flat_config({"trainer": {"budget": 64}}) == {"trainer.budget": "64"}
