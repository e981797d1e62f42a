"""The decoded-image cache, the device loader and the clean-prediction cache (tiny inputs, no timing)."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dominant_patterns.analysis.clean_predictions import cached_clean_predictions
from dominant_patterns.data import image_cache as cache_mod
from dominant_patterns.data.datasets import build_dataset
from dominant_patterns.data.image_cache import CachedImageDataset, build_image_cache, cache_dataset
from dominant_patterns.data.loaders import DeviceLoader, make_loader, random_crop_flip
from tests.conftest import run_app


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        array = rng.integers(0, 256, (30 + 2 * i, 44, 3), dtype=np.uint8)
        Image.fromarray(array).save(root / f"img_{i:02d}.png")
    (root / "broken.jpg").write_bytes(b"this is not an image")
    return root


def folder(root: Path, split: str, size: int = 16):
    return build_dataset({"name": "folder", "root": str(root), "eval_size": 4}, split=split, image_size=size)


def test_build_then_reuse(image_dir: Path, tmp_path: Path) -> None:
    ds = folder(image_dir, "fit")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first, built = cache_dataset(ds, tmp_path / "cache")
    second, again = cache_dataset(ds, tmp_path / "cache")
    assert built > 0 and again == 0.0
    assert isinstance(first, CachedImageDataset) and second.entry.meta["reused"]
    assert torch.equal(first.images, second.images)
    assert first.images.dtype == torch.uint8 and first.images.shape[-1] == round(16 * 256 / 224)
    assert len(list((tmp_path / "cache" / "images").iterdir())) == 1  # no leftover temp folder


def test_corrupt_file_is_skipped_and_recorded(image_dir: Path, tmp_path: Path) -> None:
    ds = folder(image_dir, "fit")
    broken = [i for i, p in enumerate(ds.paths) if p.name == "broken.jpg"]
    with pytest.warns(UserWarning, match="unreadable"):
        cached, _ = cache_dataset(ds, tmp_path / "cache")
    assert len(cached) == len(ds) - len(broken)
    assert cached.split_record.get("skipped", []) == [str(ds.paths[i]) for i in broken]
    assert sorted(cached.entry.sources.tolist()) == [i for i in range(len(ds)) if i not in broken]


def test_key_changes_with_size_and_file_list(image_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "cache"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = build_image_cache(folder(image_dir, "eval", 16), root)
        b = build_image_cache(folder(image_dir, "eval", 24), root)
        (image_dir / "img_00.png").unlink()
        c = build_image_cache(folder(image_dir, "eval", 16), root)
    assert len({a.meta["key"], b.meta["key"], c.meta["key"]}) == 3
    assert not c.meta["reused"] and len(list((root / "images").iterdir())) == 3


def test_eval_cache_matches_the_file_pipeline(image_dir: Path, tmp_path: Path) -> None:
    ds = folder(image_dir, "eval")
    cached, _ = cache_dataset(ds, tmp_path / "cache")
    ref = torch.cat([x for x, _ in make_loader(ds, batch_size=3, shuffle=False)])
    got = torch.cat([x for x, _ in DeviceLoader(cached, batch_size=3, shuffle=False)])
    assert torch.equal(ref, got)
    assert torch.equal(cached[1][0], ref[1])


def test_concurrent_builder_losing_the_rename_uses_the_winner(image_dir: Path, tmp_path: Path, monkeypatch) -> None:
    ds = folder(image_dir, "eval")
    real_rename = os.rename

    def other_job_won(src: str | Path, dst: str | Path) -> None:
        shutil.copytree(src, dst)  # another job renamed its entry into place first
        raise OSError("Directory not empty")

    monkeypatch.setattr(cache_mod.os, "rename", other_job_won)
    entry = build_image_cache(ds, tmp_path / "cache")
    monkeypatch.setattr(cache_mod.os, "rename", real_rename)
    assert len(entry) == len(ds) and not entry.meta["reused"]
    (kept,) = (tmp_path / "cache" / "images").iterdir()  # the winner's entry, no temp folder left
    assert kept.name.endswith(entry.meta["key"])


def test_shards_are_gathered_in_any_order(image_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(cache_mod, "SHARD_IMAGES", 3)
    ds = folder(image_dir, "eval")
    entry = build_image_cache(ds, tmp_path / "cache")
    assert len(entry.shards) == 2
    whole = entry.tensor()
    index = torch.tensor([3, 0, 2, 1])
    assert torch.equal(entry.gather(index), whole[index])


def test_device_loader_order_matches_make_loader() -> None:
    ds = build_dataset({"name": "synthetic", "num_fit": 40}, split="fit", image_size=8)
    ref_loader = make_loader(ds, batch_size=16, shuffle=True, seed=5)
    ours = DeviceLoader(ds, batch_size=16, shuffle=True, seed=5)
    assert len(ours) == len(ref_loader) == 3
    for _ in range(2):  # two epochs: the generator advances the same way
        for (rx, ry), (x, y) in zip(ref_loader, ours, strict=True):
            assert torch.equal(rx, x) and torch.equal(ry, y)


def test_random_crop_flip_gives_crops_and_flips() -> None:
    images = torch.arange(4 * 3 * 7 * 7, dtype=torch.int32).reshape(4, 3, 7, 7)
    out = random_crop_flip(images, 4, torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 4, 4) and out.is_contiguous(memory_format=torch.channels_last)
    for img, crop in zip(images, out, strict=True):
        candidates = [img[:, t:t + 4, left:left + 4] for t in range(4) for left in range(4)]
        candidates = [c.flip(dims) if dims else c for c in candidates for dims in ((), (-1,), (-2,), (-2, -1))]
        assert any(torch.equal(crop, c) for c in candidates)
    seen_flip = random_crop_flip(images.repeat(16, 1, 1, 1), 7, torch.Generator().manual_seed(1))
    assert not all(torch.equal(c, images[i % 4]) for i, c in enumerate(seen_flip))  # some flips happened


def test_fit_batches_are_cropped_on_the_fly(image_dir: Path, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cached, _ = cache_dataset(folder(image_dir, "fit"), tmp_path / "cache")
    x, _ = next(iter(DeviceLoader(cached, batch_size=4, shuffle=True, seed=0)))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.uint8


def test_clean_predictions_are_cached_per_model_and_precision(tiny_model, eval_loader, tmp_path: Path) -> None:
    ds = eval_loader.dataset
    first = cached_clean_predictions(tiny_model, ds, eval_loader, cache_dir=tmp_path)
    files = list((tmp_path / "clean_pred").iterdir())
    assert len(files) == 1 and first.shape == (len(ds),)
    assert torch.equal(first, torch.cat([tiny_model(x.float() / 255).argmax(1) for x, _ in eval_loader]))
    torch.save(torch.zeros_like(first), files[0])  # a hit reads the file (the model is not run again)
    assert torch.equal(cached_clean_predictions(tiny_model, ds, eval_loader, cache_dir=tmp_path),
                       torch.zeros_like(first))
    cached_clean_predictions(tiny_model, ds, eval_loader, cache_dir=tmp_path, precision="bf16")
    with torch.no_grad():
        tiny_model.net.head.bias.add_(1.0)  # other weights: another entry
    cached_clean_predictions(tiny_model, ds, eval_loader, cache_dir=tmp_path)
    assert len(list((tmp_path / "clean_pred").iterdir())) == 3


@pytest.mark.slow  # two app runs in subprocesses
def test_app_reports_cache_build_once(image_dir: Path, tmp_path: Path) -> None:
    args = ["model=tiny", "dataset=folder", f"dataset.root={image_dir}", "dataset.eval_size=4", "logger=none",
            "trainer.progress=false", "trainer.epochs=1", "dataset.num_workers=0"]
    timings = []
    for run in range(2):
        proc = run_app(tmp_path, *args, f"hydra.run.dir={tmp_path}/run{run}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        timings.append(json.loads((tmp_path / f"run{run}" / "metrics.json").read_text())["timing"])
    assert timings[0]["cache_build_seconds"] > 0 and timings[1]["cache_build_seconds"] == 0
