"""The run record, ``metrics.json``: its identity fields, writing it, and reading it back.

Every entry point writes one finished record per job: the run's identity (``kind`` = the app that
wrote it, task, model, data, loss, attack, xi, seed, commit, ...), its results (``metrics``,
``floors``, ``timing``, ...) and a stamp (``status: finished``, ``output_dir``, ``finished_at``). Only
finished jobs have a ``metrics.json``; it is written atomically, so a reader never sees half a file.

Readers go through here: the report and the claims scorecard (:func:`load_records`,
:func:`newest_per_cell`, :func:`select`), the analysis apps (:func:`find_source_run`), the
skip-finished-run check (:func:`finished_record`) and the embedded comparison.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from dominant_patterns.attacks.card import data_setting, display_name, row_rank
from dominant_patterns.attacks.catalog import attack_catalog
from dominant_patterns.core.atomic import atomic_write_text
from dominant_patterns.core.checkpoint import CHECKPOINT, config_differences, fingerprint
from dominant_patterns.core.checkpoint_file import CheckpointError, read_checkpoint
from dominant_patterns.core.errors import ConfigError, UserInputError
from dominant_patterns.runs.identity import CELL_KEYS, SOURCE_KEYS
from dominant_patterns.runs.run_dir import set_aside, write_essential

log = logging.getLogger(__name__)

RECORD = "metrics.json"
FINISHED = "finished"


# ---------------------------------------------------------------------------------------------
# Writing


def jsonable(value: Any) -> Any:
    """Plain JSON values: non-finite floats become null, tensors and numpy scalars their items."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value


