"""K dominant patterns in one pass, recorded as K seed runs (``attack.num_patterns=K``).

A fitting job with ``seed=s`` and ``attack.num_patterns=K`` fits the patterns of seeds s ... s+K-1
together (:class:`~dominant_patterns.attacks.multi_seed.MultiSeedDominant`: one forward of K * (B + 1)
rows per step instead of K runs of B + 1). Each pattern gets what a separate run of its seed would
get (its fit and evaluation sets, its loader order, its noise floors) and its own finished record in
``<job dir>/seed_<s>/`` (``pattern.pt``, ``pattern.png``, ``examples.png``, ``metrics.json``,
``summary.md``, its own W&B run with its identity and tags). A record's identity and config
fingerprint are those of a separate run with ``seed=s``, so the report (newest record per cell), the
source-pattern lookup and the skip-finished check treat the K records as K seed runs. The job's
checkpoint (``<job dir>/checkpoint.ckpt``) holds the joint fit. K = 1 is the plain single run, written
in the job dir itself.

    python -m dominant_patterns attack.num_patterns=3 seed=0      # seeds 0, 1, 2 in one fit
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from dominant_patterns.config_checks import check_num_patterns
from dominant_patterns.jobs import Job
from dominant_patterns.loops import LogFn
from dominant_patterns.metrics import mean_over_samples
from dominant_patterns.records import finished_record
from dominant_patterns.tracking import RunRecorder

#: The attack class a K-pattern job fits with (``attack._target_`` of ``conf/attack/dominant.yaml`` otherwise).
MULTI_PATTERN_TARGET = "dominant_patterns.attacks.multi_seed.MultiSeedDominant"
NUM_PATTERNS_KEY = "attack.num_patterns"


@dataclass
class PatternSlot:
    """One pattern of a job: its seed, the folder of its record, the flat config its record fingerprints
    (a separate run's of that seed) and its finished record when it already has one."""

    seed: int
    out_dir: Path
    config: dict[str, str]
    previous: dict[str, Any] | None = None


def pattern_config(run_config: dict[str, str], seed: int) -> dict[str, str]:
    """The flat config of one pattern: a separate run's with ``seed``. ``attack.num_patterns`` is left out (how
    many patterns a job fits together is not part of one pattern's config), so a K = 1 run fingerprints as
    it did before the key existed."""
    return {**{k: v for k, v in run_config.items() if k != NUM_PATTERNS_KEY}, "seed": json.dumps(seed)}


def job_config(run_config: dict[str, str], slots: Sequence[PatternSlot]) -> dict[str, str]:
    """The flat config the job's checkpoint fingerprints: its first pattern's, plus K when K > 1 (a K-pattern
    checkpoint resumes only the same K-pattern fit)."""
    first = dict(slots[0].config)
    return first if len(slots) == 1 else {**first, NUM_PATTERNS_KEY: json.dumps(len(slots))}


def plan_patterns(cfg: DictConfig, out_dir: Path, run_config: dict[str, str]) -> list[PatternSlot]:
    """The job's patterns: one in ``out_dir`` (K = 1), else seeds ``seed ... seed+K-1`` in ``out_dir/seed_<s>``."""
    k, seed = check_num_patterns(cfg.attack), int(cfg.seed)
    if k == 1:
        return [PatternSlot(seed, out_dir, pattern_config(run_config, seed))]
    return [PatternSlot(s, out_dir / f"seed_{s}", pattern_config(run_config, s)) for s in range(seed, seed + k)]


def all_finished(slots: Sequence[PatternSlot], overwrite: bool) -> bool:
    """Fill each slot's finished record (``records.finished_record``); True when every pattern has one."""
    for slot in slots:
        slot.previous = finished_record(slot.out_dir, slot.config, overwrite=overwrite)
    return all(slot.previous is not None for slot in slots)


def seed_config(cfg: DictConfig, seed: int) -> DictConfig:
    """``cfg`` with ``seed`` (the config a pattern's record and W&B run show; ``attack.num_patterns`` kept)."""
    out = copy.deepcopy(cfg)
    with open_dict(out):
        out.seed = seed
    return out


def open_recorders(job: Job, cfg: DictConfig, slots: Sequence[PatternSlot],
                   identities: Sequence[dict[str, Any]]) -> list[RunRecorder | None]:
    """One recorder per unfinished pattern (None for finished ones): the job's own for K = 1, else one in each
    ``seed_<s>/`` (each its own W&B run, open side by side), closed with the job."""
    if len(slots) == 1:
        return [job.record(**identities[0]) if slots[0].previous is None else None]
    (job.out_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    recorders: list[RunRecorder | None] = []
    for slot, identity in zip(slots, identities, strict=True):
        recorders.append(None if slot.previous is not None else job.open_recorder(
            slot.out_dir, seed_config(cfg, slot.seed), identity, concurrent=any(r is not None for r in recorders)))
    return recorders


def fan_out_log(attack: Any, recorders: Sequence[RunRecorder | None]) -> LogFn:
    """The K-pattern fit's logger: each pattern's own mean loss (``train/loss`` over each log window,
    ``train/epoch_loss`` over each epoch) to its recorder, in place of the summed loss the loop reports."""

    def log(metrics: dict[str, float], step: int) -> None:
        for key, window in (("train/loss", "window"), ("train/epoch_loss", "epoch")):
            if key not in metrics:
                continue
            for recorder, value in zip(recorders, attack.take_losses(window), strict=True):
                if recorder is not None:
                    recorder.log({key: value, "train/epoch": metrics.get("train/epoch")}, step)

    return log


def fit_patterns(attack: Any, loaders: Sequence[Any]) -> list[torch.Tensor]:
    """The job's patterns: ``attack.fit`` on the one loader, or ``fit_many`` over K (one pattern each)."""
    if len(loaders) == 1:
        return [attack.fit(loaders[0]).detach().float()]
    return list(attack.fit_many(loaders).detach().float().unbind(0))


def multi_fit_info(slots: Sequence[PatternSlot], index: int, job_dir: Path) -> dict[str, Any]:
    """What a K-pattern record says about the joint fit it came from (absent from single-run records)."""
    return {"num_patterns": len(slots), "index": index, "seeds": [s.seed for s in slots], "job_dir": str(job_dir)}


def combined(slots: Sequence[PatternSlot], results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A K-pattern job's result: the mean metrics over its patterns and each pattern's results by seed."""
    metrics, spread = mean_over_samples([r["metrics"] for r in results])
    return {"metrics": metrics, "over_patterns": spread,
            "patterns": {slot.seed: r for slot, r in zip(slots, results, strict=True)}}
