"""Datasets (one registry) yielding ``(uint8 image [3, S, S], label)`` pairs, and loaders.

Every dataset has a ``fit`` and an ``eval`` split that never share an image. Labels are
``-1`` for label-free sets; ``label_space`` says what labels index, so accuracy is only
computed when it matches the model's.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from dominant_patterns.core.errors import DataError
from dominant_patterns.core.registry import Registry
from dominant_patterns.data.photos import EVAL_PHOTOS, FIT_PHOTOS, load_photo, random_crops, read_idx_gz, resize_uint8

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".JPEG")
SPLITS = ("fit", "eval")


class SplitDataset(Dataset):
    """Base for the project's datasets: name, split, label space and a JSON-able split record."""

    name: str = "dataset"
    split: str = "fit"
    label_space: str | None = None
    split_record: dict[str, Any]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "split": self.split, "size": len(self), "label_space": self.label_space}


class TensorImageDataset(SplitDataset):
    """Images already decoded into one uint8 tensor [N, 3, S, S]."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, name: str, split: str,
                 label_space: str | None, split_record: dict[str, Any] | None = None) -> None:
        self.images, self.labels = images, labels
        self.name, self.split, self.label_space = name, split, label_space
        self.split_record = split_record or {}

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])


class ImageFileDataset(SplitDataset):
    """Image files decoded on access; unreadable files are skipped (``None``) and counted."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], *, image_size: int, augment: bool,
                 name: str, split: str, label_space: str | None, split_record: dict[str, Any]) -> None:
        self.paths, self.labels = list(paths), list(labels)
        self.name, self.split, self.label_space = name, split, label_space
        self.split_record = split_record
        self.image_size, self.augment = image_size, augment
        self.transform = file_transform(image_size, augment)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int] | None:
        image = open_rgb(self.paths[i])
        if isinstance(image, str):
            warnings.warn(f"skipping unreadable image {self.paths[i]}: {image}", stacklevel=1)
            return None
        return self.transform(image), self.labels[i]


def open_rgb(path: Path) -> Any:
    """The decoded RGB picture at ``path`` (a PIL image), or a short reason why it cannot be used.

    Anything a disk can hold is handled: truncated or corrupt files, non-images with an image suffix, folders,
    broken links, decompression bombs, modes that do not convert to RGB.
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except Exception as exc:  # noqa: BLE001 - PIL raises many types (OSError, SyntaxError, DecompressionBombError, ...)
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''}"


class _Probe(Dataset):
    """Decodes each file of an :class:`ImageFileDataset` and says only whether it can be used."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, str | None]:
        image = open_rgb(self.paths[i])
        return i, image if isinstance(image, str) else None


def readable_split(dataset: ImageFileDataset, *, num_workers: int = 0) -> ImageFileDataset:
    """``dataset`` without its unreadable files, each decoded once to find them (named in the log and in
    ``split_record["skipped"]``); raises :class:`DataError` when none is left. Run before any fit."""
    loader = DataLoader(_Probe(dataset.paths), batch_size=32, num_workers=num_workers, collate_fn=list)
    bad: dict[int, str] = {}
    for batch in loader:
        bad.update({i: reason for i, reason in batch if reason is not None})
    for i, reason in sorted(bad.items()):
        log.warning("skipping unreadable image %s (%s)", dataset.paths[i], reason)
    keep = [i for i in range(len(dataset.paths)) if i not in bad]
    record = {**dataset.split_record, "skipped": [str(dataset.paths[i]) for i in sorted(bad)]}
    out = ImageFileDataset([dataset.paths[i] for i in keep], [dataset.labels[i] for i in keep],
                           image_size=dataset.image_size, augment=dataset.augment, name=dataset.name,
                           split=dataset.split, label_space=dataset.label_space, split_record=record)
    require_images(out, len(dataset.paths))
    return out


def require_images(dataset: SplitDataset, files: int) -> None:
    """Stop before any fit when a split has no usable image left (naming a few of its unreadable files)."""
    if len(dataset) == 0:
        skipped = list(dataset.split_record.get("skipped") or [])
        examples = ", ".join(skipped[:3]) + (f" (+{len(skipped) - 3} more)" if len(skipped) > 3 else "")
        raise DataError(f"dataset '{dataset.name}' split '{dataset.split}': none of its {files} files can be read"
                        + (f" (e.g. {examples})" if examples else "") + "; check dataset.root")


