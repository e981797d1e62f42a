"""The seams every entry point shares: experiment -> app, config checks in every app, records and identity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import CONF, FAST, run_app
from omegaconf import OmegaConf

from dominant_patterns.core.errors import ConfigError
from dominant_patterns.runs.app_index import APPS, check_app, experiment_app
from dominant_patterns.runs.identity import CELL_KEYS, SOURCE_KEYS, TAG_KEYS, run_identity
from dominant_patterns.runs.records import write_record


def test_every_experiment_names_its_app() -> None:
    for path in sorted((CONF / "experiment").glob("*.yaml")):
        app = OmegaConf.load(path).get("app")
        assert app in APPS, f"{path.name}: app={app!r}, expected one of {sorted(APPS)}"
    assert experiment_app("fig4_layers") == "layers" and experiment_app("table1_loss") == "run"
    assert experiment_app("no_such_experiment") is None


def test_check_app_names_the_right_command() -> None:
    check_app("layers", ["fig4_layers"])
    with pytest.raises(ConfigError, match=r"experiment=fig4_layers is meant for `python -m dominant_patterns.layers`"):
        check_app("run", ["fig4_layers"])


@pytest.mark.parametrize(("module", "experiment", "right"), [
    ("dominant_patterns", "fig4_layers", "python -m dominant_patterns.layers experiment=fig4_layers"),
    ("dominant_patterns.apps.figure_layers", "table1_loss", "python -m dominant_patterns experiment=table1_loss"),
    ("dominant_patterns.apps.evaluate", "table6_transfer",
     "python -m dominant_patterns.transfer experiment=table6_transfer"),
])
def test_an_entry_point_refuses_another_apps_experiment(tmp_path: Path, module: str, experiment: str,
                                                        right: str) -> None:
    proc = run_app(tmp_path, f"experiment={experiment}", *FAST, module=module, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert right in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("module", ["dominant_patterns.apps.evaluate", "dominant_patterns.apps.figure_layers",
                                    "dominant_patterns.apps.head_transfer"])
def test_analysis_apps_run_the_config_checks(tmp_path: Path, module: str) -> None:
    proc = run_app(tmp_path, *FAST, "trainer.batch_size=0", module=module, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "trainer.batch_size=0 must be a positive integer" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_identity_keys_come_from_one_declaration() -> None:
    assert set(SOURCE_KEYS) <= set(CELL_KEYS) and set(TAG_KEYS) <= set(CELL_KEYS)
    assert TAG_KEYS == ("model", "dataset", "loss", "attack", "seed")
    assert SOURCE_KEYS == ("model", "dataset", "loss", "attack", "target_class", "seed")


def test_a_record_carries_kind_identity_and_stamp(tmp_path: Path) -> None:
    identity = run_identity("evaluate", "t", ["x"], model="tiny", seed=0)
    write_record(tmp_path, identity, {"metrics": {"fooling_rate": float("nan")}})
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert (record["kind"], record["task_name"], record["tags"], record["model"]) == ("evaluate", "t", ["x"], "tiny")
    assert record["status"] == "finished" and record["output_dir"] == str(tmp_path) and record["commit"]
    assert record["metrics"]["fooling_rate"] is None  # non-finite floats are stored as null
