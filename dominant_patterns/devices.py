"""Device, precision and memory-format helpers shared by the loops, the evaluation and the caches."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from dominant_patterns.errors import ConfigError

#: ``trainer.precision`` names and the autocast dtype each one runs under (fp32: no autocast).
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name} but no CUDA device is available. Valid choices here: auto, cpu")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"trainer.device={name} is not a device. "
                          "Valid choices: auto, cpu, cuda, cuda:N, mps") from exc


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """Autocast for bf16/fp16; a no-op for fp32."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x