def skipped_files(dataset: SplitDataset) -> list[str]:
    """The files of a split that were found unreadable and left out (empty for in-memory datasets)."""
    return list(dataset.split_record.get("skipped") or [])


def file_transform(image_size: int, augment: bool) -> Callable[[Any], torch.Tensor]:
    """Resize to 256/224 of the input size, then random (fit) or center (eval) crop; uint8 out.

    The fit-time augmentation (random crop, horizontal and vertical flips) follows the
    reference code of the paper.
    """
    from torchvision.transforms import v2

    resize = int(round(image_size * 256 / 224))
    steps: list[Any] = [v2.PILToTensor(), v2.Resize(resize, antialias=True)]
    if augment:
        steps += [v2.RandomCrop(image_size), v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()]
    else:
        steps += [v2.CenterCrop(image_size)]
    return v2.Compose(steps)


# ---------------------------------------------------------------------------------------------
# Registry of dataset builders: (cfg, split, image_size, seed) -> SplitDataset

DatasetBuilder = Callable[..., SplitDataset]
DATASETS: Registry[DatasetBuilder] = Registry("dataset")


@dataclass
class DatasetRequest:
    """What a builder gets: the dataset's config values plus the split and the model's input size."""

    cfg: dict[str, Any]
    split: str
    image_size: int
    seed: int = 0
    extras: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        value = self.cfg.get(key, default)
        return default if value is None else value


def build_dataset(cfg: dict[str, Any], *, split: str, image_size: int, seed: int = 0) -> SplitDataset:
    """Build the ``split`` (fit or eval) of the dataset described by ``cfg`` (needs ``name``)."""
    if split not in SPLITS:
        raise DataError(f"split={split} is not valid. Valid choices: {', '.join(SPLITS)}")
    builder = DATASETS.get(cfg["name"])
    dataset = builder(DatasetRequest(dict(cfg), split, image_size, seed))
    if len(dataset) == 0:
        raise DataError(f"dataset '{cfg['name']}' split '{split}' is empty (config: {dict(cfg)})")
    return dataset


def _require_root(root: str | None, name: str, hint: str) -> Path:
    if root is None or str(root) in ("", "???"):
        raise DataError(f"dataset '{name}' needs dataset.root=/path. {hint}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"dataset.root={path} does not exist or is not a folder (dataset '{name}'). {hint}")
    return path


def list_images(root: Path) -> list[Path]:
    """All image files under ``root`` (recursive, sorted)."""
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in {e.lower() for e in IMAGE_EXTENSIONS})
    if not files:
        raise DataError(f"no image files ({', '.join(sorted({e.lower() for e in IMAGE_EXTENSIONS}))}) "
                        f"found under {root}")
    return files


def seeded_split(n: int, eval_size: int, fit_size: int | None, seed: int) -> tuple[list[int], list[int]]:
    """Seeded permutation of ``range(n)``: the last ``eval_size`` indices evaluate, the rest fit."""
    if eval_size >= n:
        raise DataError(f"eval_size={eval_size} leaves no image to fit on ({n} images in all)")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    eval_idx = sorted(order[n - eval_size:])
    fit_idx = sorted(order[: n - eval_size][: fit_size or None])
    return fit_idx, eval_idx


IMAGENET_HINT = ("Download ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz from image-net.org, extract "
                 "the images into one folder with the devkit beside it (or one folder per class wnid), "
                 "then set dataset.root.")


@DATASETS.register("imagenet")
def imagenet_dataset(req: DatasetRequest) -> SplitDataset:
    """ILSVRC2012 images labelled by ImageNet-1k class index; the paper's seeded 40k/10k split.

    Layouts (see :mod:`dominant_patterns.data.imagenet_layout`): wnid class folders (all 1,000 or any subset), or
    the flat val folder with its ground truth (devkit, ``LOC_val_solution.csv``, ``dataset.ground_truth``).
    """
    from dominant_patterns.data.imagenet_layout import find_imagenet_files

    root = _require_root(req.get("root"), "imagenet", IMAGENET_HINT)
    found = find_imagenet_files(root, IMAGE_EXTENSIONS, req.get("ground_truth"))
    paths, labels = found.paths, found.labels
    fit_idx, eval_idx = seeded_split(len(paths), int(req.get("eval_size", 10000)),
                                     req.get("fit_size"), int(req.get("split_seed", 0)))
    idx = fit_idx if req.split == "fit" else eval_idx
    record = {"root": str(root), "split_seed": int(req.get("split_seed", 0)), **found.record(),
              "files": [str(paths[i].relative_to(root)) for i in idx]}
    return ImageFileDataset([paths[i] for i in idx], [labels[i] for i in idx], image_size=req.image_size,
                            augment=bool(req.get("augment", True)) and req.split == "fit", name="imagenet",
                            split=req.split, label_space=req.get("label_space", "imagenet"), split_record=record)


