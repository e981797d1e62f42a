"""Short stable digests of plain values (cache keys, model and dataset fingerprints)."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def digest(obj: Any, length: int = 20) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``obj`` as sorted JSON (non-JSON values as ``str``)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:length]
