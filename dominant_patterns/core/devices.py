"""Device, precision and memory-format helpers shared by the loops, the evaluation and the caches.

Devices of a sweep: ``trainer.device=auto`` (or ``cuda``) puts job ``n`` of a multirun on
``cuda:(n mod G)`` of the G visible GPUs, or, when another job of this machine holds that GPU, on
the next free one (:func:`claim_device`; a lock file per GPU). ``cuda:K`` pins a job to GPU K.
Nothing here touches CUDA at import or before a job asks for its device, so a launcher's parent
process stays CUDA-free (Hydra #1331, #2602: jobs sharing GPU 0 and its context).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch

from dominant_patterns.core.errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows: no GPU claims, jobs go to job number mod G
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

#: ``trainer.precision`` names and the autocast dtype each one runs under (fp32: no autocast).
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
#: Device names that let a multirun job choose its GPU (``cuda:K`` pins one).
SPREAD = ("auto", "cuda")
#: Folder of the per-GPU lock files (default: a per-user folder under the system temp dir).
LOCK_DIR_ENV = "DP_GPU_LOCK_DIR"


def _gpu_count_or_fail(name: str) -> int:
    if not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name} but no CUDA device is available. Valid choices here: auto, cpu")
    return torch.cuda.device_count()


def resolve_device(name: str, job_num: int | None = None) -> torch.device:
    """The device ``trainer.device`` names, with an explicit index for CUDA (``cuda:0``, never ``cuda``).

    ``auto``: CUDA when present, else CPU. ``auto`` and ``cuda`` in job ``job_num`` of a multirun:
    ``cuda:(job_num mod G)`` over the G visible GPUs (``cuda:0`` outside a multirun, ``job_num=None``).
    ``cuda:K``: GPU K (refused when there is no such GPU). ``cpu`` and ``mps`` as named.
    """
    if name == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    if name in SPREAD:
        return torch.device("cuda", (job_num or 0) % max(_gpu_count_or_fail(name), 1))
    count = _gpu_count_or_fail(name) if name.startswith("cuda") else 0
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"trainer.device={name} is not a device. "
                          "Valid choices: auto, cpu, cuda, cuda:N, mps") from exc
    if device.type == "cuda" and device.index is not None and device.index >= count:
        raise ConfigError(f"trainer.device={name} but this machine has {count} CUDA device(s). "
                          f"Valid choices here: auto, cpu, cuda, cuda:0 ... cuda:{count - 1}")
    return device


def visible_gpu_count() -> int:
    """The GPUs this process may use, counted without touching CUDA (safe in a launcher's parent):
    the ``CUDA_VISIBLE_DEVICES`` entries when it is set, else the NVIDIA driver's ``/proc`` entries."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        count = 0
        for entry in visible.split(","):  # CUDA uses the entries up to the first invalid one
            if not entry.strip() or entry.strip().startswith("-"):
                break
            count += 1
        return count
    proc = Path("/proc/driver/nvidia/gpus")
    return sum(1 for _ in proc.iterdir()) if proc.is_dir() else 0


def _lock_dir() -> Path:
    default = Path(tempfile.gettempdir()) / f"dominant_patterns_gpus_{os.getuid() if hasattr(os, 'getuid') else 0}"
    return Path(os.environ.get(LOCK_DIR_ENV) or default)


def _gpu_id(index: int) -> str:
    """The machine-wide id of visible GPU ``index`` (its ``CUDA_VISIBLE_DEVICES`` entry when that is set)."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    raw = visible[index] if index < len(visible) else str(index)
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in raw)


def _try_lock(index: int) -> IO[str] | None:
    """The open, exclusively locked lock file of GPU ``index``, or None when another process holds it."""
    folder = _lock_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / f"gpu-{_gpu_id(index)}.lock", "a+")  # noqa: SIM115 - held for the job's life
    except OSError as exc:
        log.warning("cannot use the GPU lock folder %s (%s); jobs go to job number mod GPU count", folder, exc)
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


@contextlib.contextmanager
def claim_device(name: str, job_num: int | None = None) -> Iterator[torch.device]:
    """:func:`resolve_device`, holding the chosen GPU for the ``with`` block when a multirun spreads its jobs.

    For ``auto``/``cuda`` in job ``job_num`` of a multirun on G > 1 GPUs, the job takes the first GPU
    from ``job_num mod G`` on that no other job on this machine holds (an ``flock`` on one file per GPU,
    released at the end of the block or when the process dies), so jobs of uneven length (a reused
    joblib worker picks the next job whenever its last one ends) never pile onto one GPU while another
    idles. With every GPU held (more jobs than GPUs), the job shares ``job_num mod G``.
    """
    device = resolve_device(name, job_num)
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if fcntl is None or job_num is None or name not in SPREAD or count < 2:
        yield device
        return
    held = None
    for step in range(count):
        index = (int(device.index or 0) + step) % count
        held = _try_lock(index)
        if held is not None:
            device = torch.device("cuda", index)
            break
    if held is None:
        log.info("every GPU is held by another job; job %d shares %s", job_num, device)
    try:
        yield device
    finally:
        if held is not None:
            held.close()  # closing the file releases the lock


def start_device(device: torch.device) -> None:
    """Make ``device`` the current CUDA device (pinned-memory threads and bare ``cuda`` tensors go there,
    not to GPU 0) and reset its peak-memory statistics, so each job of a reused worker reports its own peak."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.cuda.reset_peak_memory_stats(device)


def stop_device(device: torch.device) -> None:
    """At a job's end, hand the cached CUDA blocks back (the worker's next job may run on another GPU)."""
    if device.type == "cuda" and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def describe_device(device: torch.device | None) -> dict[str, Any]:
    """Where a job ran, for its record: ``device`` (``cuda:3``, ``cpu``), the GPU's name and the
    ``CUDA_VISIBLE_DEVICES`` it saw (the index is relative to those)."""
    if device is None:
        return {}
    out: dict[str, Any] = {"device": str(device)}
    if device.type == "cuda":
        out["gpu_name"] = torch.cuda.get_device_name(device)
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible:
            out["cuda_visible_devices"] = visible
    return out


def peak_memory_gib(device: torch.device) -> float | None:
    """The peak CUDA memory allocated on ``device`` since :func:`start_device` (None off CUDA)."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """Autocast for bf16/fp16; a no-op for fp32."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x