FOLDER_HINTS = {
    "coco": "Download COCO 2017 train images (train2017.zip) from cocodataset.org and set dataset.root.",
    "biggan": "Generate images with a BigGAN (e.g. pytorch-pretrained-biggan) into one folder and set dataset.root.",
    "folder": "Set dataset.root to any folder of images (searched recursively).",
}


@DATASETS.register("coco", "biggan", "folder")
def folder_dataset(req: DatasetRequest) -> SplitDataset:
    """Any folder of images, label-free (or labeled by subfolder with ``labeled: true``)."""
    name = req.cfg["name"]
    root = _require_root(req.get("root"), name, FOLDER_HINTS[name])
    paths = list_images(root)
    max_images = req.get("max_images")
    if max_images:
        keep = torch.randperm(len(paths), generator=torch.Generator().manual_seed(int(req.get("split_seed", 0))))
        paths = sorted(paths[i] for i in keep[: int(max_images)].tolist())
    if req.get("labeled", False):
        classes = sorted({p.relative_to(root).parts[0] for p in paths})
        labels = [classes.index(p.relative_to(root).parts[0]) for p in paths]
    else:
        labels = [-1] * len(paths)
    eval_size = int(req.get("eval_size", max(1, len(paths) // 10)))
    fit_idx, eval_idx = seeded_split(len(paths), eval_size, req.get("fit_size"), int(req.get("split_seed", 0)))
    idx = fit_idx if req.split == "fit" else eval_idx
    record = {"root": str(root), "split_seed": int(req.get("split_seed", 0)),
              "files": [str(paths[i].relative_to(root)) for i in idx]}
    return ImageFileDataset([paths[i] for i in idx], [labels[i] for i in idx], image_size=req.image_size,
                            augment=bool(req.get("augment", True)) and req.split == "fit", name=name,
                            split=req.split, label_space=req.get("label_space"), split_record=record)


@DATASETS.register("cifar10")
def cifar10_dataset(req: DatasetRequest) -> SplitDataset:
    """CIFAR-10 via torchvision (``download=True``): train set fits, test set evaluates."""
    import torchvision

    root = Path(req.get("root", "data/cifar10")).expanduser()
    try:
        ds = torchvision.datasets.CIFAR10(str(root), train=req.split == "fit", download=bool(req.get("download", True)))
    except (RuntimeError, OSError) as exc:
        raise DataError(f"CIFAR-10 not found under dataset.root={root} and could not be downloaded ({exc}). "
                        "Download cifar-10-python.tar.gz from cs.toronto.edu/~kriz and extract it there.") from exc
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor(ds.targets, dtype=torch.long)
    limit = req.get("max_images")
    if limit:
        keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(req.seed))[: int(limit)]
        images, labels = images[keep], labels[keep]
    images = resize_uint8(images, req.image_size)
    return TensorImageDataset(images, labels, name="cifar10", split=req.split,
                              label_space=req.get("label_space", "cifar10"),
                              split_record={"root": str(root), "train": req.split == "fit", "size": len(labels)})


FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)  # Debian's dataset-fashion-mnist


@DATASETS.register("fashion_mnist")
def fashion_mnist_dataset(req: DatasetRequest) -> SplitDataset:
    """Fashion-MNIST: train split fits, t10k evaluates; grayscale to 3 channels, resized to the model.

    Reads the IDX files from ``root`` or Debian's ``dataset-fashion-mnist`` folder, else downloads
    them with torchvision (``download: true``).
    """
    root = Path(req.get("root", "data/fashion_mnist")).expanduser()
    prefix = "train" if req.split == "fit" else "t10k"
    folders = [root, *map(Path, FASHION_MNIST_DIRS)]
    found = next((d for d in folders if (d / f"{prefix}-images-idx3-ubyte.gz").is_file()), None)
    if found is not None:
        images_np = read_idx_gz(found / f"{prefix}-images-idx3-ubyte.gz")
        labels_np = read_idx_gz(found / f"{prefix}-labels-idx1-ubyte.gz")
    else:
        import torchvision

        try:
            ds = torchvision.datasets.FashionMNIST(str(root), train=req.split == "fit",
                                                   download=bool(req.get("download", True)))
        except (RuntimeError, OSError) as exc:
            raise DataError(f"Fashion-MNIST not found under dataset.root={root} or {FASHION_MNIST_DIRS} and "
                            f"could not be downloaded ({exc}). Install it with "
                            "`apt-get install dataset-fashion-mnist`.") from exc
        found = root
        images_np, labels_np = ds.data.numpy(), ds.targets.numpy()
    labels = torch.from_numpy(labels_np.astype(np.int64))
    limit = req.get("max_images")
    keep = torch.arange(len(labels))
    if limit:
        keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(req.seed))[: int(limit)]
    gray = torch.from_numpy(np.array(images_np))[keep]
    images = resize_uint8(gray[:, None].expand(-1, 3, -1, -1).contiguous(), req.image_size)
    return TensorImageDataset(images, labels[keep], name="fashion_mnist", split=req.split,
                              label_space=req.get("label_space", "fashion_mnist"),
                              split_record={"root": str(found), "file_prefix": prefix, "indices": keep.tolist()})


