"""Atomic file writes: a unique temp file beside the target, fsync, rename; nothing is left behind on failure."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a unique temp file in the same folder and rename, so readers never see half a file."""
    atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write(path: Path, write: Callable[[Any], Any]) -> None:
    """``write(binary file)`` into a unique temp file beside ``path``, fsync, rename; nothing is left on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
