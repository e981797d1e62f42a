"""The config tree and every check on a composed config, run by every entry point before any work.

* Where the configs live (:data:`CONFIG_DIR`), which entry point runs which experiment (each
  experiment file names its ``app``; :data:`APPS` maps it to the command).
* Types: dataclass schemas (:data:`SCHEMAS`, one per config group). They type the keys every option of a
  group shares; options may add their own keys, so a schema checks the keys it knows and lets the others pass::

      trainer.epochs='ten' has the wrong type: expected an integer (trainer.epochs: int)

* Ranges and choices: xi, trainer sizes, attack.lr, seed, resume, checkpoint_every, task_name, each
  written once in :mod:`dominant_patterns.core.checks` (the library constructors call the same checks).

:func:`check_config` runs all of them; :class:`EarlyChecks` (a Hydra callback) refuses a bad
``task_name`` before Hydra creates the output dir that contains it.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, get_args, get_origin

from hydra.utils import get_class
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dominant_patterns.attacks.catalog import attack_catalog
from dominant_patterns.core.checkpoint import RESUME_MODES
from dominant_patterns.core.checks import (
    check_at_least,
    check_choice,
    check_number,
    check_positive,
    check_positive_int,
    check_xi,
)
from dominant_patterns.core.errors import ConfigError
from dominant_patterns.core.loops import TrainerSettings
from dominant_patterns.core.pattern_files import FIT_RULES, SCALES
from dominant_patterns.runs.app_index import APPS

# Optional[...] is kept (not ``X | None``): OmegaConf reads these annotations at runtime on py3.10.
# ruff: noqa: UP007, UP045


@dataclass
class RunSchema:
    """Top-level keys."""

    app: str = "run"
    task_name: str = "dominant"
    seed: int = 0
    xi: float = 10 / 255
    tags: list[str] = field(default_factory=list)
    overwrite: bool = False
    checkpoint_every: int = 50
    pattern_scale: Optional[str] = None
    pattern_xi: Optional[float] = None
    pattern_fit: Optional[str] = None


@dataclass
class ModelSchema:
    name: str = MISSING
    weights: Optional[str] = None
    checkpoint: Optional[str] = None
    input_size: Optional[int] = None
    arch: Optional[str] = None


@dataclass
class DatasetSchema:
    name: str = MISSING
    root: Optional[str] = None
    fit_size: Optional[int] = None
    eval_size: Optional[int] = None
    max_images: Optional[int] = None
    num_fit: Optional[int] = None
    num_eval: Optional[int] = None
    split_seed: Optional[int] = None
    augment: Optional[bool] = None
    labeled: Optional[bool] = None
    label_space: Optional[str] = None
    num_workers: Optional[int] = None
    download: Optional[bool] = None
    ground_truth: Optional[str] = None
    min_scale: Optional[float] = None
    eval_share: Optional[float] = None
    allow_missing: Optional[bool] = None


@dataclass
class LossSchema:
    name: str = MISSING
    layer: Optional[str] = None


@dataclass
class AttackSchema:
    """Keys the attacks share; each attack may add its own."""

    _target_: str = MISSING
    name: str = MISSING
    lr: Optional[float] = None
    weight_decay: Optional[float] = None
    epochs: Optional[int] = None
    steps: Optional[int] = None
    target_class: Optional[int] = None
    target_weight: Optional[float] = None
    num_patterns: Optional[int] = None


# The trainer group is typed by the loop's own settings dataclass (one list of fields).
TrainerSchema = TrainerSettings


@dataclass
class LoggerSchema:
    name: str = "none"
    project: Optional[str] = None
    entity: Optional[str] = None
    mode: Optional[str] = None
    group: Optional[str] = None
    job_type: Optional[str] = None
    run_name: Optional[str] = None
    init_timeout: Optional[float] = None


#: config key -> schema; ``""`` is the top level.
SCHEMAS: dict[str, type] = {
    "": RunSchema, "model": ModelSchema, "dataset": DatasetSchema, "eval_dataset": DatasetSchema,
    "loss": LossSchema, "attack": AttackSchema, "trainer": TrainerSchema, "logger": LoggerSchema,
}




def _describe(tp: Any) -> str:
    if get_origin(tp) is not None and type(None) in get_args(tp):
        inner = [a for a in get_args(tp) if a is not type(None)][0]
        return f"{_describe(inner)} or null"
    if get_origin(tp) is list:
        return "a list"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def validate_config(cfg: DictConfig) -> None:
    """Check every known key against its schema; raise :class:`ConfigError` naming key, value and type."""
    for key, schema in SCHEMAS.items():
        node = OmegaConf.select(cfg, key) if key else cfg
        if node is None:
            continue
        if not isinstance(node, DictConfig):
            raise ConfigError(f"{key}={node!r} has the wrong type: expected a config group (choose with {key}=NAME)")
        hints = {f.name: f.type for f in dataclasses.fields(schema)}
        resolved = typing.get_type_hints(schema)
        for name, tp in resolved.items():
            if name not in node:
                continue
            full = f"{key}.{name}" if key else name
            try:
                value = node[name]
            except OmegaConfBaseException as exc:
                raise ConfigError(f"{full} could not be resolved: {exc}") from exc
            if isinstance(value, (DictConfig, ListConfig)) and get_origin(tp) is not list:
                raise ConfigError(f"{full}={OmegaConf.to_container(value)!r} has the wrong type: expected "
                                  f"{_describe(tp)} ({full}: {_type_name(hints[name])})")
            probe = OmegaConf.structured(schema)
            try:
                OmegaConf.update(probe, name, value, merge=False)
            except OmegaConfBaseException as exc:
                shown = OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value
                raise ConfigError(f"{full}={shown!r} has the wrong type: expected {_describe(tp)} "
                                  f"({full}: {_type_name(hints[name])})") from exc


def check_ranges(cfg: DictConfig) -> None:
    """Refuse out-of-range values and unknown choices (the keys a config has)."""
    if "xi" in cfg:
        check_xi(cfg.xi)
    trainer = cfg.get("trainer")
    if trainer is not None:
        check_positive_int("trainer.batch_size", trainer.batch_size)
        check_positive_int("trainer.eval_batch_size", trainer.eval_batch_size)
        check_at_least("trainer.epochs", trainer.epochs, 1)
    attack = cfg.get("attack")
    if attack is not None and attack.get("lr") is not None:
        check_positive("attack.lr", attack.lr)
    if attack is not None:
        check_num_patterns(attack)
    if "seed" in cfg:
        check_number("seed", cfg.seed, integer=True)
    check_task_name(cfg.get("task_name", ""))
    if cfg.get("pattern_scale") is not None:
        check_choice("pattern_scale", str(cfg.pattern_scale), SCALES)
    if cfg.get("pattern_fit") is not None:
        check_choice("pattern_fit", str(cfg.pattern_fit), FIT_RULES)
    if cfg.get("pattern_xi") is not None:
        check_xi(cfg.pattern_xi, "pattern_xi")
    check_choice("resume", str(cfg.get("resume", "auto")).lower(), RESUME_MODES)
    every = cfg.get("checkpoint_every", 0)
    if isinstance(every, int) and every < 0:
        raise ConfigError(f"checkpoint_every={every} must be >= 0 (0: checkpoint only at epoch ends)")


def check_config(cfg: DictConfig, app: str) -> None:
    """Every check, before any work: the config is this app's, its types, its ranges."""
    declared = str(cfg.get("app", app))
    if declared != app:
        raise ConfigError(f"this config is meant for `{APPS.get(declared, declared)}` (app: {declared}), "
                          f"not `{APPS[app]}`")
    validate_config(cfg)
    check_ranges(cfg)


