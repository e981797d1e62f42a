"""RNG states (torch, CUDA, numpy, ``random`` and a loader's own generators) as tensors and plain
values, so a checkpoint holding them loads with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


def loader_generators(loader: Any) -> dict[str, torch.Generator]:
    """The loader's own ``torch.Generator`` attributes (shuffle order, crops), by name.

    A loader made of other loaders (e.g. ``StackedLoader``) names them in ``rng_generators()``.
    """
    named = getattr(loader, "rng_generators", None)
    if callable(named):
        return dict(named())
    try:
        items = vars(loader).items()
    except TypeError:
        return {}
    return {k: v for k, v in sorted(items) if isinstance(v, torch.Generator)}


def capture_rng(loader: Any = None) -> dict[str, Any]:
    """Torch, CUDA, numpy and ``random`` states, plus the loader's generators."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": {"keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": {"version": int(py_version), "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
        "loader": {k: g.get_state() for k, g in loader_generators(loader).items()},
    }


def restore_rng(state: Mapping[str, Any], loader: Any = None) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    npy = state["numpy"]
    np.random.set_state(("MT19937", npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    saved = state.get("loader") or {}
    for name, gen in loader_generators(loader).items():
        if name in saved:
            gen.set_state(saved[name])
