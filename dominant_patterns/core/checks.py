"""Value checks written once: the config checks and the library constructors both call these.

Each raises :class:`~dominant_patterns.core.errors.ConfigError` naming the key, the bad value and what is valid.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dominant_patterns.core.errors import ConfigError


def check_number(key: str, value: Any, *, integer: bool = False) -> float:
    """``value`` itself when it is a number (an integer with ``integer``; booleans are refused)."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{key}={value!r} is not {kind}")
    return value


def check_xi(xi: Any, key: str = "xi") -> float:
    """The l_inf budget in [0, 1] pixel units: a number in (0, 1]."""
    if isinstance(xi, bool) or not isinstance(xi, (int, float)) or not 0 < xi <= 1:
        raise ConfigError(f"{key}={xi!r} is out of range: it must be a number in (0, 1] in [0, 1] pixel units "
                          "(10/255 = 0.0392 by default)")
    return float(xi)


def check_positive(key: str, value: Any) -> float:
    """A number > 0 (learning rates, step sizes)."""
    if check_number(key, value) <= 0:
        raise ConfigError(f"{key}={value!r} must be > 0")
    return float(value)


def check_at_least(key: str, value: Any, low: int) -> int:
    """An integer >= ``low`` (epochs, counts)."""
    if check_number(key, value, integer=True) < low:
        raise ConfigError(f"{key}={value} must be an integer >= {low}")
    return int(value)


def check_positive_int(key: str, value: Any) -> int:
    """An integer > 0 (batch sizes)."""
    if check_number(key, value, integer=True) <= 0:
        raise ConfigError(f"{key}={value} must be a positive integer")
    return int(value)


def check_choice(key: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` when it is one of ``choices``."""
    valid = list(choices)
    if value not in valid:
        raise ConfigError(f"{key}={value} is not valid. Valid choices: {', '.join(map(str, valid))}")
    return value


def check_class(key: str, value: Any, num_classes: int) -> int | None:
    """A class index of the model (``None`` passes: no class chosen)."""
    if value is None:
        return None
    if not 0 <= int(value) < num_classes:
        raise ConfigError(f"{key}={value} is out of range [0, {num_classes})")
    return int(value)
