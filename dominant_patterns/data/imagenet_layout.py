"""ImageNet on disk: which layout a root holds, and each image's ImageNet-1k class index (0..999).

Two layouts are accepted (anything else is refused with :data:`ACCEPTED_LAYOUTS`):

* ``wnid_folders``: one folder per class named by its wnid (``n01440764/``), all 1,000 or any subset
  (Imagenette, ImageNet-100, ...). Labels are the ImageNet class index of each wnid, never the folder's
  position. Folders that are not ImageNet-1k wnids are refused by name; the devkit folder and hidden
  folders are ignored.
* ``flat_val``: the ILSVRC2012 validation images in one folder (``ILSVRC2012_val_00000001.JPEG`` ...) as
  distributed, with a ground truth (``dataset.ground_truth``, else found in the root or up to
  :data:`SEARCH_UP` folders above it):

  - the devkit: ``ILSVRC2012_devkit_t12/`` or ``ILSVRC2012_devkit_t12.tar.gz``; its
    ``data/ILSVRC2012_validation_ground_truth.txt`` holds one 1-based ILSVRC2012_ID per image, mapped
    to a wnid through ``data/meta.mat`` (read with scipy);
  - Kaggle's ``LOC_val_solution.csv`` (``ImageId,PredictionString``; the string starts with the wnid);
  - given as ``dataset.ground_truth`` only: a list with one ``filename label`` per line (space or comma
    separated), the label a wnid or a 0-based class index in torchvision's order (caffe's ``val.txt``).

  Files are matched to labels by name without extension; images without a label are skipped, counted in
  a warning and listed in the split record. Sub-folders of a flat root are not read.

Hidden files (``.*``, e.g. macOS ``._`` copies) are never taken for images.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dominant_patterns.core.errors import DataError
from dominant_patterns.data.imagenet_wnids import IMAGENET_WNIDS

log = logging.getLogger(__name__)

#: ImageNet-1k wnid -> class index (torchvision/timm order: the wnids sorted).
WNID_TO_INDEX: dict[str, int] = {w: i for i, w in enumerate(IMAGENET_WNIDS)}

DEVKIT_DIR = "ILSVRC2012_devkit_t12"
DEVKIT_ARCHIVE = "ILSVRC2012_devkit_t12.tar.gz"
DEVKIT_GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"
DEVKIT_META = "data/meta.mat"
KAGGLE_CSV = "LOC_val_solution.csv"
#: How many folders above the root are searched for a ground truth (Kaggle's ILSVRC/Data/CLS-LOC/val needs 4).
SEARCH_UP = 4

WNID_PATTERN = re.compile(r"n\d{8}")
VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})")

ACCEPTED_LAYOUTS = (
    "Accepted layouts: (1) one folder per class named by its ImageNet-1k wnid (n01440764/ ...; all 1,000 or any "
    "subset); (2) the flat ILSVRC2012 val folder (ILSVRC2012_val_00000001.JPEG ...) with a ground truth: "
    f"{DEVKIT_DIR}/ or {DEVKIT_ARCHIVE} or {KAGGLE_CSV} in the root or up to {SEARCH_UP} folders above it, "
    "or dataset.ground_truth=FILE (devkit folder/archive, LOC_val_solution.csv, or a 'filename label' list)"
)


@dataclass
class ImagenetFiles:
    """The images of an ImageNet root, their class indices and how they were found."""

    paths: list[Path]
    labels: list[int]
    layout: str
    ground_truth: str | None = None
    unlabelled: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """What goes into the split record (``split_*.json``)."""
        rec: dict[str, Any] = {"layout": self.layout}
        if self.ground_truth is not None:
            rec["ground_truth"] = self.ground_truth
        if self.unlabelled:
            rec["unlabelled_skipped"] = len(self.unlabelled)
            rec["unlabelled"] = self.unlabelled
        return rec


def wnid_index(wnid: str) -> int:
    """ImageNet-1k class index of ``wnid``; DataError when it is not one of the 1,000."""
    try:
        return WNID_TO_INDEX[wnid]
    except KeyError:
        raise DataError(f"'{wnid}' is not an ImageNet-1k wnid (1,000 wnids, n01440764 ... n15075141)") from None


def _names(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _images_in(folder: Path, suffixes: frozenset[str], recursive: bool) -> list[Path]:
    if recursive:
        return sorted(p for p in folder.rglob("*")
                      if p.suffix.lower() in suffixes and not p.name.startswith(".") and p.is_file())
    with os.scandir(folder) as it:
        return sorted(Path(e.path) for e in it
                      if Path(e.name).suffix.lower() in suffixes and not e.name.startswith(".") and e.is_file())


def find_imagenet_files(root: Path, suffixes: Iterable[str], ground_truth: str | Path | None = None) -> ImagenetFiles:
    """Detect the layout of ``root`` and label every image by its ImageNet-1k class index.

    Args:
        root: an existing folder.
        suffixes: image file extensions (any case).
        ground_truth: for the flat layout, the ground-truth file or devkit (else searched for).
    """
    suffixes = frozenset(s.lower() for s in suffixes)
    with os.scandir(root) as it:
        entries = sorted(it, key=lambda e: e.name)
    folders = [e.name for e in entries if e.is_dir() and not e.name.startswith(".") and e.name != DEVKIT_DIR]
    wnid_like = [f for f in folders if WNID_PATTERN.fullmatch(f)]
    if wnid_like:
        if ground_truth not in (None, ""):
            log.warning("dataset.ground_truth=%s is not used: dataset.root=%s holds wnid class folders",
                        ground_truth, root)
        return _wnid_folders(root, folders, suffixes)
    loose = _images_in(root, suffixes, recursive=False)
    if loose:
        return _flat_val(root, loose, folders, ground_truth)
    seen = f"only the sub-folders {_names(folders)}" if folders else "no image files and no class folders"
    raise DataError(f"dataset.root={root} is not an ImageNet layout (it holds {seen}; set dataset.root to the folder "
                    f"of the class folders or of the images). {ACCEPTED_LAYOUTS}")


def _wnid_folders(root: Path, folders: list[str], suffixes: frozenset[str]) -> ImagenetFiles:
    bad = [f for f in folders if f not in WNID_TO_INDEX]
    if bad:
        raise DataError(f"dataset.root={root}: {len(bad)} of {len(folders)} folders are not ImageNet-1k wnids: "
                        f"{_names(bad)}. Remove them, or use dataset=folder dataset.labeled=true for other classes. "
                        f"{ACCEPTED_LAYOUTS}")
    paths: list[Path] = []
    labels: list[int] = []
    empty = []
    for wnid in folders:
        files = _images_in(root / wnid, suffixes, recursive=True)
        if not files:
            empty.append(wnid)
        paths += files
        labels += [WNID_TO_INDEX[wnid]] * len(files)
    if empty:
        log.warning("dataset.root=%s: %d wnid folders hold no images: %s", root, len(empty), _names(empty))
    loose = _images_in(root, suffixes, recursive=False)
    if loose:
        log.warning("dataset.root=%s: %d image files beside the wnid folders are not used (no class): %s",
                    root, len(loose), _names([p.name for p in loose], 3))
    if not paths:
        raise DataError(f"dataset.root={root}: the wnid folders ({_names(folders)}) hold no image files "
                        f"({', '.join(sorted(suffixes))})")
    return ImagenetFiles(paths, labels, "wnid_folders")


def _flat_val(root: Path, images: list[Path], folders: list[str], ground_truth: str | Path | None) -> ImagenetFiles:
    source = Path(ground_truth).expanduser() if ground_truth not in (None, "") else _find_ground_truth(root)
    if source is None:
        raise DataError(f"dataset.root={root} holds {len(images)} images but no class folders, and no ground truth "
                        f"was found for them. {ACCEPTED_LAYOUTS}")
    by_name = read_ground_truth(source)
    if folders:
        log.warning("dataset.root=%s: flat layout, sub-folders not read: %s", root, _names(folders))
    paths, labels, unlabelled = [], [], []
    for p in images:
        label = by_name.get(p.stem)
        if label is None:
            unlabelled.append(p.name)
        else:
            paths.append(p)
            labels.append(label)
    if not paths:
        raise DataError(f"dataset.root={root}: none of its {len(images)} images (e.g. {images[0].name}) has a label "
                        f"in the ground truth {source} ({len(by_name)} labels, e.g. {next(iter(by_name), '-')})")
    if unlabelled:
        log.warning("dataset.root=%s: %d of %d images have no label in %s and are skipped: %s", root,
                    len(unlabelled), len(images), source, _names(unlabelled, 3))
    log.info("imagenet: flat val layout, %d images labelled from %s", len(paths), source)
    return ImagenetFiles(paths, labels, "flat_val", str(source), unlabelled)


def _find_ground_truth(root: Path) -> Path | None:
    folder = root.resolve()
    for _ in range(SEARCH_UP + 1):
        for name in (DEVKIT_DIR, DEVKIT_ARCHIVE, KAGGLE_CSV):
            if (folder / name).exists():
                return folder / name
        if folder.parent == folder:
            break
        folder = folder.parent
    return None


def read_ground_truth(source: Path) -> dict[str, int]:
    """Image name (without extension) -> class index, from a devkit (folder, archive or its ground-truth
    file), a ``LOC_val_solution.csv`` or a ``filename label`` list."""
    if not source.exists():
        raise DataError(f"dataset.ground_truth={source} does not exist. {ACCEPTED_LAYOUTS}")
    name = source.name.lower()
    if source.is_dir():
        data = source / "data" if (source / DEVKIT_GROUND_TRUTH).is_file() else source
        gt, meta = data / Path(DEVKIT_GROUND_TRUTH).name, data / Path(DEVKIT_META).name
        if not gt.is_file() or not meta.is_file():
            raise DataError(f"dataset.ground_truth={source}: a devkit folder needs {DEVKIT_GROUND_TRUTH} and "
                            f"{DEVKIT_META} ({DEVKIT_DIR} as extracted from {DEVKIT_ARCHIVE})")
        return _devkit_labels(gt.read_text(), _meta_wnids(meta.read_bytes(), meta), gt)
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        return _devkit_archive(source)
    if name.endswith(".csv"):
        return _kaggle_csv(source)
    if name == Path(DEVKIT_GROUND_TRUTH).name.lower():
        meta = source.parent / Path(DEVKIT_META).name
        if not meta.is_file():
            raise DataError(f"dataset.ground_truth={source}: the devkit's {Path(DEVKIT_META).name} must lie next to "
                            "it (it maps the ILSVRC2012_IDs to wnids)")
        return _devkit_labels(source.read_text(), _meta_wnids(meta.read_bytes(), meta), source)
    return _label_list(source)


def _devkit_archive(source: Path) -> dict[str, int]:
    try:
        with tarfile.open(source) as tar:
            found = {}
            for member in tar.getmembers():
                for key in (DEVKIT_GROUND_TRUTH, DEVKIT_META):
                    if member.name.endswith(key) and member.isfile():
                        handle = tar.extractfile(member)
                        found[key] = handle.read() if handle is not None else b""
    except (tarfile.TarError, OSError) as exc:
        raise DataError(f"dataset.ground_truth={source} is not a readable devkit archive ({exc})") from exc
    missing = [k for k in (DEVKIT_GROUND_TRUTH, DEVKIT_META) if k not in found]
    if missing:
        raise DataError(f"dataset.ground_truth={source}: the archive lacks {', '.join(missing)} "
                        f"(expected {DEVKIT_ARCHIVE} from image-net.org)")
    return _devkit_labels(found[DEVKIT_GROUND_TRUTH].decode(), _meta_wnids(found[DEVKIT_META], source), source)


def _meta_wnids(raw: bytes, where: Path) -> dict[int, str]:
    """ILSVRC2012_ID (1..1000) -> wnid from the devkit's meta.mat."""
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DataError(f"reading the devkit's meta.mat ({where}) needs scipy (pip install scipy); or give "
                        f"dataset.ground_truth={KAGGLE_CSV} or a 'filename label' list") from None
    try:
        synsets = loadmat(io.BytesIO(raw), squeeze_me=True)["synsets"]
        ids = [int(i) for i in synsets["ILSVRC2012_ID"].ravel()]
        wnids = [str(w) for w in synsets["WNID"].ravel()]
    except (KeyError, ValueError, TypeError, IndexError, OSError) as exc:
        raise DataError(f"{where}: not the devkit's meta.mat (needs a 'synsets' struct with ILSVRC2012_ID and "
                        f"WNID; {type(exc).__name__}: {exc})") from exc
    mapping = {i: w for i, w in zip(ids, wnids, strict=True) if 1 <= i <= len(IMAGENET_WNIDS)}
    bad = sorted(w for w in mapping.values() if w not in WNID_TO_INDEX)
    if bad:
        raise DataError(f"{where}: meta.mat names wnids that are not ImageNet-1k classes: {_names(bad)}")
    return mapping


