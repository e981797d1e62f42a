"""The checkpoint file: one header line ``DPCKPT1 <sha256 of the rest>`` followed by a ``torch.save`` zip, written
atomically (the previous file kept), verified before it is loaded (``weights_only=True``)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

MAGIC = b"DPCKPT1 "


FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupted or not ours."""


def write_checkpoint(path: Path, payload: Mapping[str, Any], previous: Path | None = None) -> None:
    """Write ``payload`` atomically (temp file, fsync, rename), keeping the old file as ``previous``."""
    buf = io.BytesIO()
    torch.save(dict(payload), buf)
    data = buf.getvalue()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(MAGIC + hashlib.sha256(data).hexdigest().encode() + b"\n")
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # make the renames durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Verify and load a checkpoint; :class:`CheckpointError` names what is wrong."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path} cannot be read ({exc})") from exc
    header, sep, data = raw.partition(b"\n")
    if not header.startswith(MAGIC) or not sep:
        raise CheckpointError(f"{path} is not a dominant-patterns checkpoint (bad header; truncated or foreign file)")
    if hashlib.sha256(data).hexdigest().encode() != header[len(MAGIC):]:
        raise CheckpointError(f"{path} is truncated or corrupted (checksum mismatch, {len(raw)} bytes)")
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors come in many types
        raise CheckpointError(f"{path} was refused by torch.load(weights_only=True) ({exc}); a checkpoint must "
                              "hold only tensors and plain values, nothing that needs arbitrary unpickling") from exc
    missing = {"format", "fingerprint", "epoch", "batch", "step", "state", "rng"} - set(payload)
    if not isinstance(payload, dict) or missing or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} has an unknown layout (missing {sorted(missing)})")
    return payload
