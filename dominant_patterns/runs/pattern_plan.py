"""The patterns one fitting job makes: K = ``attack.num_patterns`` slots, of seeds s ... s+K-1.

K = 1 is the plain run: one slot whose record is the job dir's. With K > 1 the attack fits the K patterns in one
pass (its card says it can, ``card.multi_pattern``; one forward of K * (B + 1) rows per step instead of K runs of
B + 1), and each pattern gets what a separate run of its seed would get (its fit and evaluation sets, loader
order, noise floors) and its own finished record in ``<job dir>/seed_<s>/`` (``pattern.pt``, pictures,
``metrics.json``, ``summary.md``, its own W&B run). A record's identity and config fingerprint are those of a
separate run with ``seed=s``, so the report, the source-pattern lookup and the skip-finished check treat the K
records as K seed runs. The job's checkpoint (``<job dir>/checkpoint.ckpt``) holds the joint fit.

Everything that differs between K = 1 and K > 1 is decided here, by :class:`PatternPlan`; the run app follows one
path for both.

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
from omegaconf import DictConfig, open_dict

from dominant_patterns.analysis.metrics import mean_over_samples
from dominant_patterns.core.loops import LogFn
from dominant_patterns.runs.config_checks import check_num_patterns
from dominant_patterns.runs.jobs import Job
from dominant_patterns.runs.records import finished_record
from dominant_patterns.runs.tracking import RunRecorder

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


def seed_config(cfg: DictConfig, seed: int) -> DictConfig:
    """``cfg`` with ``seed`` (the config a pattern's record and W&B run show; ``attack.num_patterns`` kept)."""
    out = copy.deepcopy(cfg)
    with open_dict(out):
        out.seed = seed
    return out


@dataclass
class PatternPlan:
    """The job's K pattern slots and what K decides: record folders, recorders, logging, the record's extras."""

    job_dir: Path
    slots: list[PatternSlot]

    @classmethod
    def of(cls, cfg: DictConfig, job_dir: Path, run_config: dict[str, str]) -> PatternPlan:
        """One slot in ``job_dir`` (K = 1), else seeds ``seed ... seed+K-1`` in ``job_dir/seed_<s>``."""
        k, seed = check_num_patterns(cfg.attack), int(cfg.seed)
        if k == 1:
            return cls(job_dir, [PatternSlot(seed, job_dir, pattern_config(run_config, seed))])
        return cls(job_dir, [PatternSlot(s, job_dir / f"seed_{s}", pattern_config(run_config, s))
                             for s in range(seed, seed + k)])

    @property
    def joint(self) -> bool:
        """True when one fit makes several patterns (K > 1)."""
        return len(self.slots) > 1

    @property
    def seeds(self) -> list[int]:
        return [slot.seed for slot in self.slots]

    def checkpoint_config(self) -> dict[str, str]:
        """The flat config the job's checkpoint fingerprints: its first pattern's, plus K when K > 1 (a K-pattern
        checkpoint resumes only the same K-pattern fit)."""
        first = dict(self.slots[0].config)
        return {**first, NUM_PATTERNS_KEY: json.dumps(len(self.slots))} if self.joint else first

    def all_finished(self, overwrite: bool) -> bool:
        """Fill each slot's finished record (``records.finished_record``); True when every pattern has one."""
        for slot in self.slots:
            slot.previous = finished_record(slot.out_dir, slot.config, overwrite=overwrite)
        return all(slot.previous is not None for slot in self.slots)

    def open_recorders(self, job: Job, cfg: DictConfig, identities: Sequence[dict[str, Any]]
                       ) -> list[RunRecorder | None]:
        """One recorder per unfinished pattern (None for a finished one), in its record's folder with the config of
        its seed; the K recorders of a joint fit (each its own W&B run) stay open side by side."""
        recorders: list[RunRecorder | None] = []
        for slot, identity in zip(self.slots, identities, strict=True):
            recorders.append(None if slot.previous is not None else job.open_recorder(
                slot.out_dir, seed_config(cfg, slot.seed), identity, concurrent=any(r is not None for r in recorders)))
        return recorders

    def logger(self, attack: Any, recorders: Sequence[RunRecorder | None]) -> LogFn | None:
        """The fit's training-curve logger: the one record's; for a joint fit each pattern's own mean loss
        (``attack.take_losses``) to its record, in place of the summed loss the loop reports."""
        if not self.joint:
            return recorders[0].log if recorders[0] is not None else None

        def log(metrics: dict[str, float], step: int) -> None:
            for key, window in (("train/loss", "window"), ("train/epoch_loss", "epoch")):
                if key not in metrics:
                    continue
                for recorder, value in zip(recorders, attack.take_losses(window), strict=True):
                    if recorder is not None:
                        recorder.log({key: value, "train/epoch": metrics.get("train/epoch")}, step)

        return log

    def fit(self, attack: Any, loaders: Sequence[Any]) -> list[torch.Tensor]:
        """The job's patterns, one per loader: ``attack.fit`` for one, ``fit_many`` for a joint fit."""
        if not self.joint:
            return [attack.fit(loaders[0]).detach().float()]
        return list(attack.fit_many(loaders).detach().float().unbind(0))

    def fit_note(self) -> str:
        """How the log line of the fit names the patterns ('' for one)."""
        return f", seeds {self.seeds[0]}-{self.seeds[-1]} in one pass" if self.joint else ""

    def record_extras(self, index: int, fit_seconds: float) -> tuple[dict[str, Any], dict[str, Any]]:
        """What a joint fit's record adds (none for K = 1): its timing per pattern and where it came from."""
        if not self.joint:
            return {}, {}
        timing = {"fit_patterns": len(self.slots), "fit_seconds_per_pattern": fit_seconds / len(self.slots)}
        return timing, {"multi_fit": {"num_patterns": len(self.slots), "index": index, "seeds": self.seeds,
                                      "job_dir": str(self.job_dir)}}

    def result(self, results: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """The job's result: the one record's, or the mean metrics over the K patterns and each by seed."""
        if not self.joint:
            return results[0]
        metrics, spread = mean_over_samples([r["metrics"] for r in results])
        return {"metrics": metrics, "over_patterns": spread,
                "patterns": {slot.seed: r for slot, r in zip(self.slots, results, strict=True)}}
