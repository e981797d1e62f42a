"""What each step of a loop gets: image batches from passes over a loader (re-batched, filtered, capped per
pass), ``(images, labels)`` pairs, synthesized inputs, or nothing (data-free)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch

from dominant_patterns.core.batches import iterate_images
from dominant_patterns.core.errors import ConfigError


class Rebatcher:
    """Re-batches image batches to ``batch_size`` rows (``None``: as they come).

    The rows left over after a batch are carried to the next one, across passes of the loader;
    ``state()``/``load()`` keep them in a checkpoint so a resumed stream continues identically.
    """

    def __init__(self, batch_size: int | None = None) -> None:
        self.batch_size = batch_size
        self.rest: torch.Tensor | None = None

    def __call__(self, images: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        for x in images:
            if self.batch_size is None:
                yield x
                continue
            joined = x if self.rest is None else torch.cat([self.rest, x])
            while joined.shape[0] >= self.batch_size:
                out, joined = joined[: self.batch_size], joined[self.batch_size:]
                self.rest = joined if joined.shape[0] else None
                yield out
            self.rest = joined if joined.shape[0] else None

    def state(self) -> torch.Tensor | None:
        return None if self.rest is None else self.rest.detach().clone()

    def load(self, rest: torch.Tensor | None, device: torch.device) -> None:
        self.rest = None if rest is None else rest.to(device)


class Feed:
    """The inputs of a loop's steps, one pass of the loader (one checkpoint epoch) at a time.

    With a ``loader``: its images on ``device``, with ``keep(x)`` dropping rows (e.g. held-out images),
    only the first ``per_pass`` images of each pass, re-batched to ``batch_size`` rows (the rows left over
    carry to the next pass; ``flush``: the pass's last, smaller batch is used as it is), or ``(x, y)`` pairs
    as they come (``labels``). Without one: ``draw()`` per step (synthesized inputs, their randomness in the
    owner's state or the global RNG), else None (data-free). ``state_dict`` holds the carried rows and the
    images of the pass used so far, saved with the loop.
    """

    def __init__(self, loader: Iterable[Any] | None = None, device: torch.device | None = None, *,
                 batch_size: int | None = None, keep: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 per_pass: int | None = None, flush: bool = False, labels: bool = False,
                 draw: Callable[[], torch.Tensor] | None = None) -> None:
        if labels and (batch_size is not None or keep is not None):
            raise ValueError("a feed of (images, labels) pairs neither re-batches nor drops rows")
        self.loader, self.device = loader, torch.device(device or "cpu")
        self.rebatch, self.keep, self.per_pass = Rebatcher(batch_size), keep, per_pass
        self.flush, self.labels, self.draw = flush, labels, draw
        self.seen = 0  # images of the current pass taken (with per_pass)

    def __call__(self, batches: Iterable[Any], *, fresh: bool, check: bool) -> Iterator[Any]:
        """The items of one pass from its ``batches`` (``fresh``: from its start, not resumed mid-pass);
        ``check``: refuse a loader that yields no image (an endless loop would spin on it)."""
        if self.loader is None:
            return (self.draw() if self.draw is not None else None for _ in batches)
        if fresh:
            self.seen = 0
        pairs = self._pairs(batches, fresh and check)
        return pairs if self.labels else self._batches(x for x, _ in pairs)

    def _batches(self, images: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
        yield from self.rebatch(images)
        if self.flush and self.rebatch.rest is not None:
            x, self.rebatch.rest = self.rebatch.rest, None
            yield x

    def _pairs(self, batches: Iterable[Any], check: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        if self.pass_full():  # resumed after the pass's last image: nothing is left of it
            return
        empty, kept = True, 0
        for x, y in iterate_images(batches, self.device):
            empty = False
            x = self.keep(x) if self.keep is not None else x  # (a feed with labels has no keep)
            kept += x.shape[0]
            if self.per_pass is not None:
                x, y = x[: self.per_pass - self.seen], None if y is None else y[: self.per_pass - self.seen]
                self.seen += x.shape[0]
            if x.shape[0]:
                yield x, y
            if self.pass_full():  # no further batch is drawn (its augmentation would use the RNG)
                return
        if check and empty:
            raise ConfigError("the fit loader yielded no images")
        if check and not kept:
            raise ConfigError("no fit image is left for training once the validation images are held out; "
                              "lower attack.val_images or fit on more images")

    def steps_per_pass(self) -> int | None:
        """Steps per pass when each loader batch makes one and the loader has a length, else None."""
        as_they_come = self.rebatch.batch_size is None and self.keep is None and self.per_pass is None
        if self.loader is None or not as_they_come or self.flush:
            return None
        try:
            return len(self.loader)  # type: ignore[arg-type]
        except TypeError:
            return None

    def pass_full(self) -> bool:
        return self.per_pass is not None and self.seen >= self.per_pass

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"rest": self.rebatch.state()}
        return {**state, "seen": self.seen} if self.per_pass is not None else state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rebatch.load(state.get("rest"), self.device)
        self.seen = int(state.get("seen", 0))
