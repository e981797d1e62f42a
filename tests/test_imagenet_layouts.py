"""ImageNet layouts (issue 21, cases 2 and 12): wnid folders labelled by ImageNet class index, the flat
ILSVRC2012 val folder with its ground truth (devkit folder/archive, Kaggle CSV, label list), others refused."""

from __future__ import annotations

import io
import logging
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import ConcatDataset

from dominant_patterns.analysis.metrics import evaluate_patterns
from dominant_patterns.core.errors import DataError
from dominant_patterns.data.datasets import build_dataset
from dominant_patterns.data.imagenet_layout import (
    DEVKIT_ARCHIVE,
    DEVKIT_DIR,
    KAGGLE_CSV,
    WNID_TO_INDEX,
    find_imagenet_files,
    wnid_index,
)
from dominant_patterns.data.imagenet_wnids import IMAGENET_WNIDS
from dominant_patterns.data.loaders import make_loader
from dominant_patterns.models.classifier import ClassifierWrapper, ModelInfo, imagenet_class_names

TENCH, KIT_FOX, SEA_SNAKE, EGYPTIAN_CAT = "n01440764", "n02119789", "n01751748", "n02124075"
#: A few true ILSVRC2012_ID -> wnid pairs of the devkit's meta.mat (the IDs are not the class index),
#: plus one non-leaf synset (ID > 1000) that must be ignored.
META = [(490, SEA_SNAKE, 0), (1, KIT_FOX, 0), (286, EGYPTIAN_CAT, 0), (1001, "n00001740", 5)]
SUFFIXES = (".jpg", ".jpeg", ".png", ".JPEG")


def write_image(path: Path, color: int = 0, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (36, 30), color=(color % 255, 90, 40)).save(path, format=fmt)


def val_name(n: int) -> str:
    return f"ILSVRC2012_val_{n:08d}.JPEG"


def write_flat(root: Path, n: int) -> None:
    for i in range(1, n + 1):
        write_image(root / val_name(i), i * 30, "JPEG")


def meta_bytes(pairs: list[tuple[int, str, int]]) -> bytes:
    savemat = pytest.importorskip("scipy.io").savemat
    arr = np.zeros((len(pairs), 1), dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"),
                                            ("num_children", "O")])
    for k, (i, wnid, children) in enumerate(pairs):
        arr[k, 0] = (i, wnid, "words", children)
    buf = io.BytesIO()
    savemat(buf, {"synsets": arr})
    return buf.getvalue()


#: ILSVRC2012_IDs of val images 1..6 and the class index each must get.
GT_IDS = [490, 1, 286, 286, 490, 286]
EXPECTED = [65, 278, 285, 285, 65, 285]


def write_devkit(folder: Path, ids: list[int] = GT_IDS) -> Path:
    data = folder / DEVKIT_DIR / "data"
    data.mkdir(parents=True)
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{i}\n" for i in ids))
    (data / "meta.mat").write_bytes(meta_bytes(META))
    return folder / DEVKIT_DIR


def labels_by_file(root: Path, cfg: dict) -> dict[str, int]:
    """name -> label over both splits (they partition the labelled images)."""
    out = {}
    for split in ("fit", "eval"):
        ds = build_dataset({"name": "imagenet", "root": str(root), "fit_size": None, "eval_size": 1, **cfg},
                           split=split, image_size=32)
        out.update({Path(p).name: label for p, label in zip(ds.paths, ds.labels, strict=True)})
    return out


def one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_wnid_list_is_imagenet_1k_in_class_index_order() -> None:
    assert len(IMAGENET_WNIDS) == 1000 and len(set(IMAGENET_WNIDS)) == 1000
    assert list(IMAGENET_WNIDS) == sorted(IMAGENET_WNIDS)  # torchvision's order is the wnids sorted
    names = imagenet_class_names()
    for wnid, name in ((TENCH, "tench"), (SEA_SNAKE, "sea snake"), (KIT_FOX, "kit fox"),
                       (EGYPTIAN_CAT, "Egyptian cat")):
        assert names[wnid_index(wnid)] == name
    timm = pytest.importorskip("timm")
    shipped = Path(timm.__file__).parent / "data" / "_info" / "imagenet_synsets.txt"
    if shipped.is_file():
        assert shipped.read_text().split() == list(IMAGENET_WNIDS)
    with pytest.raises(DataError, match="'n99999999' is not an ImageNet-1k wnid"):
        wnid_index("n99999999")


