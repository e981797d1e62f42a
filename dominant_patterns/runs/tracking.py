"""A run's recorder: the training curve (``metrics.jsonl``), the final record (``metrics.json``, written
by :mod:`dominant_patterns.runs.records`), both mirrored to W&B (the dashboard).

W&B is optional and fallible: a failure in init, log or finish is warned about once and the
local files are still written. W&B itself prints nothing (``silent``: no banner, no run history/summary
after the run's result table); one log line says where the run went (its URL, or the folder to sync).

Without network (a cluster compute node with an API key): an online init gives up after
``logger.init_timeout`` seconds (W&B's own default is 90 s) and the run is kept as an offline run to
upload later with ``wandb sync``, said in one log line. The failure is remembered for
:data:`RETRY_ONLINE_AFTER_S`: later runs of this process, and every job of the same Hydra sweep
(``<sweep dir>/.wandb_unreachable``, which holds the time), go offline at once instead of waiting again;
after that one run tries online again (and refreshes the marker if it fails again).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dominant_patterns.core.atomic import atomic_write_text
from dominant_patterns.core.checks import check_choice, check_positive
from dominant_patterns.runs.identity import TAG_KEYS
from dominant_patterns.runs.records import jsonable, write_record

log = logging.getLogger(__name__)

WANDB_MODES = ("online", "offline", "disabled")
#: ``logger.init_timeout`` when the logger config has no such key: an online init with network takes
#: 1-3 s, so 10 s leaves room for a slow link while a node without network loses 10 s, not W&B's 90 s.
DEFAULT_INIT_TIMEOUT_S = 10.0
#: How long a failed online init is trusted: meanwhile the process's and sweep's later runs go offline at once.
RETRY_ONLINE_AFTER_S = 900.0
#: In a sweep dir: when and why an online init of one of its jobs failed (JSON).
UNREACHABLE_MARKER = ".wandb_unreachable"
#: This process's last failed online init: ``"time"`` (``time.time()``) and ``"error"``.
_unreachable: dict[str, Any] = {}


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


def init_timeout(cfg: Mapping[str, Any]) -> float | None:
    """``logger.init_timeout`` in seconds (:data:`DEFAULT_INIT_TIMEOUT_S` without the key; null: W&B's own,
    ``$WANDB_INIT_TIMEOUT`` else 90 s)."""
    if "init_timeout" not in cfg:
        return DEFAULT_INIT_TIMEOUT_S
    value = cfg["init_timeout"]
    return None if value is None else check_positive("logger.init_timeout", value)


def _error_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (W&B's messages go on with advice we do not follow)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _sweep_marker() -> Path | None:
    """``<sweep dir>/.wandb_unreachable`` in a Hydra multirun (shared by its jobs in every process), else None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
            return None
        return Path(str(HydraConfig.get().sweep.dir)) / UNREACHABLE_MARKER
    except Exception:  # no Hydra app around this recorder
        return None


def known_unreachable() -> str | None:
    """How long ago and why an online init of this process or sweep failed, if under
    :data:`RETRY_ONLINE_AFTER_S` ago; else None (try online)."""
    now = time.time()
    found = [(float(_unreachable["time"]), f"in this process ({_unreachable['error']})")] if _unreachable else []
    marker = _sweep_marker()
    if marker is not None and marker.exists():
        try:
            data = json.loads(marker.read_text())
            found.append((float(data["time"]), f"in this sweep, on {data.get('host')} ({data['error']})"))
        except (OSError, ValueError, KeyError, TypeError):
            pass
    recent = [(t, where) for t, where in found if 0 <= now - t < RETRY_ONLINE_AFTER_S]
    if not recent:
        return None
    t, where = max(recent, key=lambda r: r[0])  # on a tie (this process wrote the marker): this process
    return f"{now - t:.0f} s ago {where}"


def _remember_unreachable(error: str) -> None:
    """Keep a failed online init for this process and, in a sweep, for its other jobs (the marker file)."""
    _unreachable.update(time=time.time(), error=error)
    marker = _sweep_marker()
    if marker is None:
        return
    try:
        atomic_write_text(marker, json.dumps({**_unreachable, "host": socket.gethostname(), "pid": os.getpid()}))
    except OSError as exc:
        log.debug("could not write %s: %s", marker, exc)


