"""In-process checks of checkpoints, resume, corrupted files, safe loading and W&B failures (fast)."""

from __future__ import annotations

import ast
import io
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch
from conftest import LoopHost

from dominant_patterns.attacks.dominant import DominantPattern
from dominant_patterns.core.checkpoint import CHECKPOINT, PREVIOUS, Checkpointer, StateFns
from dominant_patterns.core.checkpoint_file import MAGIC, CheckpointError, read_checkpoint, write_checkpoint
from dominant_patterns.core.errors import ConfigError, UserInputError
from dominant_patterns.core.loops import NonFiniteLossError, TrainerSettings, optimize_pattern
from dominant_patterns.core.pattern_files import load_pattern
from dominant_patterns.data.datasets import build_dataset
from dominant_patterns.data.loaders import make_loader
from dominant_patterns.models.classifier import build_model, load_state_dict_file
from dominant_patterns.runs.records import finished_record
from dominant_patterns.runs.tracking import RunRecorder

PACKAGE = Path(__file__).resolve().parent.parent / "dominant_patterns"


class Evil:
    """Anything a plain ``torch.load`` would unpickle (and could run code for)."""

    def __reduce__(self):  # noqa: ANN204
        return (print, ("arbitrary code ran",))


def make_attack(ck: Checkpointer | None = None, epochs: int = 2) -> tuple[DominantPattern, object]:
    torch.manual_seed(0)
    attack = DominantPattern(build_model("tiny"), 10 / 255,
                             trainer=TrainerSettings(epochs=epochs, batch_size=8, progress=False, log_every=3))
    if ck is not None:
        attack.checkpointer = ck
    ds = build_dataset({"name": "synthetic", "num_fit": 40}, split="fit", image_size=32)
    return attack, make_loader(ds, batch_size=8, shuffle=True, seed=0)


class Stop(Exception):
    pass


def fit_until(ck: Checkpointer, step: int) -> None:
    """Fit with ``ck`` and stop hard (no checkpoint) right after ``step`` updates."""
    attack, loader = make_attack(ck)
    done = ck.step_done

    def bomb() -> None:
        done()
        if ck.step == step:
            raise Stop

    ck.step_done = bomb  # type: ignore[method-assign]
    with pytest.raises(Stop):
        attack.fit(loader)


@pytest.fixture(scope="module")
def reference() -> torch.Tensor:
    attack, loader = make_attack()
    return attack.fit(loader)