def test_subset_of_wnid_folders_labelled_by_imagenet_index(tmp_path) -> None:
    for i in range(3):
        write_image(tmp_path / TENCH / f"t{i}.jpg", i)
    for i in range(4):
        write_image(tmp_path / EGYPTIAN_CAT / f"c{i}.png", i)
    write_image(tmp_path / EGYPTIAN_CAT / "nested" / "c9.JPEG", 9, "JPEG")  # searched recursively
    write_image(tmp_path / DEVKIT_DIR / "data" / "x.jpg")  # never a class
    write_image(tmp_path / ".thumbs" / "h.jpg")  # hidden folders are ignored
    (tmp_path / EGYPTIAN_CAT / "._c0.png").write_bytes(b"macOS resource fork")  # hidden file, not an image
    labels = labels_by_file(tmp_path, {})
    assert labels == {**{f"t{i}.jpg": 0 for i in range(3)}, **{f"c{i}.png": 285 for i in range(4)}, "c9.JPEG": 285}
    ds = build_dataset({"name": "imagenet", "root": str(tmp_path), "eval_size": 2}, split="eval", image_size=32)
    assert ds.split_record["layout"] == "wnid_folders" and ds.label_space == "imagenet"


def test_wnid_folder_accuracy_is_against_imagenet_index(tmp_path) -> None:
    """Case 2: 5 of 8 images in n02124075, a model that always says Egyptian cat -> 62.5%, not 0%."""
    for i in range(5):
        write_image(tmp_path / EGYPTIAN_CAT / f"c{i}.jpg", i)
    for i in range(3):
        write_image(tmp_path / TENCH / f"t{i}.jpg", i)

    class AlwaysCat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(3, 1000)
            with torch.no_grad():
                self.head.weight.zero_()
                self.head.bias.zero_()
                self.head.bias[285] = 1.0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(x.mean((2, 3)))

    model = ClassifierWrapper(AlwaysCat(), ModelInfo(name="always_cat", input_size=32, head="head",
                                                     class_names=tuple(imagenet_class_names())))
    cfg = {"name": "imagenet", "root": str(tmp_path), "fit_size": None, "eval_size": 3, "augment": False}
    both = ConcatDataset([build_dataset(cfg, split=s, image_size=32) for s in ("fit", "eval")])
    result = evaluate_patterns(model, {"zero": torch.zeros(3, 32, 32)}, make_loader(both, batch_size=4, shuffle=False),
                               labels_match=True, progress=False)
    assert result.patterns["zero"]["clean_accuracy"] == pytest.approx(5 / 8)


def test_folders_that_are_not_imagenet_wnids_are_refused_by_name(tmp_path) -> None:
    write_image(tmp_path / TENCH / "a.jpg")
    write_image(tmp_path / "cats" / "b.jpg")
    write_image(tmp_path / "n99999999" / "c.jpg")
    with pytest.raises(DataError) as excinfo:
        find_imagenet_files(tmp_path, SUFFIXES)
    message = one_line_error(excinfo)
    assert "2 of 3 folders are not ImageNet-1k wnids: cats, n99999999" in message
    assert "dataset=folder dataset.labeled=true" in message and "Accepted layouts" in message


def test_flat_val_with_devkit_inside_root(tmp_path) -> None:
    """Case 12: the devkit inside the root is the ground truth, never a class nor images."""
    write_flat(tmp_path, 6)
    devkit = write_devkit(tmp_path)
    write_image(devkit / "evaluation" / "demo.JPEG", fmt="JPEG")
    write_image(devkit / "data" / "sample.jpg")
    labels = labels_by_file(tmp_path, {})
    assert labels == {val_name(i + 1): EXPECTED[i] for i in range(6)}
    ds = build_dataset({"name": "imagenet", "root": str(tmp_path), "eval_size": 2}, split="eval", image_size=32)
    assert ds.split_record["layout"] == "flat_val" and ds.split_record["ground_truth"] == str(devkit.resolve())
    assert all(not f.startswith(DEVKIT_DIR) for f in ds.split_record["files"])


def test_flat_val_with_devkit_archive_beside_root(tmp_path) -> None:
    root = tmp_path / "val"
    write_flat(root, 6)
    devkit = write_devkit(tmp_path / "unpacked")
    with tarfile.open(tmp_path / DEVKIT_ARCHIVE, "w:gz") as tar:
        tar.add(devkit, arcname=DEVKIT_DIR)
    found = find_imagenet_files(root, SUFFIXES)
    assert found.ground_truth == str((tmp_path / DEVKIT_ARCHIVE).resolve())
    assert [p.name for p in found.paths] == [val_name(i) for i in range(1, 7)] and found.labels == EXPECTED
    # the same archive, or the devkit folder, or its ground-truth file (meta.mat beside it), given explicitly
    for given in (tmp_path / DEVKIT_ARCHIVE, devkit, devkit / "data" / "ILSVRC2012_validation_ground_truth.txt"):
        assert find_imagenet_files(root, SUFFIXES, str(given)).labels == EXPECTED


def test_flat_val_with_kaggle_csv_four_folders_up(tmp_path) -> None:
    """Kaggle's layout: ILSVRC/Data/CLS-LOC/val/*.JPEG with LOC_val_solution.csv at the top; no scipy needed."""
    root = tmp_path / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    write_flat(root, 3)
    rows = [f"ILSVRC2012_val_00000001,{TENCH} 1 2 30 40 {TENCH} 5 6 7 8",
            f"ILSVRC2012_val_00000002,{EGYPTIAN_CAT} 1 2 3 4", f"ILSVRC2012_val_00000003,{KIT_FOX} 1 2 3 4"]
    (tmp_path / KAGGLE_CSV).write_text("ImageId,PredictionString\n" + "\n".join(rows) + "\n")
    found = find_imagenet_files(root, SUFFIXES)
    assert found.layout == "flat_val" and found.labels == [0, 285, 278]


