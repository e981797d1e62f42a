"""Run records: a local ``metrics.jsonl``/``metrics.json`` (the record) mirrored to W&B (the dashboard).

W&B is optional and fallible: a failure in init, log or finish is warned about once and the
local files are still written.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

WANDB_MODES = ("online", "offline", "disabled")


def git_commit(default: str = "unknown") -> str:
    """The project's git commit (with ``-dirty`` when the tree has changes)."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return default
    return f"{sha}-dirty" if dirty else sha


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same folder and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value


def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a/b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{key}/"))
        else:
            out[key] = v
    return out


def resolve_wandb_mode(mode: str | None) -> str:
    """Explicit mode, else ``$WANDB_MODE``, else online with an API key, else offline."""
    mode = mode or os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
    if mode not in WANDB_MODES:
        from dominant_patterns.errors import ConfigError

        raise ConfigError(f"logger.mode={mode} is not valid. Valid choices: {', '.join(WANDB_MODES)}")
    return mode


class RunRecorder:
    """Writes the run's local record and mirrors it to W&B when enabled.

    Args:
        out_dir: the run's output folder.
        logger_cfg: the ``logger`` config (``name: wandb|none``, project, entity, mode, group, ...).
        config: the resolved run config (logged to W&B at init).
        identity: model/dataset/loss/attack/xi/seed/commit fields stored in ``metrics.json``.
    """

    def __init__(self, out_dir: Path, logger_cfg: Mapping[str, Any], config: Mapping[str, Any],
                 identity: Mapping[str, Any]) -> None:
        self.out_dir = Path(out_dir)
        self.identity = dict(identity)
        self.jsonl = self.out_dir / "metrics.jsonl"
        self._run: Any = None
        self._warned = False
        if logger_cfg.get("name", "none") == "wandb":
            mode = resolve_wandb_mode(logger_cfg.get("mode"))
            if mode != "disabled":
                self._guard("init", lambda: self._init_wandb(logger_cfg, config, mode))

    def _init_wandb(self, cfg: Mapping[str, Any], config: Mapping[str, Any], mode: str) -> None:
        import wandb

        tags = [str(t) for t in (cfg.get("tags") or [])]
        keys = ("model", "dataset", "loss", "attack", "seed")
        tags += [f"{k}:{self.identity[k]}" for k in keys if k in self.identity]
        self._run = wandb.init(
            project=cfg.get("project", "dominant-patterns"), entity=cfg.get("entity"), group=cfg.get("group"),
            job_type=cfg.get("job_type"), name=cfg.get("run_name"), tags=tags, mode=mode,
            dir=str(self.out_dir), config={**config, "commit": self.identity.get("commit")},
            reinit="finish_previous", settings=wandb.Settings(console="off"),
        )

    def _guard(self, what: str, fn: Any) -> Any:
        try:
            return fn()
        except Exception as exc:  # W&B must never stop a run
            if not self._warned:
                warnings.warn(f"W&B {what} failed ({type(exc).__name__}: {exc}); continuing with local files only",
                              stacklevel=2)
                log.warning("W&B %s failed: %s; local results are unaffected", what, exc)
                self._warned = True
            return None

    @property
    def wandb_run(self) -> Any:
        return self._run

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        record = _jsonable({**({"step": step} if step is not None else {}), **flatten(metrics)})
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with self.jsonl.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._run is not None:
            self._guard("log", lambda: self._run.log(flatten(metrics), step=step))

    def log_images(self, images: Mapping[str, Path]) -> None:
        if self._run is None:
            return

        def _log() -> None:
            import wandb

            self._run.log({k: wandb.Image(str(v)) for k, v in images.items()})

        self._guard("log images", _log)

    def finish(self, results: Mapping[str, Any]) -> Path:
        """Write ``metrics.json`` (identity + results, atomically) and the W&B summary.

        Only finished jobs get a ``metrics.json``: the record is stamped ``status: finished`` with the output
        dir and the time (the report's "newest rerun wins" and the skip-finished-runs check read them).
        """
        stamp = {"output_dir": str(self.out_dir), "finished_at": time.time(), "status": "finished"}
        record = _jsonable({**self.identity, **stamp, **results})
        path = self.out_dir / "metrics.json"
        atomic_write_text(path, json.dumps(record, indent=2))
        if self._run is not None:
            self._guard("summary", lambda: self._run.summary.update(flatten(record)))
        return path

    def close(self, exit_code: int = 0) -> None:
        if self._run is not None:
            run, self._run = self._run, None
            self._guard("finish", lambda: run.finish(exit_code=exit_code))
