"""The artificial inputs of the data-free attacks TRM-UAP and PSP-UAP: Gaussian and jigsaw priors, GD-UAP-style
augmentation and their curricula (functions of the step, so a resumed fit needs no counter of theirs)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

#: the input side the code's prior sizes refer to (short side 256, median disk radius 5)
REFERENCE_SIDE = 224


@dataclass(frozen=True)
class Curriculum:
    """A prior and its curriculum, as functions of the iteration ``step`` (1-based, updated before its draw).

    Attributes:
        prior: ``gauss``, ``jigsaw`` or ``none``.
        double_at: iterations at which the prior batch doubles.
        std0, t0, gamma, std_max: gauss std ``min(std_max, std0 + gamma * (step // t0))``.
        fre0, fre_steps: jigsaw cut points per axis, ``fre0`` plus one at every multiple of ``every`` in
            ``[first, last]`` (``last`` None: no end) for each ``(first, last, every)``.
        extra_rows: cut points added along the rows (2: the GoogLeNet (f + 2) x f grid).
    """

    prior: str
    double_at: tuple[int, ...] = ()
    std0: float = 10.0
    t0: int = 400
    gamma: float = 10.0
    std_max: float = 127.0
    fre0: int = 1
    fre_steps: tuple[tuple[int, int | None, int], ...] = ()
    extra_rows: int = 0

    def batch(self, step: int, base: int) -> int:
        return base * 2 ** sum(step >= k for k in self.double_at)

    def std(self, step: int) -> float:
        return min(self.std_max, self.std0 + self.gamma * (step // self.t0))

    def fre(self, step: int) -> int:
        count = self.fre0
        for first, last, every in self.fre_steps:
            end = step if last is None else min(step, last)
            if end >= first:
                count += end // every - (first - 1) // every
        return count


#: The code's curricula (``strategy.py`` at RandolphCarter0/TRMUAP ab1d2f6), by the name ``prior`` takes.
TRM_CURRICULA: dict[str, Curriculum] = {
    "gauss": Curriculum("gauss", double_at=(1600, 2400, 3200)),
    "jigsaw": Curriculum("jigsaw", double_at=(1600, 3200), fre_steps=((1, 4199, 600),)),
    "jigsaw_resnet152": Curriculum("jigsaw", double_at=(1600, 3200), fre_steps=((1, 999, 200), (1000, None, 400))),
    "jigsaw_googlenet": Curriculum("jigsaw", double_at=(1600, 2400, 3200),
                                   fre_steps=((1, 1200, 400), (1201, None, 600)), extra_rows=2),
    "none": Curriculum("none"),
}


def uniform(generator: torch.Generator, low: float = 0.0, high: float = 1.0) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def choice(generator: torch.Generator, options: Sequence[Any]) -> Any:
    return options[int(torch.randint(len(options), (), generator=generator))]


def _resize(img: torch.Tensor, size: tuple[int, int], antialias: bool) -> torch.Tensor:
    return F.interpolate(img[None], size=size, mode="bilinear", align_corners=False, antialias=antialias)[0]


def _rotate_inscribed(img: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate (nearest neighbour) and keep the axis-aligned rectangle inside the rotated image, as uint8 values."""
    _, h, w = img.shape
    a = math.radians(degrees)
    cos, sin = abs(math.cos(a)), abs(math.sin(a))
    w_in = int((w * cos - h * sin) / math.cos(2 * a))
    h_in = int((h * cos - w * sin) / math.cos(2 * a))
    ys = torch.arange(h_in, device=img.device, dtype=torch.float32) - (h_in - 1) / 2
    xs = torch.arange(w_in, device=img.device, dtype=torch.float32) - (w_in - 1) / 2
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    sx = (math.cos(a) * x + math.sin(a) * y + (w - 1) / 2).round().long().clamp(0, w - 1)
    sy = (-math.sin(a) * x + math.cos(a) * y + (h - 1) / 2).round().long().clamp(0, h - 1)
    return img[:, sy, sx].floor()


def _gaussian_blur(img: torch.Tensor, kernel: int, sigma: float = 1.0) -> torch.Tensor:
    r = kernel // 2
    g = torch.exp(-(torch.arange(kernel, device=img.device, dtype=torch.float32) - r) ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    x = F.pad(img[:, None], (r, r, r, r), mode="reflect")
    x = F.conv2d(x, g.view(1, 1, 1, -1))
    return F.conv2d(x, g.view(1, 1, -1, 1))[:, 0]


def _random_crop(img: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """A random ``size`` crop; a side shorter than ``size`` is padded with 127 (bottom/right)."""
    _, h, w = img.shape
    top = int(uniform(generator) * (h - size)) if h > size else 0
    left = int(uniform(generator) * (w - size)) if w > size else 0
    img = img[:, top:top + size, left:left + size]
    if img.shape[1:] == (size, size):
        return img
    out = img.new_full((3, size, size), 127.0)
    out[:, :img.shape[1], :img.shape[2]] = img
    return out


def gd_uap_augment(img: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """GD-UAP's ``randomizer``: scale 0.75-1.5, flip, rotation by +-3..10 degrees, blur, random crop (each p 0.5)."""
    flip, scale_on, blur_on = (uniform(generator) > 0.5 for _ in range(3))
    kernel = choice(generator, (3, 5, 7, 9))
    rotate_on = uniform(generator) > 0.5
    degrees = choice(generator, (-10, -7, -5, -3, 3, 5, 7, 10))
    scale = uniform(generator, 0.75, 1.5) if scale_on else 1.0
    _, h, w = img.shape
    ratio = size * scale / min(h, w)
    img = _resize(img, (int(h * ratio), int(w * ratio)), antialias=False)
    if flip:
        img = img.flip(-1)
    if rotate_on:
        img = _rotate_inscribed(img, degrees)
    if blur_on:
        img = _gaussian_blur(img, kernel)
    return _random_crop(img, size, generator)


def gauss_prior(size: int, std: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """One ``gauss`` prior image [3, size, size] in [0, 1] pixels (the code's raw z is this minus 0.5)."""
    sd = torch.tensor([std + 20.0, std + 10.0, std]).view(3, 1, 1)  # RGB after the code's BGR swap
    img = (127.5 + sd * torch.randn((3, size, size), generator=generator)).clamp(0, 255).to(device)
    img = gd_uap_augment(img, size, generator)
    short = size * 256 / REFERENCE_SIDE
    _, h, w = img.shape
    new_h, new_w = int(h * short / min(h, w)), int(w * short / min(h, w))
    img = _resize(img, (new_h, new_w), antialias=True)
    top, left = int(new_h / 2 - size // 2), int(new_w / 2 - size // 2)
    return img[:, top:top + size, left:left + size] / 255


def disk_median(img: torch.Tensor, radius: int) -> torch.Tensor:
    """Median filter of each channel of ``img`` [C, H, W] over a disk (edges replicated, like skimage's)."""
    k = 2 * radius + 1
    yy, xx = torch.meshgrid(torch.arange(k) - radius, torch.arange(k) - radius, indexing="ij")
    inside = (yy ** 2 + xx ** 2 <= radius ** 2).flatten().nonzero()[:, 0].to(img.device)
    c, h, w = img.shape
    patches = F.unfold(F.pad(img[None], (radius,) * 4, mode="replicate"), k).view(c, k * k, h * w)
    return patches.index_select(1, inside).median(dim=1).values.view(c, h, w)


def jigsaw_prior(size: int, row_cuts: int, col_cuts: int, generator: torch.Generator,
                 device: torch.device) -> torch.Tensor:
    """One ``jigsaw`` prior image [3, size, size] in [0, 1]: random cells of random colours, disk-median filtered."""
    rows = torch.sort(torch.cat([torch.zeros(1, dtype=torch.long),
                                 torch.randint(0, size + 1, (row_cuts,), generator=generator)])).values
    cols = torch.sort(torch.cat([torch.zeros(1, dtype=torch.long),
                                 torch.randint(0, size + 1, (col_cuts,), generator=generator)])).values
    colours = torch.randint(0, 256, (row_cuts + 1, col_cuts + 1, 3), generator=generator).float()
    pixels = torch.arange(size)
    ri = torch.searchsorted(rows, pixels, right=True) - 1
    ci = torch.searchsorted(cols, pixels, right=True) - 1
    img = colours[ri[:, None], ci[None, :]].permute(2, 0, 1).to(device)
    radius = max(1, round(5 * size / REFERENCE_SIDE))
    return disk_median(img, radius) / 255