def write_record(out_dir: Path, identity: Mapping[str, Any], results: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``out_dir/metrics.json``: identity + stamp (finished, output dir, time) + results; returns it.

    A finished record already there is never overwritten silently: it is set aside as ``metrics.json.replaced``
    (``.replaced.1``, ... when taken) with a warning. A failed write stops with one line (:class:`StorageError`).
    """
    path = Path(out_dir) / RECORD
    stamp = {"output_dir": str(out_dir), "finished_at": time.time(), "status": FINISHED}
    record = jsonable({**identity, **stamp, **results})
    if _is_finished(path):
        kept = set_aside(path, ".replaced")
        log.warning("%s already held a finished record; it is kept as %s", path, kept.name)
    write_essential(path, lambda: atomic_write_text(path, json.dumps(record, indent=2)))
    return record


def _is_finished(path: Path) -> bool:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("status") == FINISHED


def finished_record(out_dir: Path, config: Mapping[str, str], overwrite: bool) -> dict[str, Any] | None:
    """The finished record in ``out_dir`` when there is one (the run is then skipped).

    ``overwrite`` sets it aside (``metrics.json.replaced``) so the dir no longer claims to be
    finished; a finished record of a different config is refused, naming the keys that differ.
    """
    path = Path(out_dir) / RECORD
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        kept = set_aside(path, ".unreadable")
        log.warning("%s is unreadable (%s); renamed to %s, running again", path, exc, kept.name)
        return None
    if not isinstance(record, dict) or record.get("status") != FINISHED:
        return None
    if overwrite:
        kept = set_aside(path, ".replaced")
        log.warning("overwrite=true: the finished result in %s is replaced (old record: %s)", out_dir, kept.name)
        return None
    old = record.get("config_fingerprint")
    if old is not None and old != fingerprint(config):
        diff = "different values"
        with contextlib.suppress(CheckpointError, OSError):
            diff = config_differences(read_checkpoint(Path(out_dir) / CHECKPOINT).get("config", {}), config)
        raise ConfigError(f"{out_dir} already holds a finished result of a different config ({diff}); "
                          "choose another output dir, or add overwrite=true to replace it")
    return record


# ---------------------------------------------------------------------------------------------
# Reading


def _timestamp(record: Mapping[str, Any], path: Path) -> float:
    value = record.get("finished_at")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            pass
    return path.stat().st_mtime


def record_to_row(record: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """Flatten one record: identity fields, ``metrics`` as columns, floors as ``floor/<name>/<key>``."""
    row: dict[str, Any] = {k: v for k, v in record.items() if not isinstance(v, (dict, list))}
    row["tags"] = ",".join(map(str, record.get("tags") or []))
    for key, value in (record.get("metrics") or {}).items():
        if not isinstance(value, (dict, list)):
            row[key] = value
    for floor, values in (record.get("floors") or {}).items():
        for key, value in (values or {}).items():
            if not isinstance(value, (dict, list)):
                row[f"floor/{floor}/{key}"] = value
    info = attack_info(record)
    row.setdefault("target_class", info.get("target_class"))
    row["attack_label"] = display_name(info)
    row["data_setting"] = data_setting(info)
    row["attack_rank"] = "|".join(map(str, row_rank(info)))
    row.setdefault("kind", "run")
    row["run_dir"] = str(path.parent)
    row["timestamp"] = _timestamp(record, path)
    return row


def attack_info(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record's ``attack_info`` with its attack's card (records written before cards existed get the card of
    the attack a config names so, :func:`attacks.catalog.attack_catalog`)."""
    info = dict(record.get("attack_info") or {})
    if "card" not in info and record.get("attack"):
        known = attack_catalog().get(str(record["attack"]), {})
        info = {**known, **info}
    return info


#: Where records are read from: one folder, or several (the run outputs and committed ``records/`` folders).
Roots = str | Path | Sequence[str | Path]


def record_paths(roots: Roots) -> list[Path]:
    """Every ``metrics.json`` under ``roots`` (a missing folder has none)."""
    folders = [roots] if isinstance(roots, (str, Path)) else list(roots)
    return sorted(path for folder in folders for path in Path(folder).glob(f"**/{RECORD}"))


def read_records(root: Roots, tasks: Iterable[str] | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """Every finished record under ``root`` (a folder or several; optionally only of ``tasks``), with its path."""
    wanted = set(tasks) if tasks is not None else None
    found = []
    for path in record_paths(root):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("skipping unreadable %s: %s", path, exc)
            continue
        if not isinstance(record, dict) or record.get("status", FINISHED) != FINISHED:
            continue
        if wanted is not None and record.get("task_name") not in wanted:
            continue
        found.append((path, record))
    return found


def load_records(root: Roots, tasks: Iterable[str] | None = None) -> pd.DataFrame:
    """All finished records under ``root`` (a folder or several; optionally only ``tasks``) as a DataFrame."""
    df = pd.DataFrame([record_to_row(record, path) for path, record in read_records(root, tasks)])
    for key in CELL_KEYS:
        if key not in df.columns:
            df[key] = None
    return df


def newest_per_cell(df: pd.DataFrame, keys: Sequence[str] = CELL_KEYS) -> pd.DataFrame:
    """Keep the newest record of each cell (reruns replace older runs)."""
    if df.empty:
        return df
    key_frame = df[list(keys)].astype(object).where(df[list(keys)].notna(), "<none>").astype(str)
    order = df.assign(_key=key_frame.agg("|".join, axis=1)).sort_values("timestamp")
    return order.drop_duplicates("_key", keep="last").drop(columns="_key").sort_index()


def select(df: pd.DataFrame, filters: Mapping[str, Any]) -> pd.DataFrame:
    """Rows whose columns match ``filters`` (a value, a list of values, or None for missing)."""
    mask = pd.Series(True, index=df.index)
    for key, allowed in filters.items():
        column = df[key] if key in df.columns else pd.Series(None, index=df.index, dtype=object)
        if allowed is None:
            mask &= column.isna()
        else:
            values = allowed if isinstance(allowed, (list, tuple, set)) else [allowed]
            mask &= column.isin(list(values))
    return df[mask]


def find_source_run(output_dir: str | Path, source: Mapping[str, Any]) -> Path:
    """The folder of the newest finished fitting run matching ``source`` (``task`` may be a name or a list)."""
    tasks = source.get("task")
    if isinstance(tasks, str):
        tasks = [tasks]
    df = load_records(output_dir, tasks)
    if not df.empty:
        df = df[df["kind"].fillna("run") == "run"]
    filters: dict[str, Any] = {k: source[k] for k in SOURCE_KEYS if source.get(k) is not None}
    if "target_class" not in filters:
        filters["target_class"] = None
    match = select(newest_per_cell(df), filters) if not df.empty else df
    match = match[[(Path(d) / "pattern.pt").is_file() for d in match["run_dir"]]] if not match.empty else match
    if match.empty:
        raise UserInputError(f"no finished run with a pattern.pt under {output_dir} matches source={dict(source)} "
                             f"(tasks {tasks or 'any'}); run that experiment first or pass pattern=PATH")
    if filters.get("seed") is None and "seed" in match.columns:
        match = match.sort_values(["seed", "timestamp"], ascending=[True, False])
    else:
        match = match.sort_values("timestamp", ascending=False)
    return Path(match.iloc[0]["run_dir"])
