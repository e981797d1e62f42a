"""Every GPU of a node in use: a multirun's jobs spread over the GPUs, ``cuda:K`` pins one, records say where.

No GPU is needed: the GPU count is faked in-process (``torch.cuda.is_available``/``device_count`` and the
CUDA calls a job makes when it starts), and the real parallel launcher runs on CPU.
"""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import FAST, compose_config, run_app
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict

from dominant_patterns.core import devices
from dominant_patterns.core.devices import claim_device, resolve_device, visible_gpu_count
from dominant_patterns.core.errors import ConfigError
from dominant_patterns.runs.jobs import open_job


@pytest.fixture
def gpus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # noqa: ANN201
    """Fake ``n`` CUDA devices (call the fixture's value with n); GPU locks in a private folder."""
    monkeypatch.setenv(devices.LOCK_DIR_ENV, str(tmp_path / "locks"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    current: list[torch.device] = []

    def fake(n: int) -> list[torch.device]:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "set_device", lambda d: current.append(torch.device(d)))
        monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d=None: None)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Fake H200")
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
        return current

    return fake


def test_auto_spreads_multirun_jobs_by_job_number(gpus) -> None:  # noqa: ANN001
    gpus(8)
    assert [resolve_device("auto", n).index for n in range(10)] == [0, 1, 2, 3, 4, 5, 6, 7, 0, 1]
    assert resolve_device("cuda", 11) == torch.device("cuda", 3)
    assert resolve_device("auto") == torch.device("cuda", 0)  # a single run: GPU 0, with its index
    assert resolve_device("cuda:5", 2) == torch.device("cuda", 5)  # pinned: the job number does not move it
    assert resolve_device("cpu", 3) == torch.device("cpu")


def test_bad_or_missing_gpu_is_refused_by_name(gpus) -> None:  # noqa: ANN001
    gpus(8)
    with pytest.raises(ConfigError, match=r"trainer.device=cuda:9 but this machine has 8 CUDA device\(s\).*cuda:7"):
        resolve_device("cuda:9")
    with pytest.raises(ConfigError, match="trainer.device=gpu is not a device"):
        resolve_device("gpu")
    gpus(0)
    assert resolve_device("auto", 5) == torch.device("cpu")
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError, match=f"trainer.device={name} but no CUDA device is available"):
            resolve_device(name, 0)


def test_claims_give_concurrent_jobs_distinct_gpus_and_release_them(gpus) -> None:  # noqa: ANN001
    gpus(4)
    with claim_device("auto", 0) as a, claim_device("auto", 0) as b, claim_device("auto", 4) as c:
        # job 0 holds GPU 0; the next job preferring GPU 0 takes 1, one preferring 0 (4 mod 4) takes 2
        assert (a.index, b.index, c.index) == (0, 1, 2)
        with claim_device("auto", 1) as d, claim_device("auto", 6) as e:
            assert (d.index, e.index) == (3, 2)  # every GPU held: job 6 shares 6 mod 4
        with claim_device("cuda:0", 7) as pinned:
            assert pinned.index == 0  # pinned jobs never move
    with claim_device("auto", 0) as again:
        assert again.index == 0  # released at the end of the block
    with claim_device("auto", None) as single:
        assert single.index == 0  # single runs take no lock


def test_a_gpu_held_by_another_process_is_skipped(gpus, tmp_path: Path) -> None:  # noqa: ANN001
    gpus(2)
    lock = Path(tmp_path / "locks" / "gpu-0.lock")
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time\n"
                               f"f = open({str(lock)!r}, 'a+'); fcntl.flock(f, fcntl.LOCK_EX)\n"
                               "print('held', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with claim_device("auto", 0) as device:
            assert device.index == 1
            with open(lock, "a+") as f, pytest.raises(OSError):
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # still held by the other process
    finally:
        holder.kill()
        holder.wait()
    with claim_device("auto", 0) as device:
        assert device.index == 0  # a dead holder's lock is gone


def test_visible_gpu_count_reads_no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    def touched(*_a: object) -> None:
        raise AssertionError("CUDA touched")

    monkeypatch.setattr(torch.cuda, "is_available", touched)
    monkeypatch.setattr(torch.cuda, "device_count", touched)
    for visible, count in (("0,1,2,3,4,5,6,7", 8), ("", 0), ("3", 1), ("0,1,-1,3", 2), ("GPU-aa,GPU-bb", 2)):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        assert visible_gpu_count() == count, visible
    # the launcher configs size themselves from it, in the launching process, without CUDA
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5,6,7")
    parallel = compose_config("hydra/launcher=parallel").hydra.launcher
    local = compose_config("hydra/launcher=submitit").hydra.launcher
    assert (parallel.n_jobs, local.gpus_per_node) == (8, 8)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    parallel = compose_config("hydra/launcher=parallel").hydra.launcher
    local = compose_config("hydra/launcher=submitit").hydra.launcher
    assert (parallel.n_jobs, local.gpus_per_node) == (2, 0)


@pytest.fixture
def hydra_jobs():  # noqa: ANN201
    """Leaves Hydra's global job config as it was after the test."""
    before = HydraConfig.instance().cfg
    yield
    HydraConfig.instance().cfg = before


def _hydra_job(tmp_path: Path, num: int | None, *overrides: str):  # noqa: ANN202
    """The task config of job ``num`` of a multirun (None: a single run), with Hydra's config set as in a job."""
    full = compose_config(*FAST, *overrides)
    with open_dict(full):
        full.hydra.runtime.output_dir = str(tmp_path / f"job{num}")
        full.hydra.mode = RunMode.RUN if num is None else RunMode.MULTIRUN
        full.hydra.job.num = num or 0
    HydraConfig.instance().set_config(full)
    task = OmegaConf.masked_copy(full, [k for k in full if k != "hydra"])
    Path(full.hydra.runtime.output_dir).mkdir(parents=True)
    return task


def test_open_job_passes_the_job_number_and_records_the_device(gpus, hydra_jobs, tmp_path: Path) -> None:  # noqa: ANN001
    current = gpus(8)
    with open_job(_hydra_job(tmp_path, 5), "run") as job:
        assert job.device == torch.device("cuda", 5) and job.settings.device == "cuda:5"
        assert current[-1] == torch.device("cuda", 5)  # the job's GPU is the current device (pinned memory)
        identity = job.record(model="tiny", seed=0).identity
        assert (identity["device"], identity["gpu_name"]) == ("cuda:5", "Fake H200")
        with open_job(_hydra_job(tmp_path, 13), "run") as other:  # 13 mod 8 = 5 is held: the next GPU
            assert other.device == torch.device("cuda", 6)
    with open_job(_hydra_job(tmp_path, None), "run") as single:
        assert single.device == torch.device("cuda", 0)
    with open_job(_hydra_job(tmp_path, 7, "trainer.device=cuda:2"), "run") as pinned:
        assert pinned.device == torch.device("cuda", 2) and pinned.settings.device == "cuda:2"


@pytest.mark.slow
def test_parallel_launcher_runs_jobs_side_by_side_and_records_their_device(tmp_path: Path) -> None:
    proc = run_app(tmp_path, "-m", *FAST, "trainer.epochs=1", "dataset.num_fit=32", "seed=0,1",
                   "hydra/launcher=parallel", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (tmp_path / "outputs").rglob("metrics.json")]
    assert sorted(r["seed"] for r in records) == [0, 1]
    assert {r["device"] for r in records} == {"cpu"} and not any("gpu_name" in r for r in records)
