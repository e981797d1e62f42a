"""A run's identity: which fields make a table cell, which find a source pattern, which become W&B tags, and the
config key of each (one table, :data:`IDENTITY_FIELDS`); the identity a record starts with; and the flat config a
run's fingerprint hashes (:func:`flat_config`: everything but the keys that do not change the result)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class IdentityField:
    """One field of a run's identity: the config key that holds it, and what it is used for."""

    name: str
    #: The resolved-config key of the field (W&B config keys are the same dotted paths).
    config: str
    #: Part of a table cell (the newest record per cell wins in reports).
    cell: bool = True
    #: A key the analysis apps find their source pattern by.
    source: bool = False
    #: A W&B tag.
    tag: bool = False


#: A run's identity fields, in one table: the cells of reports, the source-pattern keys, the W&B tags and the
#: dashboard's identity -> config map all come from it.
IDENTITY_FIELDS: dict[str, IdentityField] = {f.name: f for f in (
    IdentityField("kind", "app"),
    IdentityField("model", "model.name", source=True, tag=True),
    IdentityField("dataset", "dataset.name", source=True, tag=True),
    IdentityField("eval_dataset", "eval_dataset.name"),
    IdentityField("loss", "loss.name", source=True, tag=True),
    IdentityField("loss_layer", "loss.layer"),
    IdentityField("attack", "attack.name", source=True, tag=True),
    IdentityField("target_class", "attack.target_class", source=True),
    IdentityField("xi", "xi"),
    IdentityField("seed", "seed", source=True, tag=True),
    IdentityField("source_model", "source.model"),
    IdentityField("source_dataset", "source.dataset"),
)}


CELL_KEYS = tuple(k for k, f in IDENTITY_FIELDS.items() if f.cell)


SOURCE_KEYS = tuple(k for k, f in IDENTITY_FIELDS.items() if f.source)


TAG_KEYS = tuple(k for k, f in IDENTITY_FIELDS.items() if f.tag)


#: Identity field (and ``task_name``) -> the config key that holds it.
CONFIG_KEYS = {**{k: f.config for k, f in IDENTITY_FIELDS.items()}, "task_name": "task_name"}


def git_commit(default: str = "unknown") -> str:
    """The project's git commit (with ``-dirty`` when the tree has changes)."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return default
    return f"{sha}-dirty" if dirty else sha


def run_identity(kind: str, task_name: str, tags: Sequence[str], **fields: Any) -> dict[str, Any]:
    """The identity every record starts with: the app (``kind``), task, tags, ``fields`` and the commit."""
    return {"kind": kind, "task_name": task_name, "tags": list(tags), **fields, "commit": git_commit()}


def source_identity(meta: Mapping[str, Any], path: Path, xi: float,
                    source: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Identity fields an analysis record inherits from the pattern it scores (``pattern.pt`` metadata); ``xi``
    is the budget the pattern was checked against (``pattern_files.read_pattern_file``), never an unchecked value;
    ``source``: the file it came from (format, scale, checksum, how it was fitted)."""
    return {"source_model": meta.get("model"), "source_dataset": meta.get("dataset"),
            "source_task": meta.get("task_name"), "pattern_path": str(path), "loss": meta.get("loss"),
            "loss_layer": meta.get("loss_layer", "logits"), "attack": meta.get("attack") or "external",
            "seed": meta.get("seed"), "xi": xi, "xi_255": xi * 255,
            **({"pattern_source": dict(source)} if source is not None else {})}


#: Config keys that do not change the result (left out of the run's fingerprint).
VOLATILE_KEYS = ("app", "hydra", "logger", "resume", "overwrite", "checkpoint_every", "paths", "tags", "task_name",
                 "trainer.progress", "trainer.log_every", "trainer.device", "trainer.compile", "trainer.fold_bn",
                 "trainer.eval_batch_size", "trainer.channels_last", "trainer.curve_start", "trainer.curve_factor",
                 "dataset.num_workers", "eval_dataset.num_workers", "attack.cache_dir")


#: Keys added after fingerprints were first written, left out while at the value that changes nothing, so the
#: output dirs written before them keep their fingerprint (and resume or skip as before).
NEUTRAL_DEFAULTS: dict[str, Any] = {"trainer.budget": None}


def flat_config(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"trainer": {"epochs": 3}} -> {"trainer.epochs": "3"}`` without the volatile keys (nor neutral defaults)."""
    out: dict[str, str] = {}
    for key, value in cfg.items():
        full = f"{prefix}{key}"
        if full in VOLATILE_KEYS or (full in NEUTRAL_DEFAULTS and value == NEUTRAL_DEFAULTS[full]):
            continue
        if isinstance(value, Mapping):
            out.update(flat_config(value, f"{full}."))
        else:
            out[full] = json.dumps(value, sort_keys=True, default=str)
    return out
