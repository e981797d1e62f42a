"""Shared fixtures: a tiny model, synthetic loaders, config composition and the app as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from dominant_patterns.data.datasets import build_dataset
from dominant_patterns.data.loaders import make_loader
from dominant_patterns.models.classifier import ClassifierWrapper, build_model

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
FAST = ["model=tiny", "dataset=synthetic", "logger=none", "trainer.progress=false"]


@pytest.fixture(autouse=True, scope="session")
def _quiet_env() -> None:
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def tiny_model() -> ClassifierWrapper:
    return build_model("tiny")


@pytest.fixture
def fit_loader():  # noqa: ANN201
    ds = build_dataset({"name": "synthetic", "num_fit": 128}, split="fit", image_size=32)
    return make_loader(ds, batch_size=32, shuffle=True, seed=0)


@pytest.fixture
def eval_loader():  # noqa: ANN201
    ds = build_dataset({"name": "synthetic", "num_eval": 96}, split="eval", image_size=32)
    return make_loader(ds, batch_size=64, shuffle=False)


def compose_config(*overrides: str) -> DictConfig:
    """The real primary config composed with ``overrides`` (no job is run)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def app_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(DP_OUTPUT_DIR=str(tmp_path / "outputs"), WANDB_SILENT="true", MALLOC_MMAP_MAX_="0",
               MALLOC_TRIM_THRESHOLD_="100000000000", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="2")
    env.pop("WANDB_API_KEY", None)
    env.pop("WANDB_MODE", None)
    return env


def run_app(tmp_path: Path, *overrides: str, module: str = "dominant_patterns",
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``python -m <module> <overrides>`` in a subprocess with outputs under ``tmp_path``."""
    return subprocess.run([sys.executable, "-m", module, *overrides], cwd=tmp_path, env=app_env(tmp_path),
                          capture_output=True, text=True, timeout=timeout)


def read_wandb_offline(path: Path) -> dict[str, list]:
    """Records of an offline ``run-*.wandb`` file by type (a LevelDB-style log of protobuf records).

    Offline runs write no ``wandb-summary.json``; this reads what ``wandb sync`` would upload.
    """
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B transaction log"
    pos, block, chunks, out = 7, 32768, b"", {}
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        chunks += data[pos:pos + length]
        pos += length
        if kind in (1, 4):  # FULL or LAST
            record = pb.Record()
            record.ParseFromString(chunks)
            out.setdefault(record.WhichOneof("record_type"), []).append(record)
            chunks = b""
        elif kind == 0:
            break
    return out


def wandb_summary(path: Path) -> dict[str, object]:
    """The final summary of an offline run as ``{key: value}``."""
    import json

    summary: dict[str, object] = {}
    for record in read_wandb_offline(path).get("summary", []):
        for item in record.summary.update:
            summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return summary


class LoopHost:
    """The smallest :class:`~dominant_patterns.core.loops.LoopOwner`: settings, a projection, no state of its own."""

    def __init__(self, settings, project, checkpointer=None, name: str = "fit") -> None:  # noqa: ANN001
        from dominant_patterns.core.checkpoint import Checkpointer

        self.trainer, self.project, self.name, self.on_log = settings, project, name, None
        self.checkpointer = checkpointer or Checkpointer()

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state) -> None:  # noqa: ANN001
        pass
