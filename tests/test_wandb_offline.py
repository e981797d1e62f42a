"""W&B with an API key but no network (issue 21, case 13): the online init gives up after ``logger.init_timeout``,
the run is kept as an offline run (one line says so), and later runs of the process or sweep do not wait again.

The real W&B runs in subprocesses (its settings are read from the environment once per process) pointed at a
closed local port or at a server that never answers; the rules themselves are checked with a stub ``wandb``.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import app_env, read_wandb_offline, wandb_summary

from dominant_patterns.core.errors import ConfigError
from dominant_patterns.runs import tracking
from dominant_patterns.runs.tracking import (
    DEFAULT_INIT_TIMEOUT_S,
    RETRY_ONLINE_AFTER_S,
    UNREACHABLE_MARKER,
    RunRecorder,
)

TIMEOUT = 3.0  # logger.init_timeout in these tests (seconds)
MARGIN = 15.0  # W&B's service start and the offline init on a busy machine
ONLINE = {"name": "wandb", "mode": "online", "init_timeout": TIMEOUT}
#: A later run's config: had it tried online, it would wait a minute (W&B's service start alone takes seconds).
PATIENT = {**ONLINE, "init_timeout": 60}
NO_WAIT = 20.0

#: One process of a sweep: recorders opened one after another (logger configs as JSON), W&B from the environment.
RECORDERS = '''
import atexit, json, logging, sys, time
from pathlib import Path
atexit.register(lambda: print(json.dumps({"exit_s": time.monotonic() - end}), flush=True))  # after W&B's exit hooks
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
out, cfgs, sweep = Path(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
if sweep:  # a Hydra multirun job, as far as the recorder can tell
    from hydra.conf import HydraConf
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf
    cfg = OmegaConf.create({"hydra": OmegaConf.structured(HydraConf)})
    cfg.hydra.mode, cfg.hydra.sweep.dir = RunMode.MULTIRUN, sweep
    HydraConfig.instance().set_config(cfg)
from dominant_patterns.runs.tracking import RunRecorder
for i, cfg in enumerate(cfgs):
    start = time.monotonic()
    rec = RunRecorder(out / str(i), cfg, {"xi": 0.04}, {"model": "tiny", "seed": i})
    init_s = time.monotonic() - start
    for step in range(3):
        rec.log({"train": {"loss": 1.0 / (step + 1)}}, step)
    rec.finish({"fooling_rate": 0.5})
    rec.close(0)
    print(json.dumps({"init_s": init_s, "wandb": "wandb" in sys.modules}), flush=True)
end = time.monotonic()
'''


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A local port that takes connections and never answers (a firewall or a dead proxy on the way)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def recorders(tmp_path: Path, cfgs: list[dict[str, Any]], *, base_url: str = "http://127.0.0.1:9",
              sweep: Path | None = None, out: str = "out") -> tuple[list[dict[str, Any]], list[str]]:
    """Run :data:`RECORDERS` with a (fake) API key and W&B at ``base_url`` (port 9: closed); its per-recorder
    results and its stderr lines."""
    script = tmp_path / "recorders.py"
    script.write_text(RECORDERS)
    env = {**app_env(tmp_path), "HOME": str(tmp_path), "WANDB_API_KEY": "k" * 40, "WANDB_BASE_URL": base_url}
    for key in ("WANDB_SILENT", "WANDB_INIT_TIMEOUT", "WANDB_DIR"):  # as a user's shell has them: W&B must stay quiet
        env.pop(key, None)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / out), json.dumps(cfgs), str(sweep or "")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    *results, ended = (json.loads(line) for line in proc.stdout.splitlines())
    assert ended["exit_s"] < 8, ended  # W&B's exit (its analytics) does not wait on the server either
    return results, proc.stderr.splitlines()


def offline_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if "kept offline" in line]


def assert_offline_run_with_metrics(run_dir: Path) -> None:
    """The run's local record is finished and its offline W&B run holds the curve and the summary to sync."""
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "finished"
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 3
    (log_file,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    assert not list((run_dir / "wandb").glob("run-*")), "the failed online attempt's run dir is left"
    history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in h.history.item}
               for h in read_wandb_offline(log_file).get("history", [])]
    assert [h["train/loss"] for h in history] == pytest.approx([1.0, 0.5, 1 / 3])
    summary = wandb_summary(log_file)
    assert summary["status"] == "finished" and summary["fooling_rate"] == 0.5


