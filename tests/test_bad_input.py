"""Bad input never ends in a bare traceback: random bad overrides fed to the app (hypothesis).

Most examples run the real Hydra app in-process (``dominant_patterns.apps.fit.main`` with ``sys.argv``
set), which is fast; a fixed handful also runs as a subprocess, as a user would.
"""

from __future__ import annotations

import contextlib
import io
import os
import string
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import FAST, compose_config, run_app
from hydra.core.global_hydra import GlobalHydra
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dominant_patterns.apps.fit import main
from dominant_patterns.core.errors import ConfigError
from dominant_patterns.runs.config_checks import validate_config

BASE = [*FAST, "dataset.num_fit=16", "dataset.num_eval=8", "trainer.epochs=1"]
GROUPS = ("model", "dataset", "loss", "attack", "logger", "trainer")
INT_KEYS = ("trainer.epochs", "trainer.batch_size", "trainer.eval_batch_size", "seed", "checkpoint_every")
RESERVED = {"true", "false", "null", "nan", "inf", "yes", "no", "on", "off", "y", "n"}

words = st.text(alphabet=string.ascii_lowercase, min_size=3, max_size=8).filter(lambda w: w not in RESERVED)
finite = st.floats(allow_nan=False, allow_infinity=False, width=32)


def _case(key: str, value: object, *extra: str) -> tuple[list[str], str, str]:
    """(overrides, key the message must name, value it must show)."""
    shown = repr(value) if isinstance(value, float) else str(value)
    return [*extra, f"{key}={shown}"], key, shown


bad_overrides = st.one_of(
    # wrong types
    st.builds(_case, st.sampled_from(INT_KEYS), words),
    st.builds(_case, st.sampled_from(INT_KEYS), finite.filter(lambda v: v != int(v))),
    st.builds(_case, st.sampled_from(("xi", "attack.lr")), words),
    st.builds(_case, st.just("trainer.progress"), words),
    # out of range
    st.builds(_case, st.just("xi"), st.one_of(finite.filter(lambda v: v <= 0 or v > 1), st.sampled_from([0, 2, 255]))),
    st.builds(_case, st.just("attack.lr"), st.one_of(st.integers(max_value=0), finite.filter(lambda v: v <= 0))),
    st.builds(_case, st.sampled_from(("trainer.batch_size", "trainer.eval_batch_size", "trainer.epochs")),
              st.integers(min_value=-10**6, max_value=0)),
    st.builds(_case, st.just("checkpoint_every"), st.integers(max_value=-1)),
    # unknown names and choices
    st.builds(_case, st.sampled_from(GROUPS), words),
    st.builds(_case, st.sampled_from(("trainer.precision", "trainer.device", "resume", "loss.layer")), words),
    st.builds(lambda k, v: _case(f"trainer.{k}", v), words, st.integers()),
    # missing paths
    st.builds(lambda w: _case("model.checkpoint", f"/nonexistent/{w}.pt"), words),
    st.builds(lambda w: _case("dataset.root", f"/nonexistent/{w}", "dataset=folder"), words),
)


def base_for(overrides: list[str]) -> list[str]:
    """BASE without the choices (and their keys) that ``overrides`` replace."""
    groups = {o.split("=", 1)[0] for o in overrides if "." not in o.split("=", 1)[0]}
    return [b for b in BASE if b.split("=", 1)[0].split(".", 1)[0] not in groups]


def run_in_process(out: Path, overrides: list[str]) -> tuple[int, str]:
    """The app's exit code and everything it printed."""
    GlobalHydra.instance().clear()
    buf = io.StringIO()
    argv = ["dominant_patterns", *base_for(overrides), *overrides, f"hydra.run.dir={out}/run"]
    code = 0
    full_error = os.environ.pop("HYDRA_FULL_ERROR", None)  # the user's view: short errors
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        old, sys.argv = sys.argv, argv
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            sys.argv = old
            if full_error is not None:
                os.environ["HYDRA_FULL_ERROR"] = full_error
    return code, buf.getvalue()


def assert_reported(code: int, output: str, key: str, value: str, out: Path) -> None:
    assert code != 0, output
    assert "Traceback" not in output, output
    name = key.rsplit(".", 1)[-1]
    assert name in output, f"the message does not name {key}:\n{output}"
    assert value in output, f"the message does not show {value}:\n{output}"
    assert not list(out.rglob("metrics.json"))


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(case=bad_overrides)
def test_random_bad_overrides_are_reported_by_key_and_value(case: tuple[list[str], str, str]) -> None:
    overrides, key, value = case
    with tempfile.TemporaryDirectory() as tmp:
        code, output = run_in_process(Path(tmp), overrides)
        assert_reported(code, output, key, value, Path(tmp))


@pytest.mark.parametrize(("override", "key", "value"), [
    ("trainer.epochs=ten", "trainer.epochs", "ten"),
    ("xi=1.5", "xi", "1.5"),
    ("model=resnet9000", "model", "resnet9000"),
    ("model.checkpoint=/nonexistent/w.pt", "model.checkpoint", "/nonexistent/w.pt"),
])
def test_bad_override_in_a_subprocess(tmp_path: Path, override: str, key: str, value: str) -> None:
    proc = run_app(tmp_path, *base_for([override]), override, timeout=180)
    assert_reported(proc.returncode, proc.stdout + proc.stderr, key, value, tmp_path)


def test_schema_type_errors_name_key_value_and_type() -> None:
    with pytest.raises(ConfigError, match=r"trainer.epochs='ten' has the wrong type: expected an integer"):
        validate_config(compose_config(*FAST, "trainer.epochs=ten"))
    with pytest.raises(ConfigError, match=r"attack.lr='fast' has the wrong type: expected a number or null"):
        validate_config(compose_config(*FAST, "attack.lr=fast"))
    validate_config(compose_config(*FAST, "+attack.extra_key=1"))  # attacks may add their own keys


@pytest.mark.parametrize("group", ["attack", "model", "dataset", "experiment"])
def test_every_config_option_passes_the_schemas(group: str) -> None:
    """The schemas type shared keys only: every option of the open groups must still validate."""
    from conftest import CONF

    for option in sorted(p.stem for p in (CONF / group).glob("*.yaml")):
        validate_config(compose_config(f"{group}={option}"))


def test_bad_task_name_is_refused_before_any_dir_is_made(tmp_path: Path) -> None:
    """task_name is part of hydra.run.dir: a bad one must stop the app before Hydra creates that dir."""
    proc = run_app(tmp_path, *BASE, "task_name=../escaped", timeout=180)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "task_name='../escaped' is not a plain name" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["outputs"])
    assert not list(tmp_path.rglob("run.log"))


@pytest.mark.parametrize("task", ["a/b", "..", ""])
def test_early_checks_callback_exits_on_a_bad_task_name(task: str) -> None:
    from omegaconf import OmegaConf

    from dominant_patterns.runs.hydra_hooks import EarlyChecks

    with pytest.raises(SystemExit) as exc:
        EarlyChecks().on_multirun_start(OmegaConf.create({"task_name": task}))
    assert exc.value.code == 2
    EarlyChecks().on_run_start(OmegaConf.create({"task_name": "ok_name-1"}))
