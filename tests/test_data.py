"""Datasets: splits never share images, folders are read with corrupt files skipped, bad roots explained."""

import pytest
import torch
from PIL import Image

from dominant_patterns.core.batches import to_float_batch
from dominant_patterns.core.errors import DataError, UserInputError
from dominant_patterns.data.datasets import DATASETS, EVAL_PHOTOS, FIT_PHOTOS, build_dataset, seeded_split
from dominant_patterns.data.loaders import make_loader


def write_images(root, n, size=(40, 30), sub=""):
    folder = root / sub if sub else root
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", size, color=(i * 20 % 255, 100, 50)).save(folder / f"img_{i:03d}.jpg")


def test_registry_names() -> None:
    assert {"imagenet", "coco", "biggan", "cifar10", "folder", "photos", "synthetic"} <= set(DATASETS.names())


def test_photos_split_by_source_photo() -> None:
    assert not set(FIT_PHOTOS) & set(EVAL_PHOTOS)
    fit = build_dataset({"name": "photos", "num_fit": 12}, split="fit", image_size=64)
    ev = build_dataset({"name": "photos", "num_eval": 7}, split="eval", image_size=64)
    assert fit.images.shape == (12, 3, 64, 64) and ev.images.dtype == torch.uint8
    assert fit.split_record["photos"] == list(FIT_PHOTOS) and ev.split_record["photos"] == list(EVAL_PHOTOS)
    again = build_dataset({"name": "photos", "num_fit": 12}, split="fit", image_size=64)
    assert torch.equal(fit.images, again.images)  # seeded
    with pytest.raises(DataError, match="must be disjoint"):
        build_dataset({"name": "photos", "eval_photos": ["astronaut"]}, split="eval", image_size=64)
    for bad in (0, 1.5):
        with pytest.raises(DataError, match=f"dataset.min_scale={float(bad)}"):
            build_dataset({"name": "photos", "min_scale": bad}, split="fit", image_size=64)


def test_seeded_split_is_disjoint_and_stable() -> None:
    fit, ev = seeded_split(50, 10, None, seed=0)
    assert len(fit) == 40 and len(ev) == 10 and not set(fit) & set(ev)
    assert (fit, ev) == seeded_split(50, 10, None, seed=0)
    small = seeded_split(50, 10, 25, seed=0)[0]
    assert len(small) == 25 and set(small) <= set(fit)


def test_folder_dataset_skips_and_counts_corrupt_files(tmp_path) -> None:
    write_images(tmp_path, 12)
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    cfg = {"name": "folder", "root": str(tmp_path), "eval_size": 5}
    fit = build_dataset(cfg, split="fit", image_size=32)
    ev = build_dataset(cfg, split="eval", image_size=32)
    assert len(fit) == 8 and len(ev) == 5
    with pytest.warns(UserWarning, match="skipping unreadable image .*broken.jpg"):
        batches = [b for ds in (fit, ev) for b in make_loader(ds, batch_size=4, shuffle=False)]
    assert sum(b[0].shape[0] for b in batches) == 12  # 13 files, 1 corrupt skipped
    assert batches[0][0].shape[1:] == (3, 32, 32) and batches[0][0].dtype == torch.uint8


def test_imagenet_layout_and_split_record(tmp_path) -> None:
    for c in ("n01440764", "n01443537"):
        write_images(tmp_path, 10, sub=c)
    cfg = {"name": "imagenet", "root": str(tmp_path), "fit_size": None, "eval_size": 5}
    fit = build_dataset(cfg, split="fit", image_size=32)
    ev = build_dataset(cfg, split="eval", image_size=32)
    assert len(fit) == 15 and len(ev) == 5
    assert not set(fit.split_record["files"]) & set(ev.split_record["files"])
    assert set(fit.labels) | set(ev.labels) == {0, 1}


def test_missing_root_names_path_and_how_to_get_data(tmp_path) -> None:
    with pytest.raises(DataError, match=r"dataset.root=.*nope does not exist.*image-net.org"):
        build_dataset({"name": "imagenet", "root": str(tmp_path / "nope")}, split="fit", image_size=32)
    with pytest.raises(DataError, match="cocodataset.org"):
        build_dataset({"name": "coco", "root": str(tmp_path / "nope")}, split="fit", image_size=32)


def test_empty_folder_is_reported(tmp_path) -> None:
    with pytest.raises(DataError, match="no image files"):
        build_dataset({"name": "folder", "root": str(tmp_path)}, split="fit", image_size=32)


def test_unknown_dataset_and_split() -> None:
    with pytest.raises(UserInputError, match="unknown dataset 'mnist'. Valid choices: "):
        build_dataset({"name": "mnist"}, split="fit", image_size=32)
    with pytest.raises(DataError, match="split=test is not valid"):
        build_dataset({"name": "synthetic"}, split="test", image_size=32)


def test_to_float_batch_accepts_several_shapes() -> None:
    u8 = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    x, y = to_float_batch(u8, "cpu")
    assert x.dtype == torch.float32 and x.max() == 1.0 and y is None
    x, y = to_float_batch({"image": u8, "label": [1, 2]}, "cpu")
    assert y.tolist() == [1, 2]
