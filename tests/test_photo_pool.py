"""The offline photo pool: built from (fake) package files, checksums enforced, cache reused without any
download, split by scene, served as the ``photo_pool`` dataset. No network: the downloader is replaced."""

from __future__ import annotations

import io
import json
import re
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dominant_patterns.core.errors import DataError
from dominant_patterns.data import package_files
from dominant_patterns.data import photo_pool as pp
from dominant_patterns.data import photo_pool_sources as sources
from dominant_patterns.data.datasets import DATASETS, build_dataset

DEB_FOLDER, WHEEL_FOLDER = "usr/share/doc/fake-doc/data", "fakewheel/assets"
COPYRIGHT = "Format: x\n\nFiles: *\nCopyright: someone\nLicense: MIT or WTFPL\n\nFiles: debian/*\nLicense: GPL-3+\n"


def png_bytes(seed: int, size: tuple[int, int] = (48, 36)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


DEB_FILES = {f"p{i}.png": png_bytes(i) for i in range(5)}
WHEEL_FILES = {f"w{i}.png": png_bytes(10 + i) for i in range(3)}


def fake_sources() -> tuple[sources.PhotoSource, ...]:
    """A Debian package with 5 photos (p0/p1 one scene) and a wheel with 3, pinned to the fake files."""
    sha = package_files.sha256_hex
    deb = tuple(sources.PoolPhoto(name, sha(data), "pair" if name in ("p0.png", "p1.png") else "")
                for name, data in DEB_FILES.items())
    wheel = tuple(sources.PoolPhoto(name, sha(data), licence="CC0 (README)" if name == "w0.png" else "")
                  for name, data in WHEEL_FILES.items())
    return (sources.PhotoSource("fake-doc", "deb", "fake-doc", DEB_FOLDER, deb),
            sources.PhotoSource("fakewheel", "wheel", "fakewheel-not-installed", WHEEL_FOLDER, wheel, version="1.0"))


def tar_bytes(files: dict[str, bytes], mode: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_deb(path: Path, files: dict[str, bytes], version: str) -> Path:
    """A minimal .deb: ar archive of debian-binary, control.tar.gz and data.tar.xz."""
    members = [("debian-binary", b"2.0\n"),
               ("control.tar.gz", tar_bytes({"control": f"Package: fake-doc\nVersion: {version}\n".encode()}, "w:gz")),
               ("data.tar.xz", tar_bytes(files, "w:xz"))]
    out = bytearray(b"!<arch>\n")
    for name, blob in members:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(blob):<10}`\n".encode() + blob
        out += b"\n" if len(blob) % 2 else b""
    path.write_bytes(bytes(out))
    return path


def write_wheel(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("fakewheel-1.0.dist-info/METADATA", "Metadata-Version: 2.4\nName: fakewheel\nVersion: 1.0\n"
                                                      "License-Expression: BSD-3-Clause\n")
    return path


class FakeDownloader:
    """Stands in for ``download_package``: writes fake package files (optionally with one tampered photo)."""

    def __init__(self, tamper: str | None = None, unavailable: str | None = None) -> None:
        self.calls: list[str] = []
        self.tamper, self.unavailable = tamper, unavailable

    def __call__(self, source: sources.PhotoSource, dest: Path) -> Path:
        self.calls.append(source.name)
        if source.name == self.unavailable:
            raise pp.SourceUnavailable("E: Unable to locate package fake-doc")
        files = dict(DEB_FILES if source.kind == "deb" else WHEEL_FILES)
        if self.tamper in files:
            files[self.tamper] = png_bytes(99)
        tree = {f"{source.folder}/{k}": v for k, v in files.items()}
        if source.kind == "deb":
            tree["usr/share/doc/fake-doc/copyright"] = COPYRIGHT.encode()
            return write_deb(dest / "fake-doc_1.2-3_all.deb", tree, "1.2-3")
        return write_wheel(dest / "fakewheel_not_installed-1.0-py3-none-any.whl", tree)


def no_download(source: sources.PhotoSource, dest: Path) -> Path:
    raise AssertionError(f"downloader called for {source.name}: the cache should have been used")


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> FakeDownloader:
    downloader = FakeDownloader()
    monkeypatch.setattr(pp, "SOURCES", fake_sources())
    monkeypatch.setattr(pp, "download_package", downloader)
    return downloader


def test_build_extracts_pinned_photos_and_writes_manifest(tmp_path: Path, fakes: FakeDownloader) -> None:
    manifest = pp.build_pool(tmp_path)
    assert fakes.calls == ["fake-doc", "fakewheel"]
    assert sorted(p.name for p in (tmp_path / "fake-doc").iterdir()) == sorted(DEB_FILES)
    assert (tmp_path / "fakewheel" / "w1.png").read_bytes() == WHEEL_FILES["w1.png"]
    assert json.loads((tmp_path / pp.MANIFEST).read_text()) == manifest
    rows = {p["file"]: p for p in manifest["photos"]}
    assert len(rows) == 8
    assert rows["fake-doc/p0.png"] == {
        "file": "fake-doc/p0.png", "source": "fake-doc", "package": "fake-doc", "version": "1.2-3",
        "member": f"{DEB_FOLDER}/p0.png", "sha256": package_files.sha256_hex(DEB_FILES["p0.png"]),
        "scene": "fake-doc/pair",
        "licence": "MIT or WTFPL"}
    assert rows["fakewheel/w0.png"]["licence"] == "CC0 (README)"  # the package's note for this photo
    assert rows["fakewheel/w1.png"]["licence"] == "BSD-3-Clause" and rows["fakewheel/w1.png"]["version"] == "1.0"
    assert manifest["missing"] == [] and not list(tmp_path.glob(".fetch-*"))  # downloads are not kept


def test_second_build_uses_the_cache_without_network(tmp_path: Path, fakes: FakeDownloader,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    first = pp.build_pool(tmp_path)
    monkeypatch.setattr(pp, "download_package", no_download)
    assert pp.build_pool(tmp_path) == first
    ds = build_dataset({"name": "photo_pool", "root": str(tmp_path), "num_fit": 6}, split="fit", image_size=32)
    assert len(ds) == 6


def test_bad_checksum_is_refused_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pp, "SOURCES", fake_sources())
    monkeypatch.setattr(pp, "download_package", FakeDownloader(tamper="p3.png"))
    with pytest.raises(DataError, match=r"^photo pool: bad checksum for fake-doc/p3.png from fake-doc_1.2-3_all.deb"
                                        r": sha256 [0-9a-f]{16}\.\.\., pinned") as err:
        pp.build_pool(tmp_path)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "fake-doc").exists() and not (tmp_path / pp.MANIFEST).exists()
    # allow_missing is for packages that cannot be had, never for a bad checksum
    with pytest.raises(DataError, match="bad checksum for fake-doc/p3.png"):
        pp.build_pool(tmp_path, allow_missing=True)


def test_changed_cached_file_is_fetched_again(tmp_path: Path, fakes: FakeDownloader) -> None:
    pp.build_pool(tmp_path)
    (tmp_path / "fakewheel" / "w2.png").write_bytes(b"corrupt")
    pp.build_pool(tmp_path)
    assert fakes.calls == ["fake-doc", "fakewheel", "fakewheel"]
    assert (tmp_path / "fakewheel" / "w2.png").read_bytes() == WHEEL_FILES["w2.png"]


def test_package_file_in_downloads_is_used_without_network(tmp_path: Path, fakes: FakeDownloader,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / pp.DOWNLOADS).mkdir(parents=True)
    fakes(pp.SOURCES[0], tmp_path / pp.DOWNLOADS)
    fakes(pp.SOURCES[1], tmp_path / pp.DOWNLOADS)
    monkeypatch.setattr(pp, "download_package", no_download)
    manifest = pp.build_pool(tmp_path)
    assert [s["origin"] for s in manifest["sources"]] == ["fake-doc_1.2-3_all.deb",
                                                          "fakewheel_not_installed-1.0-py3-none-any.whl"]


def test_unavailable_package_needs_allow_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    downloader = FakeDownloader(unavailable="fake-doc")
    monkeypatch.setattr(pp, "SOURCES", fake_sources())
    monkeypatch.setattr(pp, "download_package", downloader)
    with pytest.raises(pp.SourceUnavailable, match=r"cannot get Debian package 'fake-doc' \(E: Unable to locate "
                                                   r"package fake-doc\)\. Get it by hand: run `apt-get update && "
                                                   r"apt-get download fake-doc` .*dataset.allow_missing=true") as err:
        pp.build_pool(tmp_path)
    assert "\n" not in str(err.value)
    manifest = pp.build_pool(tmp_path, allow_missing=True)
    assert {p["source"] for p in manifest["photos"]} == {"fakewheel"}
    assert [m["source"] for m in manifest["missing"]] == ["fake-doc"]
    ds = build_dataset({"name": "photo_pool", "root": str(tmp_path), "allow_missing": True, "eval_share": 0.4},
                       split="eval", image_size=16)
    assert ds.split_record["missing_sources"] == ["fake-doc"]
    downloader.unavailable = None  # never silently partial: a later strict build fetches the missing package
    manifest = pp.build_pool(tmp_path)
    assert manifest["missing"] == [] and len(manifest["photos"]) == 8
    assert downloader.calls.count("fake-doc") == 4 and downloader.calls.count("fakewheel") == 1


