"""Issue 21's numbered cases through the real app: concurrent runs, unreadable files, full disks, timings, leftovers.

Cases 1, 4 and 14 (patterns) are in test_pattern_files.py, 2 and 12 (ImageNet layouts) in test_imagenet_layouts.py,
13 (W&B without network) in test_wandb_offline.py, 15 (one-line errors in sweeps) in test_reliability.py. Disk-full
cases use a real tmpfs (root only; skipped elsewhere) or a patched writer.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import FAST, app_env
from PIL import Image

from dominant_patterns.core.checkpoint import CHECKPOINT
from dominant_patterns.core.checkpoint_file import read_checkpoint
from dominant_patterns.core.errors import DataError
from dominant_patterns.data import image_cache as cache_module
from dominant_patterns.data.datasets import build_dataset, seeded_split
from dominant_patterns.data.image_cache import build_image_cache, prepare_split
from dominant_patterns.runs.records import write_record
from dominant_patterns.runs.run_dir import RunDirBusy, own_run_dir, remove_leftovers

TINY = [*FAST, "trainer.batch_size=8", "trainer.epochs=2", "checkpoint_every=3"]
SYNTHETIC = ["dataset.num_fit=48", "dataset.num_eval=16"]

#: Patches one writer of the run app (DP_FAULT=name), then runs the real app.
FAULT_APP = r'''
import errno, os, sys
import dominant_patterns.apps.fit as run
fault = os.environ.get("DP_FAULT", "")
def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")
if fault == "pictures":
    run.save_pattern_png = full
    run.save_examples_grid = full
elif fault == "record":
    from dominant_patterns.runs import records
    write = records.atomic_write_text
    def record_full(path, text):
        if str(path).endswith("metrics.json"):
            full()
        write(path, text)
    records.atomic_write_text = record_full
elif fault == "slow":  # a fit that takes a while (0.1 s a step): another process meets it running
    import time
    from dominant_patterns.core import checkpoint as ck
    step_done = ck.Checkpointer.step_done
    def slow(self):
        time.sleep(0.1)
        step_done(self)
    ck.Checkpointer.step_done = slow
elif fault.startswith("kill:"):
    import signal
    from dominant_patterns.core import checkpoint as ck
    step_done, n = ck.Checkpointer.step_done, int(fault.split(":")[1])
    def patched(self):
        if self.step + 1 == n:
            os.kill(os.getpid(), signal.SIGKILL)
        step_done(self)
    ck.Checkpointer.step_done = patched
run.main()
'''


def app(tmp_path: Path, *overrides: str, fault: str = "", timeout: float = 300) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "fault_app.py"
    script.write_text(FAULT_APP)
    data = [] if any(o.startswith("dataset=") for o in overrides) else SYNTHETIC
    return subprocess.run([sys.executable, str(script), *TINY, *data, *overrides], cwd=tmp_path,
                          env={**app_env(tmp_path), "DP_FAULT": fault}, capture_output=True, text=True,
                          timeout=timeout)


def record_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


# -- case 3: one process per run dir ------------------------------------------------------------------


def test_a_second_process_is_refused_while_the_first_runs_and_its_record_survives(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    script = tmp_path / "fault_app.py"
    script.write_text(FAULT_APP)
    first = subprocess.Popen([sys.executable, str(script), *TINY, *SYNTHETIC, "trainer.epochs=40",
                              f"hydra.run.dir={run_dir}"],
                             cwd=tmp_path, env={**app_env(tmp_path), "DP_FAULT": "slow"}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (run_dir / CHECKPOINT).exists() and time.time() < deadline:  # the first one is fitting
            time.sleep(0.2)
        owner = json.loads((run_dir / "run.lock").read_text())
        assert owner["pid"] == first.pid and owner["host"] == socket.gethostname()
        for extra in (["seed=1"], []):  # (a) another seed 3 s later, (b) the same command
            second = app(tmp_path, "trainer.epochs=40", f"hydra.run.dir={run_dir}", *extra)
            assert second.returncode == 2
            line = one_line_error(second)
            assert f"{run_dir} is in use by pid {first.pid} on {socket.gethostname()}" in line
    finally:
        out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]
    finished = record_of(run_dir)
    assert finished["seed"] == 0 and not (run_dir / "run.lock").exists()
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "train/loss" in r] == sorted(r["step"] for r in lines if "train/loss" in r)
    # a later run of another seed into the finished dir: refused, or with overwrite=true kept as .replaced
    other = app(tmp_path, "trainer.epochs=40", f"hydra.run.dir={run_dir}", "seed=1")
    assert other.returncode == 2 and "already holds a finished result of a different config" in one_line_error(other)
    replaced = app(tmp_path, f"hydra.run.dir={run_dir}", "seed=1", "overwrite=true")
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    assert json.loads((run_dir / "metrics.json.replaced").read_text())["seed"] == 0 and record_of(run_dir)["seed"] == 1


def test_a_lock_of_a_killed_owner_is_taken_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from dominant_patterns.runs.run_dir import own_run_dir\n"
        f"with own_run_dir(Path({str(tmp_path)!r})):\n    print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunDirBusy, match=f"in use by pid {holder.pid}"), own_run_dir(tmp_path):
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert json.loads((tmp_path / "run.lock").read_text())["pid"] == holder.pid  # left behind by SIGKILL
    with own_run_dir(tmp_path):
        assert json.loads((tmp_path / "run.lock").read_text())["pid"] == os.getpid()
    assert "taking over" in caplog.text and not (tmp_path / "run.lock").exists()


def test_a_finished_record_is_never_overwritten_silently(tmp_path: Path) -> None:
    write_record(tmp_path, {"seed": 0}, {"metrics": {}})
    write_record(tmp_path, {"seed": 1}, {"metrics": {}})
    write_record(tmp_path, {"seed": 2}, {"metrics": {}})
    seeds = [json.loads((tmp_path / name).read_text())["seed"]
             for name in ("metrics.json.replaced", "metrics.json.replaced.1", "metrics.json")]
    assert seeds == [0, 1, 2]


# -- cases 5, 9, 10: unreadable files are found before the fit --------------------------------------------


def photo_folder(root: Path, n: int = 12) -> Path:
    root.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        pixels = (torch.rand(40, 48, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(root / f"img_{i:02d}.png")
    return root


def eval_files(root: Path, eval_size: int) -> list[Path]:
    paths = sorted(root.glob("*.png"))
    _, eval_idx = seeded_split(len(paths), eval_size, None, 0)
    return [paths[i] for i in eval_idx]


def folder_args(root: Path, run_dir: Path, cache: bool) -> list[str]:
    return ["dataset=folder", f"dataset.root={root}", "dataset.eval_size=4", "dataset.num_workers=0",
            f"dataset.cache={str(cache).lower()}", f"hydra.run.dir={run_dir}"]


@pytest.mark.parametrize("cache", [True, False])
def test_unreadable_eval_files_are_counted_and_named_with_or_without_the_cache(tmp_path: Path, cache: bool) -> None:
    root = photo_folder(tmp_path / "photos")
    broken = eval_files(root, 4)[:2]
    broken[0].write_bytes(b"not a png at all")
    broken[1].write_bytes(broken[1].read_bytes()[:60])  # truncated
    run_dir = tmp_path / "run"
    proc = app(tmp_path, *folder_args(root, run_dir, cache))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    record = record_of(run_dir)
    assert record["skipped_eval_images"] == 2 and record["eval_size"] == 2
    assert sorted(record["skipped_eval_files"]) == sorted(map(str, broken))
    assert record["skipped_fit_images"] == 0 and record["metrics"]["n_images"] == 2
    summary = (run_dir / "summary.md").read_text()
    assert "skipped 2 unreadable eval image(s)" in summary and broken[0].name in summary
    assert (run_dir / "examples.png").is_file()  # case 9: the example grid no longer meets a None


@pytest.mark.parametrize("cache", [True, False])
def test_an_unreadable_eval_split_stops_the_run_before_the_fit(tmp_path: Path, cache: bool) -> None:
    root = photo_folder(tmp_path / "photos")
    for path in eval_files(root, 4):
        path.write_bytes(b"")
    run_dir = tmp_path / "run"
    proc = app(tmp_path, *folder_args(root, run_dir, cache))
    assert proc.returncode == 2
    assert "split 'eval': none of its 4 files can be read" in one_line_error(proc)
    assert not (run_dir / CHECKPOINT).exists() and "fitting" not in (run_dir / "run.log").read_text()


# -- case 6: a resumed run's timings ----------------------------------------------------------------------


def test_a_resumed_run_adds_the_seconds_of_its_earlier_segment(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    killed = app(tmp_path, f"hydra.run.dir={run_dir}", fault="kill:8")
    assert killed.returncode == -signal.SIGKILL
    stored = read_checkpoint(run_dir / CHECKPOINT)
    assert stored["step"] == 6 and stored["fit_seconds"] > 0 and stored["segments"] == 1
    resumed = app(tmp_path, f"hydra.run.dir={run_dir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    timing = record_of(run_dir)["timing"]
    assert timing["fit_segments"] == 2 and timing["fit_seconds"] > stored["fit_seconds"]
    passes = record_of(run_dir)["attack_info"]["passes"]
    assert passes == 2 * 6 * 9  # 2 epochs x 6 steps x (8 images + the pattern row), over both segments
    assert timing["fit_images_per_second"] == pytest.approx(passes / timing["fit_seconds"])
    assert "over 2 segments" in resumed.stdout


# -- cases 7, 8, 11: full disks, leftovers ----------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "2m") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill the file system of ``folder`` up to ``leave`` free bytes."""
    filler = folder / "filler"
    free = shutil.disk_usage(folder).free
    with open(filler, "wb") as f:
        with contextlib.suppress(OSError):
            f.write(bytes(max(free - leave, 0)))
    return filler