@pytest.mark.parametrize("server", ["closed port", "silent server"])
def test_online_without_network_goes_offline_after_the_timeout_once_per_process(
        tmp_path: Path, silent_server: str, server: str) -> None:
    base_url = silent_server if server == "silent server" else "http://127.0.0.1:9"
    results, lines = recorders(tmp_path, [ONLINE, PATIENT], base_url=base_url)
    first, second = (r["init_s"] for r in results)
    assert TIMEOUT - 0.5 <= first < TIMEOUT + MARGIN, first  # W&B's default would be 90 s
    assert second < NO_WAIT, second  # not tried again
    said = offline_lines(lines)
    assert len(said) == 2, lines
    assert "failed after" in said[0] and "CommError" in said[0] and "wandb sync" in said[0]
    assert "not tried" not in said[0] and "Consider" not in said[0]
    assert "ago in this process" in said[1] and "not tried again" in said[1]
    assert not [line for line in lines if line.startswith("wandb:") or "Traceback" in line], lines
    for i in range(2):
        assert_offline_run_with_metrics(tmp_path / "out" / str(i))
        sync_dir = Path(offline_lines(lines)[i].rsplit("wandb sync ", 1)[1])
        assert sync_dir.name.startswith("offline-run-") and sync_dir.parent == tmp_path / "out" / str(i) / "wandb"


