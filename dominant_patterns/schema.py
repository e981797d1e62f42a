"""Structured-config schemas (dataclasses in Hydra's ConfigStore) and the check that applies them.

The schemas type the keys every option of a group shares; options may add their own keys (the
attack baselines and experiments do), so a schema checks the keys it knows and lets the others
pass. :func:`validate_config` runs before any work and turns a type error into a
:class:`~dominant_patterns.errors.ConfigError` naming the key, the value and the expected type::

    trainer.epochs='ten' has the wrong type: expected an integer (trainer.epochs: int)

The schemas are stored under the ``schema`` group (``schema/trainer``, ``schema/attack``, ...), so
a strict config can also opt in at composition time with ``defaults: [/schema/trainer@_here_]``.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from typing import Any, Optional, get_args, get_origin

from hydra.core.config_store import ConfigStore
from hydra.experimental.callback import Callback
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dominant_patterns.checkpoint import RESUME_MODES
from dominant_patterns.errors import ConfigError
from dominant_patterns.trainer import TrainerSettings

# Optional[...] is kept (not ``X | None``): OmegaConf reads these annotations at runtime on py3.10.
# ruff: noqa: UP007, UP045


@dataclass
class RunSchema:
    """Top-level keys."""

    task_name: str = "dominant"
    seed: int = 0
    xi: float = 10 / 255
    tags: list[str] = field(default_factory=list)
    overwrite: bool = False
    checkpoint_every: int = 50


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


#: config key -> schema; ``""`` is the top level.
SCHEMAS: dict[str, type] = {
    "": RunSchema, "model": ModelSchema, "dataset": DatasetSchema, "eval_dataset": DatasetSchema,
    "loss": LossSchema, "attack": AttackSchema, "trainer": TrainerSchema, "logger": LoggerSchema,
}


def register_schemas() -> None:
    """Store the schemas in Hydra's ConfigStore as ``schema/<name>``."""
    cs = ConfigStore.instance()
    for key, schema in SCHEMAS.items():
        cs.store(group="schema", name=key or "run", node=schema)


register_schemas()


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
        resolved = _field_types(schema)
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
    check_task_name(cfg.get("task_name", ""))
    resume = cfg.get("resume", "auto")
    if str(resume).lower() not in RESUME_MODES:
        raise ConfigError(f"resume={resume!r} is not valid. Valid choices: {', '.join(RESUME_MODES)}")
    every = cfg.get("checkpoint_every", 0)
    if isinstance(every, int) and every < 0:
        raise ConfigError(f"checkpoint_every={every} must be >= 0 (0: checkpoint only at epoch ends)")


def check_task_name(task: Any) -> None:
    task = str(task)
    if not task or task in (".", "..") or not all(c.isalnum() or c in "_-.=," for c in task):
        raise ConfigError(f"task_name={task!r} is not a plain name: it becomes a folder under paths.output_dir, "
                          "so use letters, digits and _-.=, only (no / or ..)")


class EarlyChecks(Callback):
    """Checks that must pass before Hydra creates the output dir (``hydra.callbacks`` in conf/hydra/default.yaml).

    ``task_name`` is part of ``hydra.run.dir``/``hydra.sweep.dir``, which Hydra creates before the app
    runs, so ``task_name=../x`` would already have made a folder outside ``paths.output_dir``. Hydra
    turns a callback's exceptions into warnings, so a bad name exits here (code 2, like other bad input).
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config)

    @staticmethod
    def _check(config: DictConfig) -> None:
        try:
            check_task_name(config.get("task_name", ""))
        except (ConfigError, OmegaConfBaseException) as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            sys.exit(2)


def _field_types(schema: type) -> dict[str, Any]:
    import typing

    return typing.get_type_hints(schema)