def test_flat_val_with_label_list_skips_and_names_unlabelled(tmp_path, caplog) -> None:
    root = tmp_path / "val"
    write_flat(root, 5)
    listing = tmp_path / "val.txt"
    listing.write_text(f"{val_name(1)} 65\nval/{val_name(2)} {EGYPTIAN_CAT}\n{val_name(3)},0\n{val_name(4)} 999\n")
    with caplog.at_level(logging.WARNING):
        labels = labels_by_file(root, {"ground_truth": str(listing)})
    assert labels == {val_name(1): 65, val_name(2): 285, val_name(3): 0, val_name(4): 999}
    assert f"1 of 5 images have no label in {listing} and are skipped: {val_name(5)}" in caplog.text
    ds = build_dataset({"name": "imagenet", "root": str(root), "eval_size": 1, "ground_truth": str(listing)},
                       split="fit", image_size=32)
    assert ds.split_record["unlabelled_skipped"] == 1 and ds.split_record["unlabelled"] == [val_name(5)]


@pytest.mark.parametrize(("content", "match"), [
    (f"{val_name(1)} 1000\n", "label '1000' is neither an ImageNet-1k wnid nor a 0-based class index 0..999"),
    (f"{val_name(1)} n99999999\n", "label 'n99999999' is neither"),
    ("490\n1\n", "one number per line is the devkit's ground truth"),
    (f"{val_name(1)} 3 extra\n", "expected 'filename label'"),
])
def test_bad_label_list_is_refused_in_one_line(tmp_path, content: str, match: str) -> None:
    write_flat(tmp_path / "val", 2)
    (tmp_path / "labels.txt").write_text(content)
    with pytest.raises(DataError, match=match) as excinfo:
        find_imagenet_files(tmp_path / "val", SUFFIXES, str(tmp_path / "labels.txt"))
    one_line_error(excinfo)


def test_bad_ground_truth_files_are_refused(tmp_path) -> None:
    root = tmp_path / "val"
    write_flat(root, 2)
    with pytest.raises(DataError, match=r"dataset.ground_truth=.*nope.csv does not exist"):
        find_imagenet_files(root, SUFFIXES, str(tmp_path / "nope.csv"))
    (tmp_path / "wrong.csv").write_text("file,label\na,1\n")
    with pytest.raises(DataError, match="a CSV needs the header ImageId,PredictionString"):
        find_imagenet_files(root, SUFFIXES, str(tmp_path / "wrong.csv"))
    (tmp_path / "other.txt").write_text("someone_else.jpg 3\n")
    with pytest.raises(DataError, match="none of its 2 images .* has a label in the ground truth"):
        find_imagenet_files(root, SUFFIXES, str(tmp_path / "other.txt"))


def test_devkit_without_scipy_says_what_to_do(tmp_path, monkeypatch) -> None:
    write_flat(tmp_path, 2)
    write_devkit(tmp_path)
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    with pytest.raises(DataError, match=f"needs scipy .*{KAGGLE_CSV}") as excinfo:
        find_imagenet_files(tmp_path, SUFFIXES)
    one_line_error(excinfo)


def test_flat_images_without_ground_truth_are_refused(tmp_path) -> None:
    write_flat(tmp_path / "a" / "b" / "c" / "d" / "e" / "val", 3)
    with pytest.raises(DataError, match="holds 3 images but no class folders, and no ground truth") as excinfo:
        build_dataset({"name": "imagenet", "root": str(tmp_path / "a/b/c/d/e/val")}, split="fit", image_size=32)
    assert "Accepted layouts: (1) one folder per class" in one_line_error(excinfo)


def test_unknown_layout_is_refused_naming_accepted_layouts(tmp_path) -> None:
    write_image(tmp_path / "train" / "x.jpg")
    write_image(tmp_path / "val" / "y.jpg")
    with pytest.raises(DataError) as excinfo:
        build_dataset({"name": "imagenet", "root": str(tmp_path)}, split="fit", image_size=32)
    message = one_line_error(excinfo)
    assert "is not an ImageNet layout (it holds only the sub-folders train, val" in message
    assert "(2) the flat ILSVRC2012 val folder" in message and "dataset.ground_truth=FILE" in message
    write_devkit(tmp_path / "only_devkit")
    with pytest.raises(DataError, match="holds no image files and no class folders"):
        find_imagenet_files(tmp_path / "only_devkit", SUFFIXES)


def test_full_imagenet_index_is_the_sorted_folder_order() -> None:
    """With all 1,000 folders the index equals ImageFolder's sorted position (nothing changes for them)."""
    assert [WNID_TO_INDEX[w] for w in sorted(IMAGENET_WNIDS)] == list(range(1000))