def test_optional_pictures_on_a_full_disk_are_warnings_after_the_record(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = app(tmp_path, f"hydra.run.dir={run_dir}", fault="pictures")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert record_of(run_dir)["status"] == "finished" and (run_dir / "pattern.pt").is_file()
    assert (run_dir / "summary.md").is_file() and not (run_dir / "examples.png").exists()
    log = (run_dir / "run.log").read_text()
    assert f"could not write {run_dir / 'examples.png'}" in log and "No space left on device" in log


def test_an_essential_write_on_a_full_disk_stops_with_one_line_and_the_rerun_finishes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = app(tmp_path, f"hydra.run.dir={run_dir}", fault="record")
    assert proc.returncode == 4
    line = one_line_error(proc)
    assert f"could not write {run_dir / 'metrics.json'}: No space left on device (" in line and "MiB free" in line
    assert not (run_dir / "metrics.json").exists() and not list(run_dir.glob("*.tmp"))
    again = app(tmp_path, f"hydra.run.dir={run_dir}")
    assert again.returncode == 0 and record_of(run_dir)["status"] == "finished"


def test_a_full_output_disk_gives_one_line_and_leftovers_are_removed_on_the_rerun(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk") as disk:
        run_dir = disk / "run"
        filler = fill(disk)
        proc = app(tmp_path, f"hydra.run.dir={run_dir}")
        assert proc.returncode == 4
        assert f"could not write {run_dir}: No space left on device (0.0 MiB free" in one_line_error(proc)
        filler.unlink()
        run_dir.mkdir(exist_ok=True)
        for name in ("pattern.pt.tmp", ".metrics.json.x1y2.tmp", ".checkpoint.ckpt.123.tmp"):  # a killed write's
            (run_dir / name).write_bytes(b"partial")
        again = app(tmp_path, f"hydra.run.dir={run_dir}")
        assert again.returncode == 0, again.stderr[-3000:]
        assert record_of(run_dir)["status"] == "finished" and not list(run_dir.glob("*.tmp"))
        assert not list(run_dir.glob(".*.tmp"))


def test_a_full_cache_disk_falls_back_to_the_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = photo_folder(tmp_path / "photos", n=6)
    dataset = build_dataset({"name": "folder", "root": str(root), "eval_size": 2}, split="eval", image_size=32)
    with tmpfs(tmp_path / "cache") as cache_dir:
        fill(cache_dir, leave=8192)
        ready, seconds = prepare_split(dataset, {"cache": True, "num_workers": 0}, cache_dir)
        assert len(ready) == 2 and seconds == 0.0 and type(ready).__name__ == "ImageFileDataset"
        assert "image cache under" in caplog.text and "unavailable" in caplog.text
        assert not list((cache_dir / "images").glob(".*.tmp"))


def test_a_cache_write_that_runs_out_of_space_is_an_error_not_a_bus_error(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    root = photo_folder(tmp_path / "photos", n=6)
    dataset = build_dataset({"name": "folder", "root": str(root), "eval_size": 2}, split="fit", image_size=32)
    monkeypatch.setattr(cache_module, "check_free_space", lambda root, nbytes: None)  # a disk that fills meanwhile
    with tmpfs(tmp_path / "cache", size="64k") as cache_dir:
        fill(cache_dir, leave=4096)
        with pytest.raises(OSError, match="No space left"):
            build_image_cache(dataset, cache_dir)
        assert not list((cache_dir / "images").glob(".*.tmp"))


def test_a_killed_cache_build_is_cleaned_up_by_the_next(tmp_path: Path) -> None:
    root = photo_folder(tmp_path / "photos", n=6)
    dataset = build_dataset({"name": "folder", "root": str(root), "eval_size": 2}, split="eval", image_size=32)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    images = tmp_path / "cache" / "images"
    left = images / f".folder-eval-32-abc.{socket.gethostname()}.{dead.pid}.x1.tmp"
    live = images / f".folder-eval-32-abc.{socket.gethostname()}.{os.getpid()}.x2.tmp"
    other_host = images / f".folder-eval-32-abc.elsewhere.{dead.pid}.x3.tmp"
    for folder in (left, live, other_host):
        folder.mkdir(parents=True)
        (folder / "images-00000.npy").write_bytes(bytes(1024))
    build_image_cache(dataset, tmp_path / "cache")
    assert not left.exists() and live.exists() and other_host.exists()


def test_leftover_temp_files_are_removed_by_the_owner(tmp_path: Path) -> None:
    (tmp_path / "seed_3").mkdir()
    for path in (tmp_path / "pattern.pt.tmp", tmp_path / ".summary.md.abc.tmp", tmp_path / "seed_3" / "x.tmp"):
        path.write_text("partial")
    (tmp_path / "keep.json").write_text("{}")
    assert len(remove_leftovers(tmp_path)) == 3 and [p.name for p in tmp_path.rglob("*")] == ["seed_3", "keep.json"]


def test_a_finished_run_without_its_summary_gets_it_on_the_rerun(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert app(tmp_path, f"hydra.run.dir={run_dir}").returncode == 0
    table = (run_dir / "summary.md").read_text()
    (run_dir / "summary.md").unlink()  # killed right after metrics.json
    rerun = app(tmp_path, f"hydra.run.dir={run_dir}")
    assert rerun.returncode == 0 and "skipped:" in rerun.stdout
    assert (run_dir / "summary.md").read_text() == table and table.splitlines()[0] in rerun.stdout


def test_empty_splits_name_their_files(tmp_path: Path) -> None:
    root = photo_folder(tmp_path / "photos", n=4)
    for path in root.glob("*.png"):
        path.write_bytes(b"x")
    dataset = build_dataset({"name": "folder", "root": str(root), "eval_size": 1}, split="fit", image_size=32)
    with pytest.raises(DataError, match=r"none of its 3 files can be read \(e\.g\. .*img_0"):
        prepare_split(dataset, {"cache": False}, None)