def test_a_sweep_remembers_the_failure_for_its_other_processes(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    recorders(tmp_path, [ONLINE], sweep=sweep, out="sweep/a")
    marker = json.loads((sweep / UNREACHABLE_MARKER).read_text())
    assert "CommError" in marker["error"] and marker["host"] == socket.gethostname()
    assert 0 <= time.time() - marker["time"] < 60
    # another process of the same sweep (a joblib or submitit job): offline at once
    results, lines = recorders(tmp_path, [PATIENT], sweep=sweep, out="sweep/b")
    assert results[0]["init_s"] < NO_WAIT
    (said,) = offline_lines(lines)
    assert "ago in this sweep" in said and "not tried again" in said and "CommError" in said
    assert_offline_run_with_metrics(sweep / "b" / "0")


def test_offline_disabled_and_none_are_unchanged(tmp_path: Path) -> None:
    cfgs = [{"name": "wandb", "mode": "offline"}, {"name": "wandb", "mode": "disabled"}, {"name": "none"}]
    results, lines = recorders(tmp_path, cfgs[::-1], sweep=tmp_path)  # none first: wandb not imported yet
    assert not results[0]["wandb"]
    assert all(r["init_s"] < NO_WAIT for r in results)
    assert not offline_lines(lines) and not (tmp_path / UNREACHABLE_MARKER).exists()
    assert [line for line in lines if "W&B offline run saved" in line and "wandb sync" in line]
    for i in (0, 1):
        assert not (tmp_path / "out" / str(i) / "wandb").exists()
        assert (tmp_path / "out" / str(i) / "metrics.json").exists()
    assert_offline_run_with_metrics(tmp_path / "out" / "2")


# -- the rules, with a stub wandb module ---------------------------------------------------------------------------

class StubWandb(types.SimpleNamespace):
    """``wandb.init`` whose online calls fail as W&B's do (a run dir is left behind); offline ones work."""

    def __init__(self, online_fails: bool = True) -> None:
        super().__init__(calls=[], online_fails=online_fails)

    def setup(self, settings: object = None) -> None:
        pass

    def Settings(self, **kwargs: object) -> dict[str, object]:  # noqa: N802 (wandb's name)
        return kwargs

    def init(self, **kwargs: Any) -> types.SimpleNamespace:
        self.calls.append(kwargs)
        wandb_dir = Path(kwargs["dir"]) / "wandb"
        if kwargs["mode"] == "online" and self.online_fails:
            (wandb_dir / "run-20260101_000000-abc").mkdir(parents=True)
            raise RuntimeError("Timed out while retrying: connection refused\nConsider increasing the init_timeout")
        run_dir = wandb_dir / f"{'offline-' if kwargs['mode'] == 'offline' else ''}run-20260101_000001-xyz" / "files"
        run_dir.mkdir(parents=True)
        return types.SimpleNamespace(dir=str(run_dir), url="https://wandb.example/run", log=lambda *a, **k: None,
                                     summary={}, finish=lambda **k: None, define_metric=lambda *a, **k: None)


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> StubWandb:
    """A stub ``wandb``, a fresh process memory and a sweep marker in ``tmp_path``."""
    wandb = StubWandb()
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    monkeypatch.setattr(tracking, "_unreachable", {})
    monkeypatch.setattr(tracking, "_sweep_marker", lambda: tmp_path / UNREACHABLE_MARKER)
    return wandb


def test_an_online_failure_reopens_the_same_run_offline(tmp_path: Path, stub: StubWandb,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        RunRecorder(tmp_path / "a", ONLINE, {"xi": 0.04}, {"model": "tiny"})
    assert not caught  # no "W&B init failed" warning: the run is not lost
    online, offline = stub.calls
    assert online["settings"]["init_timeout"] == TIMEOUT and "init_timeout" not in offline["settings"]
    same = {k: v for k, v in online.items() if k not in ("mode", "settings")}
    assert offline["mode"] == "offline" and same == {k: v for k, v in offline.items() if k not in ("mode", "settings")}
    assert not list((tmp_path / "a" / "wandb").glob("run-*"))
    (said,) = [r.getMessage() for r in caplog.records if "W&B" in r.getMessage()]
    assert "(RuntimeError: Timed out while retrying: connection refused)" in said and "Consider" not in said
    assert "offline-run-" in said


def test_the_failure_is_remembered_for_a_while(tmp_path: Path, stub: StubWandb) -> None:
    RunRecorder(tmp_path / "a", ONLINE, {}, {})
    assert tracking.known_unreachable().endswith("in this process (RuntimeError: Timed out while retrying: "
                                                 "connection refused)")
    RunRecorder(tmp_path / "b", ONLINE, {}, {})
    assert [c["mode"] for c in stub.calls] == ["online", "offline", "offline"]
    # RETRY_ONLINE_AFTER_S later (process and marker alike) an online init is tried again
    tracking._unreachable["time"] -= RETRY_ONLINE_AFTER_S + 1
    marker = tmp_path / UNREACHABLE_MARKER
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "time": time.time() - RETRY_ONLINE_AFTER_S - 1}))
    assert tracking.known_unreachable() is None
    stub.online_fails = False
    RunRecorder(tmp_path / "c", ONLINE, {}, {})
    assert stub.calls[-1]["mode"] == "online"
    assert not tracking._unreachable and not marker.exists()  # it worked: the next runs go online too


def test_a_marker_of_another_process_is_read_and_a_broken_one_ignored(tmp_path: Path, stub: StubWandb) -> None:
    marker = tmp_path / UNREACHABLE_MARKER
    marker.write_text(json.dumps({"time": time.time() - 30, "error": "CommError: no route", "host": "node7"}))
    assert tracking.known_unreachable() == "30 s ago in this sweep, on node7 (CommError: no route)"
    RunRecorder(tmp_path / "a", ONLINE, {}, {})
    assert [c["mode"] for c in stub.calls] == ["offline"]
    for broken in ("", "{", json.dumps({"time": "soon"}), json.dumps([1])):
        marker.write_text(broken)
        assert tracking.known_unreachable() is None


def test_init_timeout_key(tmp_path: Path, stub: StubWandb) -> None:
    assert tracking.init_timeout({}) == DEFAULT_INIT_TIMEOUT_S
    assert tracking.init_timeout({"init_timeout": None}) is None
    stub.online_fails = False
    RunRecorder(tmp_path / "a", {**ONLINE, "init_timeout": None}, {}, {})
    assert "init_timeout" not in stub.calls[0]["settings"]  # W&B's own ($WANDB_INIT_TIMEOUT, else 90 s)
    for bad in ("ten", 0, -1, True):
        with pytest.raises(ConfigError, match="logger.init_timeout"):
            RunRecorder(tmp_path / "b", {**ONLINE, "init_timeout": bad}, {}, {})