def _devkit_labels(text: str, id_to_wnid: dict[int, str], where: Path) -> dict[str, int]:
    labels = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            wnid = id_to_wnid[int(line)]
        except (ValueError, KeyError):
            raise DataError(f"{where} line {n}: '{line.strip()}' is not an ILSVRC2012_ID of meta.mat "
                            f"(1..{len(IMAGENET_WNIDS)}, one per image)") from None
        labels[f"ILSVRC2012_val_{n:08d}"] = WNID_TO_INDEX[wnid]
    return labels


def _kaggle_csv(source: Path) -> dict[str, int]:
    with source.open(newline="") as fh:
        rows = list(csv.reader(fh))
    header = [h.strip() for h in rows[0]] if rows else []
    if "ImageId" not in header or "PredictionString" not in header:
        raise DataError(f"dataset.ground_truth={source}: a CSV needs the header ImageId,PredictionString "
                        f"({KAGGLE_CSV}); found {','.join(header) or 'an empty file'}")
    col_id, col_pred = header.index("ImageId"), header.index("PredictionString")
    labels = {}
    for n, row in enumerate(rows[1:], 2):
        if not row:
            continue
        wnid = row[col_pred].split()[0] if len(row) > col_pred and row[col_pred].split() else ""
        if wnid not in WNID_TO_INDEX:
            raise DataError(f"{source} line {n}: '{wnid}' is not an ImageNet-1k wnid (PredictionString starts "
                            "with the wnid)")
        labels[Path(row[col_id].strip()).stem] = WNID_TO_INDEX[wnid]
    return labels


def _label_list(source: Path) -> dict[str, int]:
    labels = {}
    for n, line in enumerate(source.read_text().splitlines(), 1):
        parts = line.replace(",", " ").split()
        if not parts:
            continue
        if len(parts) == 1 and parts[0].isdigit():
            raise DataError(f"{source} line {n}: one number per line is the devkit's ground truth; give the devkit "
                            f"folder or archive, or keep the file named {Path(DEVKIT_GROUND_TRUTH).name} next to "
                            "meta.mat")
        if len(parts) != 2:
            raise DataError(f"{source} line {n}: expected 'filename label' (label: wnid or 0-based class index "
                            f"0..999), got '{line.strip()}'")
        name, label = parts
        if label in WNID_TO_INDEX:
            labels[Path(name).stem] = WNID_TO_INDEX[label]
        elif label.isdigit() and int(label) < len(IMAGENET_WNIDS):
            labels[Path(name).stem] = int(label)
        elif n == 1 and not label.isdigit() and not WNID_PATTERN.fullmatch(label):
            continue  # a header line such as "filename label"
        else:
            raise DataError(f"{source} line {n}: label '{label}' is neither an ImageNet-1k wnid nor a 0-based class "
                            "index 0..999 (torchvision order)")
    return labels
