"""A pattern as a file: saving ours, reading ours or anyone's, and checking every pattern where it enters.

Every pattern that enters a run (a fit's result, ``evaluate``, ``transfer``, ``layers``) passes
:func:`check_pattern`: finite, shape ``[3, H, W]``, and ``||delta||_inf`` within the budget it declares
(up to float rounding). Anything else is refused with one line naming the file and the problem.

Files read by :func:`read_pattern_file`:

* ``.pt``: ours (``{"delta": tensor, **identity}``, loaded with ``weights_only=True``) or a bare tensor;
* ``.npy`` / ``.npz`` (one array, or the key ``delta``/``uap``/``perturbation``), e.g. TRM-UAP's released
  perturbations, in CHW, NCHW (N = 1) or HWC order;
* a picture (``.png``, ``.jpg``, ...).

A file that is not ours declares how its values are scaled (:data:`SCALES`, ``pattern_scale``); a range
the declaration cannot produce is refused. Its size is fitted to the model by one stated rule
(:data:`FIT_RULES`, ``pattern_fit``).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dominant_patterns.core.atomic import atomic_write
from dominant_patterns.core.errors import UserInputError

log = logging.getLogger(__name__)

#: Relative slack on ``|delta| <= xi`` for float rounding (fp32 clamps, bilinear resizes, 8-bit pictures).
XI_TOLERANCE = 1e-4
#: How a file's values map to delta in [0, 1] pixel units; ``auto`` means "ours" (``.pt`` of this framework).
SCALES: dict[str, str] = {
    "auto": "this framework's pattern.pt (delta in [0, 1] pixel units, its budget stored with it)",
    "unit": "delta in [0, 1] pixel units (|values| <= 1; e.g. TRM-UAP's .npy files)",
    "255": "delta in 0-255 pixel units (|values| <= 255)",
    "pm1": "delta in a [-1, 1] input space (|values| <= 2; delta = values / 2)",
    "normalized": "delta in the model's normalized input space (delta = values x std per channel)",
    "picture": "a picture showing [-xi, xi] as [0, 255] (our pattern.png; needs pattern_xi)",
}
#: How a pattern of another size is fitted to the model's input size S.
FIT_RULES: dict[str, str] = {
    "resize": "bilinear resize to S x S (|delta| stays within its budget)",
    "crop": "center crop to S x S (only patterns at least S on each side)",
    "tile": "repeat the pattern over S x S from the top-left corner (smaller patterns, e.g. TSC-UAP tiles)",
    "exact": "refuse any other size",
}
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm")
ARRAY_KEYS = ("delta", "uap", "perturbation", "arr_0")


class PatternError(UserInputError):
    """A pattern file or tensor that cannot be used as a pattern."""


# ---------------------------------------------------------------------------------------------
# Saving and loading ours


def save_pattern(path: Path, delta: torch.Tensor, meta: Mapping[str, Any]) -> None:
    """Save ``{"delta": tensor, **meta}`` atomically (``core.atomic``); loadable with ``torch.load(weights_only=True)``.
    A failed write leaves no temp file behind."""
    atomic_write(Path(path), lambda f: torch.save({"delta": delta.detach().float().cpu(), **meta}, f))


def _short_reason(exc: BaseException) -> str:
    """A one-line reason for a failed ``torch.load``, without PyTorch's advice to unpickle anything."""
    text = str(exc)
    if "weights_only" in text:
        return "it needs arbitrary unpickling, which torch.load(weights_only=True) refuses (tensors and plain values)"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first[:160]}" if first else type(exc).__name__


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling fails in many types
        raise PatternError(f"pattern={path} is not a readable pattern file ({_short_reason(exc)})") from None


def load_pattern(path: str | Path) -> dict[str, Any]:
    """Our ``pattern.pt`` as ``{"delta": tensor, **meta}``, read safely (no arbitrary unpickling)."""
    path = _existing(path)
    obj = _torch_load(path)
    if isinstance(obj, torch.Tensor):
        return {"delta": obj}
    if not isinstance(obj, dict) or "delta" not in obj:
        raise PatternError(f"pattern={path} holds no 'delta' tensor")
    if not isinstance(obj["delta"], torch.Tensor):
        raise PatternError(f"pattern={path} holds 'delta' as a {type(obj['delta']).__name__}, not a tensor")
    return obj