def _drop_wandb_analytics() -> None:
    """W&B's own analytics (OpenTelemetry, wandb 0.31) probe the server at exit, 10 s per request to a host that
    never answers: after a failed online init, make none in this process and drop what was recorded (W&B
    internals; with another W&B version this is a no-op)."""
    try:
        from wandb.analytics.opentelemetry import opentelemetry_proxy as otel

        otel.disable()
        if hasattr(otel, "_check_server_supports_open_telemetry_proxy"):
            otel._check_server_supports_open_telemetry_proxy = lambda session, url: False
    except Exception as exc:  # another W&B version
        log.debug("W&B analytics left as they are: %s", exc)


def _forget_unreachable() -> None:
    """An online init worked: later runs try online again."""
    _unreachable.clear()
    marker = _sweep_marker()
    if marker is not None:
        try:
            marker.unlink(missing_ok=True)
        except OSError as exc:
            log.debug("could not remove %s: %s", marker, exc)


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
            timeout = init_timeout(logger_cfg)
            if mode != "disabled":
                self._guard("init", lambda: self._init_wandb(logger_cfg, config, mode, timeout))
            if self._run is not None:  # anytime curves are plotted against the passes they were measured at
                self._guard("define_metric", lambda: self._run.define_metric("curve/*", step_metric="curve/passes"))

    def _init_wandb(self, cfg: Mapping[str, Any], config: Mapping[str, Any], mode: str,
                    timeout: float | None) -> None:
        """Open the W&B run; an online init that fails (or failed lately: :func:`known_unreachable`) gives an
        offline run instead, said in one line."""
        import wandb

        tags = [str(t) for t in (cfg.get("tags") or [])]
        tags += [f"{k}:{self.identity[k]}" for k in TAG_KEYS if k in self.identity]
        kwargs = dict(
            project=cfg.get("project", "dominant-patterns"), entity=cfg.get("entity"), group=cfg.get("group"),
            job_type=cfg.get("job_type"), name=cfg.get("run_name"), tags=tags,
            dir=str(self.out_dir), config={**config, "commit": self.identity.get("commit")},
            reinit="create_new" if self.concurrent else "finish_previous",
        )
        if mode == "online":
            failed = known_unreachable()
            if failed is None:
                failed = self._try_online(wandb, kwargs, timeout)
                if failed is None:
                    return
            else:
                failed += "; not tried again"
            mode = "offline"
        else:
            failed = None
        self._run = wandb.init(**kwargs, mode=mode, settings=wandb.Settings(console="off", silent=True))
        self._say_where(mode, failed)

    def _try_online(self, wandb: Any, kwargs: dict[str, Any], timeout: float | None) -> str | None:
        """Open an online run within ``timeout`` s; on failure say why (the attempt's run dir is removed)."""
        wandb.setup(wandb.Settings(silent=True))  # W&B's login line too
        settings = wandb.Settings(console="off", silent=True, **({} if timeout is None else {"init_timeout": timeout}))
        before = self._run_dirs()
        start = time.monotonic()
        try:
            self._run = wandb.init(**kwargs, mode="online", settings=settings)
        except Exception as exc:
            error = _error_line(exc)
            _remember_unreachable(error)
            _drop_wandb_analytics()
            for stub in self._run_dirs() - before:  # a run that never reached the server: nothing to sync
                shutil.rmtree(stub, ignore_errors=True)
            return f"after {time.monotonic() - start:.0f} s ({error})"
        _forget_unreachable()
        self._say_where("online")
        return None

    def _run_dirs(self) -> set[Path]:
        """W&B's online run dirs in the output folder (offline ones are ``offline-run-*``)."""
        return set((self.out_dir / "wandb").glob("run-*"))

    def _say_where(self, mode: str, failed: str | None = None) -> None:
        """One log line instead of W&B's banner: the run's URL online, else the folder to upload (and why, when an
        online run failed)."""
        url = getattr(self._run, "url", None) if mode == "online" else None
        if url:
            log.info("W&B run: %s", url)
            return
        folder = Path(getattr(self._run, "dir", None) or self.out_dir).parent
        if failed:
            log.warning("W&B online init failed %s; the run is kept offline, upload it later with: wandb sync %s",
                        failed, folder)
        else:
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

    def finish(self, results: Mapping[str, Any]) -> dict[str, Any]:
        """Write the finished record (``records.write_record``), mirror it to the W&B summary and return it."""
        record = write_record(self.out_dir, self.identity, results)
        if self._run is not None:
            self._guard("summary", lambda: self._run.summary.update(flatten(record)))
        return record

    def close(self, exit_code: int = 0) -> None:
        if self._run is not None:
            run, self._run = self._run, None
            self._guard("finish", lambda: run.finish(exit_code=exit_code))
