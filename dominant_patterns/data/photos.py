"""Image arrays behind the embedded datasets: scikit-image photographs, random crops of them, IDX files
(Fashion-MNIST) and batched uint8 resizing."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def read_idx_gz(path: Path) -> np.ndarray:
    """Decode one gzipped IDX file (MNIST format): magic, dims, then uint8 data."""
    import gzip

    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def resize_uint8(images: torch.Tensor, size: int, chunk: int = 256) -> torch.Tensor:
    """Resize a uint8 batch [N, 3, H, W] to ``size`` (bilinear, antialiased), chunked."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = [F.interpolate(images[i:i + chunk].float(), size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
           for i in range(0, images.shape[0], chunk)]
    return torch.cat(out)


# Embedded photographs from scikit-image, split by source photo (never by crop).
FIT_PHOTOS = ("astronaut", "coffee", "rocket", "hubble_deep_field", "camera", "grass", "brick", "coins",
              "moon", "page")
EVAL_PHOTOS = ("chelsea", "stereo_motorcycle", "immunohistochemistry", "retina", "gravel", "text", "clock")


def load_photo(name: str) -> np.ndarray:
    """One scikit-image photograph as uint8 RGB [H, W, 3]."""
    import skimage.data

    img = getattr(skimage.data, name)()
    if isinstance(img, tuple):  # stereo pairs: keep the left view
        img = img[0]
    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = (img.astype(np.float64) / max(img.max(), 1) * 255).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3])


def random_crops(photos: Sequence[np.ndarray], count: int, size: int, seed: int,
                 min_scale: float = 0.08) -> torch.Tensor:
    """``count`` random square crops (area min_scale..1 of the short side's square, random flips) at ``size``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = np.empty((count, size, size, 3), dtype=np.uint8)
    for i in range(count):
        img = photos[i % len(photos)]
        h, w = img.shape[:2]
        side = int(min(h, w) * math.sqrt(rng.uniform(min_scale, 1.0)))
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = Image.fromarray(img[top:top + side, left:left + side]).resize((size, size), Image.BILINEAR,
                                                                             reducing_gap=2.0)
        out[i] = np.asarray(crop)[:, ::-1] if rng.random() < 0.5 else np.asarray(crop)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
