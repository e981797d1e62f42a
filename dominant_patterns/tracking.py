"""A run's recorder: the training curve (``metrics.jsonl``), the final record (``metrics.json``, written
by :mod:`dominant_patterns.records`), both mirrored to W&B (the dashboard).

W&B is optional and fallible: a failure in init, log or finish is warned about once and the
local files are still written. W&B itself prints nothing (``silent``: no banner, no run history/summary
after the run's result table); one log line says where the run went (its URL, or the folder to sync).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dominant_patterns.checks import check_choice
from dominant_patterns.records import RECORD, TAG_KEYS, jsonable, write_record

log = logging.getLogger(__name__)

WANDB_MODES = ("online", "offline", "disabled")


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
    return check_choice("logger.mode", mode, WANDB_MODES)


class RunRecorder:
    """Writes the run's local record and mirrors it to W&B when enabled.

    Args:
        out_dir: the run's output folder.
        logger_cfg: the ``logger`` config (``name: wandb|none``, project, entity, mode, group, ...).
        config: the resolved run config (logged to W&B at init).
        identity: the run's identity (``records.run_identity``), stored in ``metrics.json``.
        concurrent: open the W&B run beside the process's other open runs (the K records of one
            K-pattern job); by default any run left open in this process is finished first.
    """

    def __init__(self, out_dir: Path, logger_cfg: Mapping[str, Any], config: Mapping[str, Any],
                 identity: Mapping[str, Any], *, concurrent: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.identity = dict(identity)
        self.concurrent = concurrent
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
        tags += [f"{k}:{self.identity[k]}" for k in TAG_KEYS if k in self.identity]
        self._run = wandb.init(
            project=cfg.get("project", "dominant-patterns"), entity=cfg.get("entity"), group=cfg.get("group"),
            job_type=cfg.get("job_type"), name=cfg.get("run_name"), tags=tags, mode=mode,
            dir=str(self.out_dir), config={**config, "commit": self.identity.get("commit")},
            reinit="create_new" if self.concurrent else "finish_previous",
            settings=wandb.Settings(console="off", silent=True),
        )
        self._say_where(mode)

    def _say_where(self, mode: str) -> None:
        """One log line instead of W&B's banner: the run's URL online, else the folder to upload."""
        url = getattr(self._run, "url", None) if mode == "online" else None
        if url:
            log.info("W&B run: %s", url)
            return
        folder = Path(getattr(self._run, "dir", None) or self.out_dir).parent
        log.info("W&B %s run saved; upload it later with: wandb sync %s", mode, folder)

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
        record = jsonable({**({"step": step} if step is not None else {}), **flatten(metrics)})
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
        """Write the finished record (``records.write_record``) and mirror it to the W&B summary."""
        record = write_record(self.out_dir, self.identity, results)
        if self._run is not None:
            self._guard("summary", lambda: self._run.summary.update(flatten(record)))
        return self.out_dir / RECORD

    def close(self, exit_code: int = 0) -> None:
        if self._run is not None:
            run, self._run = self._run, None
            self._guard("finish", lambda: run.finish(exit_code=exit_code))