def _existing(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "pattern.pt"
    if not path.is_file():
        raise PatternError(f"pattern={path} does not exist")
    return path


# ---------------------------------------------------------------------------------------------
# Checks


def _declared_xi(value: Any, path: Path | str) -> float | None:
    """A budget a file or config declares: a number in (0, 1], or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PatternError(f"pattern={path}: its budget xi={value!r} is not a number")
    if not 0 < value <= 1:
        raise PatternError(f"pattern={path}: its budget xi={value!r} is out of range (0, 1] in [0, 1] pixel units")
    return float(value)


def _where(source: Path | str) -> str:
    """How a message names a pattern: ``pattern=PATH`` for a file, else the description given."""
    return f"pattern={source}" if isinstance(source, Path) else str(source)


def check_pattern(delta: Any, *, source: Path | str, xi: float | None = None, size: int | None = None
                  ) -> torch.Tensor:
    """``delta`` as a float tensor ``[3, H, W]`` (on its device) when it is finite, has 3 channels and
    ``|delta| <= xi`` (up to :data:`XI_TOLERANCE`); ``size``: also require ``H = W = size``. Else
    :class:`PatternError` naming ``source`` (a file, or a description such as "the uap fit's pattern")."""
    where = _where(source)
    if not isinstance(delta, torch.Tensor):
        raise PatternError(f"{where}: a {type(delta).__name__}, not a tensor")
    if delta.dim() == 4 and delta.shape[0] == 1:
        delta = delta[0]
    if delta.dim() != 3:
        raise PatternError(f"{where}: shape {tuple(delta.shape)} is {delta.dim()}-D; a pattern is [3, H, W]")
    if delta.shape[0] != 3:
        raise PatternError(f"{where}: {delta.shape[0]} channel(s) (shape {tuple(delta.shape)}); "
                           "a pattern has 3 (RGB), channels first")
    if not (delta.is_floating_point() or delta.dtype in (torch.uint8, torch.int16, torch.int32, torch.int64)):
        raise PatternError(f"{where}: dtype {delta.dtype} is not numeric")
    delta = delta.detach().float()
    bad = int((~torch.isfinite(delta)).sum())
    if bad:
        raise PatternError(f"{where}: {bad} of {delta.numel()} values are NaN or infinite")
    if size is not None and tuple(delta.shape[1:]) != (size, size):
        raise PatternError(f"{where}: size {tuple(delta.shape[1:])} is not the model's {size}x{size}")
    if xi is not None:
        linf = float(delta.abs().max())
        if linf > xi * (1 + XI_TOLERANCE) + 1e-7:
            raise PatternError(f"{where}: l_inf = {linf * 255:.3f}/255 exceeds its budget xi = {xi * 255:.3f}/255")
    return delta


# ---------------------------------------------------------------------------------------------
# Reading any pattern file


@dataclass
class PatternFile:
    """A pattern read from a file: delta in [0, 1] pixel units, its budget, its metadata and where it came from."""

    delta: torch.Tensor
    xi: float
    meta: dict[str, Any]
    source: dict[str, Any]


def _array_from_npz(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = list(data.keys())
            key = next((k for k in ARRAY_KEYS if k in keys), keys[0] if len(keys) == 1 else None)
            if key is None:
                raise PatternError(f"pattern={path} holds the arrays {keys}; name one of them "
                                   f"{', '.join(ARRAY_KEYS)} (or save a single array)")
            return np.asarray(data[key])
    except (OSError, ValueError) as exc:
        raise PatternError(f"pattern={path} is not a readable .npz file ({exc})") from None


def _read_array(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _array_from_npz(path)
    if suffix == ".npy":
        try:
            return np.asarray(np.load(path, allow_pickle=False))
        except (OSError, ValueError) as exc:
            raise PatternError(f"pattern={path} is not a readable .npy file ({exc})") from None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise PatternError(f"pattern={path} is not a readable picture ({exc})") from None


def _channels_first(array: np.ndarray, path: Path) -> torch.Tensor:
    """CHW from CHW, NCHW/NHWC (N = 1) or HWC; other ranks are left for :func:`check_pattern` to refuse."""
    if array.dtype.kind not in "fiu":
        raise PatternError(f"pattern={path}: dtype {array.dtype} is not numeric")
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 3 and array.shape[0] not in (1, 3) and array.shape[-1] in (1, 3):
        array = np.moveaxis(array, -1, 0)
    return torch.from_numpy(np.ascontiguousarray(array).astype(np.float32))


def _range_error(path: Path, scale: str, linf: float, limit: float, hint: str) -> PatternError:
    return PatternError(f"pattern={path}: values up to |{linf:g}| contradict pattern_scale={scale} "
                        f"({SCALES[scale]}, so at most {limit:g}){hint}")


def to_pixel_units(values: torch.Tensor, scale: str, *, path: Path, std: Sequence[float],
                   xi: float | None) -> torch.Tensor:
    """Values of a file declared as ``scale`` turned into delta in [0, 1] pixel units (range checked)."""
    linf = float(values.abs().max()) if values.numel() else 0.0
    if scale == "unit":
        if linf > 1:
            raise _range_error(path, scale, linf, 1, "; pattern_scale=255 reads 0-255 units")
        return values
    if scale == "255":
        if 0 < linf <= 1:
            raise PatternError(f"pattern={path}: values within +-{linf:g} contradict pattern_scale=255 (that would be "
                               f"a budget under 1/255); pattern_scale=unit reads [0, 1] pixel units")
        if linf > 255:
            raise _range_error(path, scale, linf, 255, "")
        return values / 255.0
    if scale == "pm1":
        if linf > 2:
            raise _range_error(path, scale, linf, 2, "; pattern_scale=255 reads 0-255 units")
        return values / 2.0
    if scale == "normalized":
        limit = 1.0 / min(std)
        if linf > limit:
            raise _range_error(path, scale, linf, limit, "")
        return values * torch.tensor(list(std), dtype=values.dtype).view(-1, 1, 1)[: values.shape[0]]
    if scale == "picture":
        if xi is None:
            raise PatternError(f"pattern={path}: pattern_scale=picture needs pattern_xi (the budget the picture "
                               "shows as 0..255), e.g. pattern_xi=0.0392")
        if values.min() < 0 or linf > 255:
            raise _range_error(path, scale, linf, 255, " (a picture holds 0..255)")
        return (values / 255.0 * 2 - 1) * xi
    raise PatternError(f"pattern_scale={scale} is not valid. Valid choices: {', '.join(SCALES)}")


def fit_to_size(delta: torch.Tensor, size: int, rule: str, *, source: Path | str) -> torch.Tensor:
    """``delta`` [3, H, W] fitted to ``size`` x ``size`` by ``rule`` (:data:`FIT_RULES`)."""
    h, w = delta.shape[-2:]
    if (h, w) == (size, size):
        return delta
    if rule == "exact":
        raise PatternError(f"pattern={source}: size {h}x{w} is not the model's {size}x{size} (pattern_fit=exact); "
                           f"other rules: {', '.join(r for r in FIT_RULES if r != 'exact')}")
    if rule == "resize":
        return F.interpolate(delta[None], size=(size, size), mode="bilinear", align_corners=False)[0]
    if rule == "crop":
        if h < size or w < size:
            raise PatternError(f"pattern={source}: size {h}x{w} is smaller than the model's {size}x{size}; "
                               "pattern_fit=crop needs a larger pattern (pattern_fit=resize or tile instead)")
        top, left = (h - size) // 2, (w - size) // 2
        return delta[:, top:top + size, left:left + size].contiguous()
    if rule == "tile":
        reps = (1, math.ceil(size / h), math.ceil(size / w))
        return delta.repeat(*reps)[:, :size, :size].contiguous()
    raise PatternError(f"pattern_fit={rule} is not valid. Valid choices: {', '.join(FIT_RULES)}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_pattern_file(path: str | Path, *, size: int, std: Sequence[float], scale: str = "auto",
                      xi: float | None = None, fit: str = "resize") -> PatternFile:
    """Read any pattern file (:data:`SCALES`), check it and fit it to ``size`` (:data:`FIT_RULES`).

    The budget is ``xi`` when given, else the one the file stores (ours), else the pattern's measured l_inf;
    the pattern must lie within it. ``source`` records the file, its format, scale, checksum, shape and rule.
    """
    path = _existing(path)
    if scale not in SCALES:
        raise PatternError(f"pattern_scale={scale} is not valid. Valid choices: {', '.join(SCALES)}")
    if fit not in FIT_RULES:
        raise PatternError(f"pattern_fit={fit} is not valid. Valid choices: {', '.join(FIT_RULES)}")
    declared = _declared_xi(xi, path)
    suffix = path.suffix.lower()
    if suffix == ".pt":
        if scale not in ("auto", "unit"):
            raise PatternError(f"pattern={path}: a .pt pattern holds delta in [0, 1] pixel units; "
                               f"pattern_scale={scale} applies to .npy/.npz files and pictures")
        meta = load_pattern(path)
        raw = meta.pop("delta")
        declared = declared if declared is not None else _declared_xi(meta.get("xi"), path)
        delta = check_pattern(raw, source=path)
        fmt = "pt"
    elif suffix in (".npy", ".npz", *PICTURE_SUFFIXES):
        if scale == "auto":
            raise PatternError(f"pattern={path}: say how its values are scaled with pattern_scale=NAME; valid choices: "
                               + "; ".join(f"{k} ({v})" for k, v in SCALES.items() if k != "auto"))
        meta = {}
        values = check_pattern(_channels_first(_read_array(path), path), source=path)
        delta = to_pixel_units(values, scale, path=path, std=std, xi=declared)
        fmt = suffix.lstrip(".")
    else:
        raise PatternError(f"pattern={path}: unknown file type '{suffix}'; valid: .pt, .npy, .npz, "
                           + ", ".join(PICTURE_SUFFIXES))
    original = tuple(delta.shape)
    delta = fit_to_size(delta, size, fit, source=path)
    linf = float(delta.abs().max())
    budget = declared if declared is not None else linf
    delta = check_pattern(delta, source=path, xi=budget, size=size)
    if linf == 0:
        log.warning("pattern %s is all zeros", path)
    source = {"path": str(path), "format": fmt, "scale": scale, "sha256": sha256_file(path), "shape": list(original),
              "fit": fit if original[1:] != (size, size) else "none", "linf_255": linf * 255,
              "xi_declared": declared}
    return PatternFile(delta, budget, meta, source)
