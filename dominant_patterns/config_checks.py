"""Range checks on a composed config, with messages that name the key, the bad value and what is valid."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from dominant_patterns.errors import ConfigError


def _number(key: str, value: Any, *, integer: bool = False) -> float:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{key}={value!r} is not {kind}")
    return value


def check_run_config(cfg: DictConfig) -> None:
    """Refuse out-of-range values before any work starts."""
    xi = _number("xi", cfg.xi)
    if not 0 < xi <= 1:
        raise ConfigError(f"xi={xi} is out of range: it must be in (0, 1] in [0, 1] pixel units (10/255 = 0.0392)")
    trainer = cfg.trainer
    if _number("trainer.batch_size", trainer.batch_size, integer=True) <= 0:
        raise ConfigError(f"trainer.batch_size={trainer.batch_size} must be a positive integer")
    if _number("trainer.eval_batch_size", trainer.eval_batch_size, integer=True) <= 0:
        raise ConfigError(f"trainer.eval_batch_size={trainer.eval_batch_size} must be a positive integer")
    if _number("trainer.epochs", trainer.epochs, integer=True) < 1:
        raise ConfigError(f"trainer.epochs={trainer.epochs} must be an integer >= 1")
    lr = cfg.attack.get("lr")
    if lr is not None and _number("attack.lr", lr) <= 0:
        raise ConfigError(f"attack.lr={lr} must be > 0")
    _number("seed", cfg.seed, integer=True)