def test_real_download_failure_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pp, "fetch_command", lambda source, dest: ["definitely-not-a-tool-xyz"])
    with pytest.raises(pp.SourceUnavailable, match="definitely-not-a-tool-xyz not found"):
        pp.download_package(fake_sources()[0], tmp_path)


def test_download_into_a_relative_folder_lands_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tool runs inside ``dest`` (as pip does with ``-d DEST``): a relative ``dest`` must not nest the file."""
    wheel = fake_sources()[1]
    script = "import pathlib, sys; d = pathlib.Path(sys.argv[1]); d.mkdir(parents=True, exist_ok=True); " \
             "(d / 'fakewheel_not_installed-1.0-py3-none-any.whl').write_bytes(b'x')"
    monkeypatch.setattr(pp, "fetch_command", lambda source, dest: [sys.executable, "-c", script, str(dest)])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pool" / "downloads").mkdir(parents=True)
    found = pp.download_package(wheel, Path("pool/downloads"))
    assert found == tmp_path / "pool" / "downloads" / "fakewheel_not_installed-1.0-py3-none-any.whl"


def test_split_is_by_scene_seeded_and_per_source() -> None:
    photos = [{"file": f"{s}/{i}.png", "source": s, "scene": f"{s}/{i // 2}"} for s in ("a", "b") for i in range(12)]
    fit, ev = pp.split_by_scene(photos, 0.25, seed=0)
    assert sorted(fit + ev) == sorted(p["file"] for p in photos) and not set(fit) & set(ev)
    scene = {p["file"]: p["scene"] for p in photos}
    assert not {scene[f] for f in fit} & {scene[f] for f in ev}  # a scene never straddles the split
    assert len(ev) == 2 * 2 * 2  # per source: round(0.25 * 6 scenes) = 2 scenes of 2 photos
    assert (fit, ev) == pp.split_by_scene(photos, 0.25, seed=0)
    assert any(pp.split_by_scene(photos, 0.25, seed=s)[1] != ev for s in range(1, 5))
    only_a = [p for p in photos if p["source"] == "a"]  # dropping a source leaves the others' split alone
    assert pp.split_by_scene(only_a, 0.25, seed=0)[1] == [f for f in ev if f.startswith("a/")]
    with pytest.raises(DataError, match=r"dataset.eval_share=0.01 leaves the photo pool's eval split empty"):
        pp.split_by_scene(photos, 0.01, seed=0)


def test_dataset_crops_split_record_and_bad_values(tmp_path: Path, fakes: FakeDownloader) -> None:
    assert "photo_pool" in DATASETS.names()
    cfg = {"name": "photo_pool", "root": str(tmp_path), "num_fit": 10, "num_eval": 4, "eval_share": 0.4}
    fit = build_dataset(cfg, split="fit", image_size=24)
    ev = build_dataset(cfg, split="eval", image_size=24)
    assert fit.images.shape == (10, 3, 24, 24) and ev.images.shape == (4, 3, 24, 24)
    assert fit.images.dtype == torch.uint8 and set(fit.labels.tolist()) == {-1} and fit.label_space is None
    assert not set(fit.split_record["photos"]) & set(ev.split_record["photos"])
    assert {"fake-doc/p0.png", "fake-doc/p1.png"} <= set(fit.split_record["photos"]) or \
        {"fake-doc/p0.png", "fake-doc/p1.png"} <= set(ev.split_record["photos"])
    assert fit.split_record["sources"] == {"fake-doc": "1.2-3", "fakewheel": "1.0"}
    assert torch.equal(fit.images, build_dataset(cfg, split="fit", image_size=24).images)  # seeded
    assert fit.describe() == {"name": "photo_pool", "split": "fit", "size": 10, "label_space": None}
    for key, bad, valid in (("min_scale", 0, r"\(0, 1\]"), ("min_scale", 1.5, r"\(0, 1\]"),
                            ("eval_share", 1, r"\(0, 1\)"), ("eval_share", -0.1, r"\(0, 1\)")):
        with pytest.raises(DataError, match=rf"dataset.{key}={float(bad)} must be in {valid}"):
            build_dataset({**cfg, key: bad}, split="fit", image_size=24)
    with pytest.raises(DataError, match="dataset.allow_missing=yes is not valid. Valid choices: true, false"):
        build_dataset({**cfg, "allow_missing": "yes"}, split="fit", image_size=24)
    with pytest.raises(ValueError, match="kind=rpm is not valid. Valid choices: deb, wheel"):
        sources.PhotoSource("x", "rpm", "x", "x", ())


def test_read_deb_handles_the_debian_layout(tmp_path: Path) -> None:
    deb = write_deb(tmp_path / "x_1_all.deb", {"usr/a.png": b"A", "usr/b.png": b"BB"}, "2:1.0-1")
    assert package_files.read_deb(deb, {"usr/b.png", "usr/missing.png"}) == ({"usr/b.png": b"BB"}, "2:1.0-1")
    (tmp_path / "junk.deb").write_bytes(b"not an archive")
    with pytest.raises(DataError, match="junk.deb is not a Debian package"):
        package_files.read_deb(tmp_path / "junk.deb", set())
    assert package_files.debian_licence(COPYRIGHT) == "MIT or WTFPL"


def test_real_pins_are_well_formed_and_match_installed_packages() -> None:
    names = [s.name for s in pp.SOURCES]
    assert len(set(names)) == len(names) and {s.kind for s in pp.SOURCES} <= set(sources.KINDS)
    for source in pp.SOURCES:
        files = [p.file for p in source.photos]
        assert len(set(files)) == len(files)
        assert all(re.fullmatch(r"[0-9a-f]{64}", p.sha256) for p in source.photos)
        assert source.kind == "deb" or source.version, source.name
        excluded = " ".join(sources.EXCLUDED.get(source.name, {}).values()).split()
        assert not set(files) & set(excluded), source.name
    assert sum(len(s.photos) for s in pp.SOURCES) == 49
    for name in ("scikit-image", "matplotlib"):  # project dependencies: at the pinned release, read from the install
        source = next(s for s in pp.SOURCES if s.name == name)
        if metadata.version(source.package) != source.version:
            continue  # another release may differ: the build then fetches the pinned wheel
        fetched = pp.from_installed(source)
        assert fetched is not None and set(fetched.files) == {p.file for p in source.photos}
