"""Helpers shared by the baseline attacks: batch streams, validation fooling, iteration caps.

Kept private (not an attack): each baseline module still holds its whole objective.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from tqdm.auto import tqdm

from dominant_patterns.data import iterate_images
from dominant_patterns.errors import ConfigError
from dominant_patterns.metrics import fooling_rate
from dominant_patterns.models import ClassifierWrapper
from dominant_patterns.trainer import autocast, to_memory_format

log = logging.getLogger(__name__)


def capped(iterations: int, max_iterations: int | None, key: str = "iterations") -> int:
    """The iteration count actually run: the published ``iterations``, capped by ``max_iterations``."""
    if int(iterations) < 1:
        raise ConfigError(f"attack.{key}={iterations} must be an integer >= 1")
    if max_iterations is None:
        return int(iterations)
    if int(max_iterations) < 1:
        raise ConfigError(f"attack.max_iterations={max_iterations} must be >= 1 (or null for no cap)")
    return min(int(iterations), int(max_iterations))


def stream(loader: Iterable[Any], device: torch.device, batch_size: int | None = None) -> Iterator[torch.Tensor]:
    """Endless float [0, 1] batches from ``loader`` (re-batched to ``batch_size`` when given)."""
    buffer: list[torch.Tensor] = []
    held = 0
    while True:
        empty = True
        for x, _ in iterate_images(loader, device):
            empty = False
            if batch_size is None:
                yield x
                continue
            buffer.append(x)
            held += x.shape[0]
            while held >= batch_size:
                joined = torch.cat(buffer)
                yield joined[:batch_size]
                rest = joined[batch_size:]
                buffer, held = ([rest] if rest.shape[0] else []), rest.shape[0]
        if empty:
            raise ConfigError("the fit loader yielded no images")


def take_images(loader: Iterable[Any], device: torch.device, count: int) -> torch.Tensor:
    """The first ``count`` images of ``loader`` (fewer if it holds fewer), float [0, 1]."""
    parts, held = [], 0
    for x, _ in iterate_images(loader, device):
        parts.append(x[: count - held])
        held += parts[-1].shape[0]
        if held >= count:
            break
    if not parts:
        raise ConfigError("the fit loader yielded no images")
    return torch.cat(parts)


@torch.no_grad()
def predict(model: ClassifierWrapper, x: torch.Tensor, *, batch_size: int = 128, channels_last: bool = True,
            precision: str = "fp32") -> torch.Tensor:
    """Top-1 predictions for images in [0, 1], in chunks."""
    out = []
    for i in range(0, x.shape[0], batch_size):
        with autocast(x.device, precision):
            out.append(model(to_memory_format(x[i:i + batch_size], channels_last)).argmax(1))
    return torch.cat(out)


class Validator:
    """Fooling rate of a pattern on fixed held-out images, with patience-based early stopping.

    The clean predictions are computed once; the rate itself is ``metrics.fooling_rate``.
    """

    def __init__(self, model: ClassifierWrapper, images: torch.Tensor, *, patience: int,
                 channels_last: bool = True, precision: str = "fp32") -> None:
        self.model, self.images, self.patience = model, images, int(patience)
        self.kw = {"channels_last": channels_last, "precision": precision}
        self.clean = predict(model, images, **self.kw)
        self.best_rate, self.best_delta, self.bad_checks = -1.0, None, 0

    def rate(self, delta: torch.Tensor) -> float:
        return fooling_rate(self.clean, predict(self.model, (self.images + delta).clamp(0, 1), **self.kw))

    def check(self, delta: torch.Tensor) -> bool:
        """Score ``delta``; keep it if best so far. True when patience is exhausted (stop)."""
        rate = self.rate(delta)
        if rate > self.best_rate:
            self.best_rate, self.best_delta, self.bad_checks = rate, delta.detach().clone(), 0
        else:
            self.bad_checks += 1
        return self.bad_checks >= self.patience

    def best(self, fallback: torch.Tensor) -> torch.Tensor:
        return fallback.detach() if self.best_delta is None else self.best_delta


def mean_image(model: ClassifierWrapper, batch: int = 1) -> torch.Tensor:
    """The dataset-mean image in [0, 1] pixels ("no data": it normalizes to zero)."""
    s = model.input_size
    return model.mean.float().view(1, 3, 1, 1).expand(batch, 3, s, s).clone()


def log_activation_norms(acts: dict[str, torch.Tensor], names: list[str], kind: str) -> torch.Tensor:
    """Sum over layers of log(||a_l||^2 / 2) (``l2``, GD-UAP) or log mean |a_l| (``abs_mean``, FFF).

    Each norm is taken over the whole batch tensor of a layer, as in the public TF code.
    """
    terms = []
    for name in names:
        a = acts[name].float()
        if kind == "l2":
            terms.append(torch.log(a.pow(2).sum() / 2 + 1e-12))
        elif kind == "abs_mean":
            terms.append(torch.log(a.abs().mean() + 1e-12))
        else:
            raise ValueError(f"unknown activation objective {kind}")
    return torch.stack(terms).sum()


def uniform_init(shape: tuple[int, ...], xi: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """delta ~ U[-xi, xi] (FFF, GD-UAP initialization), drawn on CPU for reproducibility."""
    return ((torch.rand(shape, generator=generator) * 2 - 1) * xi).to(device)


def optimize_iterations(
    delta: torch.Tensor,
    batches: Iterator[torch.Tensor] | None,
    loss_fn: Callable[[torch.Tensor | None, torch.Tensor], torch.Tensor],
    *,
    optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
    iterations: int,
    project: Callable[[torch.Tensor], torch.Tensor],
    precision: str = "fp32",
    after_step: Callable[[int, torch.Tensor], bool] | None = None,
    on_log: Callable[[dict[str, float], int], None] | None = None,
    log_every: int = 20,
    progress: bool = False,
    desc: str = "fit",
    grad_filter: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Minimize ``loss_fn(x, delta)`` for ``iterations`` steps (x from ``batches``, or None when data-free).

    After each step ``delta`` is projected in place; ``after_step(step, delta)`` may edit it in
    place (rescaling) and returns True to stop early. Returns the final delta (detached).
    """
    delta = delta.detach().clone().requires_grad_(True)
    opt = optimizer([delta])
    bar = tqdm(total=iterations, desc=desc, disable=not progress, unit="it", leave=False)
    for step in range(1, iterations + 1):
        x = next(batches) if batches is not None else None
        with autocast(delta.device, precision):
            loss = loss_fn(x, delta)
        if not torch.isfinite(loss):
            log.error("%s: non-finite loss at step %d; keeping the last pattern", desc, step)
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_filter is not None and delta.grad is not None:
            delta.grad.copy_(grad_filter(delta.grad))
        opt.step()
        with torch.no_grad():
            delta.copy_(project(delta))
        bar.update(1)
        if on_log is not None and step % log_every == 0:
            on_log({"train/loss": float(loss.detach())}, step)
        if after_step is not None:
            with torch.no_grad():
                if after_step(step, delta):
                    log.info("%s: early stop at step %d", desc, step)
                    break
    bar.close()
    return delta.detach()
