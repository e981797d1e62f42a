"""Reading files out of a Debian package (``.deb``: an ar archive of tarballs) or a wheel without installing it,
and the licence each states."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import zipfile
from collections.abc import Iterator
from email.message import Message
from email.parser import HeaderParser
from pathlib import Path
from typing import IO, Any

from dominant_patterns.core.errors import DataError


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
