"""``hydra/launcher=slurm`` against a real one-node SLURM cluster (the checks of ``make cluster-check``).

The cluster tests are slow (about 7 minutes on 2 cores): the cases run once, in a module fixture, and each is
its own test. They are skipped, with the reason, where the cluster cannot exist: not root, Debian's slurm/munge
packages missing and not installable, or daemons that do not start (e.g. a port taken). A cluster that was
already up is left up. The config and command-line checks of ``scripts/slurm_local.py`` are fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))
pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

import cluster_check  # noqa: E402  (experiments/ is not a package)
import slurm_local  # noqa: E402  (put on sys.path by cluster_check)


@pytest.fixture(scope="module")
def layout() -> Iterator[slurm_local.Layout]:
    if os.geteuid() != 0:
        pytest.skip("a SLURM cluster needs root (slurmd runs the jobs); run as root or via make cluster-check")
    layout = slurm_local.layout_from_env()
    was_up = all(slurm_local.alive(slurm_local.load_registry(layout).get(d), d) for d in slurm_local.DAEMONS)
    try:
        slurm_local.up(layout)
    except slurm_local.ClusterError as exc:
        pytest.skip(f"no SLURM cluster here: {exc}")
    yield layout
    if not was_up:
        slurm_local.down(layout)


@pytest.fixture(scope="module")
def check(layout: slurm_local.Layout, tmp_path_factory: pytest.TempPathFactory) -> cluster_check.Check:
    work = tmp_path_factory.mktemp("cluster_check")
    check = cluster_check.Check(work, cluster_check.job_env(layout, work))
    check.run()
    return check


@pytest.mark.slow
@pytest.mark.parametrize("name", cluster_check.CASES)
def test_case(check: cluster_check.Check, name: str) -> None:
    case = check.cases[name]
    assert case.ok, f"{name} (jobs {case.job_ids}): {case.outcome}"


@pytest.mark.slow
def test_interrupted_jobs_match_the_uninterrupted_run(check: cluster_check.Check) -> None:
    interrupted = ("preemption", "term_then_usr2", "term_then_requeue")
    assert len(check.comparisons) == len(interrupted), check.comparisons
    assert all("= True" in line for line in check.comparisons), check.comparisons


def test_unknown_command_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert slurm_local.main(["restart"]) == 1
    assert capsys.readouterr().err.strip() == (
        "slurm_local: error: unknown command 'restart'; valid: up, down, status, conf")


def test_bad_port_is_refused(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DP_SLURM_PORT", "80")
    assert slurm_local.main(["status"]) == 1
    assert "DP_SLURM_PORT='80' is not a port; valid: 1024-65534" in capsys.readouterr().err


def test_config_is_this_machine(tmp_path: Path) -> None:
    conf = slurm_local.slurm_conf(slurm_local.Layout(tmp_path, 7000))
    node = slurm_local.node_name()
    assert f"NodeName={node} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={slurm_local.memory_mb()}" in conf
    for line in ("SlurmctldPort=7000", "SlurmdPort=7001", "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
                 "SelectType=select/cons_tres", "SlurmUser=root", f"StateSaveLocation={tmp_path / 'state'}",
                 "SlurmctldParameters=preempt_send_user_signal", "PreemptMode=REQUEUE"):
        assert line in conf.splitlines(), line
    assert f"PartitionName=cpu Nodes={node} Default=YES" in conf