def check_num_patterns(attack: DictConfig) -> int:
    """``attack.num_patterns`` (default 1): an integer >= 1, above 1 only for an attack whose card says it fits K
    patterns in one pass (``card.multi_pattern``)."""
    value = attack.get("num_patterns")
    k = 1 if value is None else check_at_least("attack.num_patterns", value, 1)
    if k > 1 and not attack_class(attack).card.multi_pattern:
        joint = [name for name, info in attack_catalog().items() if info["card"]["multi_pattern"]]
        raise ConfigError(f"attack.num_patterns={k} fits K patterns in one pass; attack={attack.get('name')} has no "
                          f"K-pattern fit (valid: attack={', '.join(joint)}). Run its seeds as a multirun instead, "
                          "e.g. seed=0,1,2")
    return int(k)


def attack_class(attack: DictConfig) -> Any:
    """The class an attack config's ``_target_`` names (a clear error when it names none)."""
    target = str(attack.get("_target_"))
    try:
        return get_class(target)
    except Exception as exc:  # noqa: BLE001 - Hydra wraps import errors in several types
        raise ConfigError(f"attack._target_={target} cannot be imported ({type(exc).__name__}); an attack config "
                          "names its class by its import path") from None


def check_task_name(task: Any) -> None:
    task = str(task)
    if not task or task in (".", "..") or not all(c.isalnum() or c in "_-.=," for c in task):
        raise ConfigError(f"task_name={task!r} is not a plain name: it becomes a folder under paths.output_dir, "
                          "so use letters, digits and _-.=, only (no / or ..)")