@DATASETS.register("photos")
def photos_dataset(req: DatasetRequest) -> SplitDataset:
    """Label-free random crops of scikit-image's bundled photographs (embedded, offline)."""
    names = tuple(req.get("fit_photos", FIT_PHOTOS) if req.split == "fit" else req.get("eval_photos", EVAL_PHOTOS))
    overlap = set(req.get("fit_photos", FIT_PHOTOS)) & set(req.get("eval_photos", EVAL_PHOTOS))
    if overlap:
        raise DataError(f"dataset photos: fit_photos and eval_photos share {sorted(overlap)}; they must be disjoint")
    count = int(req.get("num_fit" if req.split == "fit" else "num_eval", 256))
    seed = req.seed * 2 + (0 if req.split == "fit" else 1)
    min_scale = float(req.get("min_scale", 0.08))
    if not 0 < min_scale <= 1:
        raise DataError(f"dataset.min_scale={min_scale} must be in (0, 1] (the smallest crop area, as a share)")
    images = random_crops([load_photo(n) for n in names], count, req.image_size, seed, min_scale)
    return TensorImageDataset(images, torch.full((count,), -1, dtype=torch.long), name="photos", split=req.split,
                              label_space=None, split_record={"photos": list(names), "crop_seed": seed})


@DATASETS.register("synthetic")
def synthetic_dataset(req: DatasetRequest) -> SplitDataset:
    """Smooth random images with class-dependent colour, for tests (fit and eval use different seeds)."""
    count = int(req.get("num_fit" if req.split == "fit" else "num_eval", 64))
    num_classes = int(req.get("num_classes", 10))
    g = torch.Generator().manual_seed(req.seed * 2 + (0 if req.split == "fit" else 1) + 12345)
    labels = torch.randint(0, num_classes, (count,), generator=g)
    low = torch.rand(count, 3, 4, 4, generator=g)
    palette = torch.rand(num_classes, 3, 1, 1, generator=torch.Generator().manual_seed(7))
    images = F.interpolate(low, size=(req.image_size,) * 2, mode="bilinear", align_corners=False)
    images = (0.5 * images + 0.5 * palette[labels]).clamp(0, 1)
    return TensorImageDataset((images * 255).round().to(torch.uint8), labels, name="synthetic", split=req.split,
                              label_space=req.get("label_space", "synthetic"),
                              split_record={"seed": req.seed, "count": count})


def save_split_record(dataset: SplitDataset, path: Path) -> None:
    """Write which images a split holds (e.g. the ImageNet 40k/10k indices) next to the run."""
    path.write_text(json.dumps({**dataset.describe(), **dataset.split_record}, indent=1))


def skip_none_collate(batch: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``(image, label)`` pairs, dropping the ``None`` of unreadable files."""
    kept = [b for b in batch if b is not None]
    if not kept:
        return torch.empty(0, 3, 1, 1, dtype=torch.uint8), torch.empty(0, dtype=torch.long)
    images = torch.stack([b[0] for b in kept])
    labels = torch.tensor([int(b[1]) for b in kept], dtype=torch.long)
    return images, labels