@pytest.mark.parametrize("stop", [1, 3, 4, 5, 6, 9])  # 5 steps per epoch: inside, at and after the epoch end
def test_resume_in_process_is_bitwise_equal(tmp_path: Path, reference: torch.Tensor, stop: int) -> None:
    fit_until(Checkpointer(tmp_path, every=2), stop)
    ck = Checkpointer(tmp_path, every=2)
    payload = ck.prepare()
    expected = max(stop // 2 * 2, 5 if stop > 5 else 0)  # every 2 steps, and the epoch end (step 5)
    assert (payload["step"] if payload else 0) == expected
    attack, loader = make_attack(ck)
    assert torch.equal(attack.fit(loader), reference)


def test_resuming_a_finished_fit_returns_its_pattern(tmp_path: Path, reference: torch.Tensor) -> None:
    attack, loader = make_attack(Checkpointer(tmp_path, every=0))
    attack.fit(loader)
    ck = Checkpointer(tmp_path)
    assert ck.prepare()["epoch"] == 2
    attack, loader = make_attack(ck)
    assert torch.equal(attack.fit(loader), reference)


def test_data_free_loops_checkpoint_with_a_step_count(tmp_path: Path) -> None:
    def run(ck: Checkpointer, stop: int | None = None) -> torch.Tensor:
        value = torch.zeros(3)
        state = StateFns(lambda: {"value": value.clone()}, lambda s: value.copy_(s["value"]))
        for _epoch, steps in ck.epochs(state, 4, num_epochs=3):
            for _ in steps:
                value += torch.rand(3)  # the global RNG is restored too
                ck.step_done()
                if ck.step == stop:
                    raise Stop
        return value

    torch.manual_seed(0)
    expected = run(Checkpointer())
    torch.manual_seed(0)
    with pytest.raises(Stop):
        run(Checkpointer(tmp_path, every=3), stop=7)
    ck = Checkpointer(tmp_path, every=3)
    assert ck.prepare()["step"] == 6
    assert torch.equal(run(ck), expected)


def test_corrupt_checkpoints_are_never_half_loaded(tmp_path: Path) -> None:
    fit_until(Checkpointer(tmp_path, every=2), 7)  # checkpoints of steps 6 (current) and 5 (epoch end, previous)
    current, previous = tmp_path / CHECKPOINT, tmp_path / PREVIOUS
    good = current.read_bytes()
    current.write_bytes(good[:-100])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        read_checkpoint(current)
    ck = Checkpointer(tmp_path, every=2)
    assert ck.prepare()["step"] == 5  # fell back to the previous checkpoint
    flipped = bytearray(previous.read_bytes())
    flipped[len(flipped) // 2] ^= 1
    previous.write_bytes(bytes(flipped))
    with pytest.raises(UserInputError, match="resume=true but no usable checkpoint"):
        Checkpointer(tmp_path, resume="true").prepare()
    for p in (current, previous):
        if not p.exists():
            p.with_name(p.name + ".corrupt").rename(p)
    assert Checkpointer(tmp_path).prepare() is None  # resume=auto: start over, files set aside
    assert (tmp_path / f"{CHECKPOINT}.corrupt").exists() and not current.exists()
    current.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad header"):
        read_checkpoint(current)


def test_checkpoint_needing_unpickling_is_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    torch.save({"format": 1, "evil": Evil()}, buf)
    data = buf.getvalue()
    import hashlib

    path = tmp_path / CHECKPOINT
    path.write_bytes(MAGIC + hashlib.sha256(data).hexdigest().encode() + b"\n" + data)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        read_checkpoint(path)


def test_checkpoint_of_another_config_is_refused(tmp_path: Path) -> None:
    state = StateFns(lambda: {"x": torch.ones(1)}, lambda s: None)
    ck = Checkpointer(tmp_path, config={"seed": "0", "xi": "0.04"})
    for _ in ck.epochs(state, 1, 1):
        pass
    with pytest.raises(ConfigError, match=r"different config \(seed: 0 -> 1\).*resume=false"):
        Checkpointer(tmp_path, config={"seed": "1", "xi": "0.04"}).prepare()
    assert Checkpointer(tmp_path, config={"seed": "1"}, resume="false").prepare() is None
    assert (tmp_path / f"{CHECKPOINT}.discarded").exists()
    with pytest.raises(ConfigError, match="resume=maybe"):
        Checkpointer(tmp_path, resume="maybe")


def test_write_checkpoint_is_atomic_when_torch_save_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / CHECKPOINT
    write_checkpoint(path, {"a": torch.ones(2)})
    before = path.read_bytes()

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError):
        write_checkpoint(path, {"a": torch.zeros(2)}, previous=tmp_path / PREVIOUS)
    assert path.read_bytes() == before and not list(tmp_path.glob("*.tmp"))


def test_nan_loss_keeps_last_good_pattern_and_a_finite_checkpoint(tmp_path: Path) -> None:
    ck = Checkpointer(tmp_path, every=2)
    calls = [0]

    def loss(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        value = (x + delta).mean() * (delta + 1).mean()
        return value * float("nan") if calls[0] == 4 else value

    ds = build_dataset({"name": "synthetic", "num_fit": 40}, split="fit", image_size=32)
    loader = make_loader(ds, batch_size=8, shuffle=True, seed=0)
    settings = TrainerSettings(epochs=2, progress=False, log_every=50)
    with pytest.raises(NonFiniteLossError) as info:
        optimize_pattern(LoopHost(settings, lambda d: d.clamp(-0.1, 0.1), ck), torch.zeros(3, 32, 32), loader, loss,
                         lr=0.01)
    assert torch.isfinite(info.value.pattern).all() and info.value.pattern.abs().max() > 0
    payload = read_checkpoint(tmp_path / CHECKPOINT)
    assert payload["step"] == 2  # the step-4 checkpoint was never written: the loss was checked first
    assert torch.isfinite(payload["state"]["delta"]).all()


def test_finished_result_is_skipped_or_refused(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text('{"status": "finished", "config_fingerprint": "abc"}')
    with pytest.raises(ConfigError, match="already holds a finished result of a different config"):
        finished_record(tmp_path, {"seed": "0"}, overwrite=False)
    assert finished_record(tmp_path, {"seed": "0"}, overwrite=True) is None
    assert (tmp_path / "metrics.json.replaced").exists() and not (tmp_path / "metrics.json").exists()
    (tmp_path / "metrics.json").write_text('{"status": "fin')  # torn by an old non-atomic writer
    assert finished_record(tmp_path, {}, overwrite=False) is None
    assert (tmp_path / "metrics.json.unreadable").exists()


def test_every_torch_load_in_the_package_is_weights_only() -> None:
    calls = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("torch.load", "load"):
                if ast.unparse(node.func) == "load" and "torch" not in path.read_text():
                    continue
                kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
                calls.append((path.name, kw.get("weights_only")))
    assert calls and all(w == "True" for _, w in calls), calls


@pytest.mark.parametrize("loader", [load_pattern, load_state_dict_file])
def test_pattern_and_model_files_needing_unpickling_are_refused(tmp_path: Path, loader: object,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"delta": torch.zeros(3, 2, 2), "evil": Evil()}, path)
    with pytest.raises(UserInputError, match="weights_only=True"):
        loader(path)  # type: ignore[operator]
    assert "arbitrary code ran" not in capsys.readouterr().out


# -- W&B failures: a stub wandb module whose calls raise -----------------------------------------

class BrokenRun:
    def __init__(self, broken: str) -> None:
        self.broken = broken
        self.summary = self

    def _maybe_fail(self, what: str) -> None:
        if self.broken == what:
            raise OSError(28, "No space left on device")

    def define_metric(self, *args: object, **kwargs: object) -> None:
        pass

    def log(self, *args: object, **kwargs: object) -> None:
        self._maybe_fail("log")

    def update(self, *args: object, **kwargs: object) -> None:
        self._maybe_fail("summary")

    def finish(self, *args: object, **kwargs: object) -> None:
        self._maybe_fail("finish")


@pytest.mark.parametrize("broken", ["init", "log", "summary", "finish"])
def test_wandb_failures_warn_once_and_metrics_json_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              broken: str) -> None:
    def init(**kwargs: object) -> BrokenRun:
        if broken == "init":
            raise RuntimeError("wandb.init timed out")
        return BrokenRun(broken)

    stub = types.SimpleNamespace(init=init, Settings=lambda **k: None, Image=lambda p: p)
    monkeypatch.setitem(sys.modules, "wandb", stub)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec = RunRecorder(tmp_path, {"name": "wandb", "mode": "offline"}, {}, {"model": "tiny"})
        for step in range(3):
            rec.log({"train/loss": 1.0}, step)
        rec.finish({"status": "finished"})
        rec.close(0)
    assert (tmp_path / "metrics.json").exists() and len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3
    assert len([w for w in caught if "W&B" in str(w.message)]) == 1


def test_a_failed_checkpoint_write_warns_and_the_fit_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             reference: torch.Tensor,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    import dominant_patterns.core.checkpoint as ckmod

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckmod, "write_checkpoint", disk_full)
    attack, loader = make_attack(Checkpointer(tmp_path, every=1))
    assert torch.equal(attack.fit(loader), reference)
    assert len([r for r in caplog.records if "could not write checkpoint" in r.getMessage()]) == 1
