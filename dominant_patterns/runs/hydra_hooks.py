"""What the apps hand to Hydra: the resolvers of the configs (``${gpus_or:N}`` sizes the launchers,
``${attacks_of:TABLE}`` / ``${methods_of:TABLE}`` list a paper table's methods from the attacks' cards,
``${cpu_cap:CAP,UNDER_BUDGET}`` is a method entry's data cap that ``trainer.budget`` lifts) and the
callback that checks what must hold before Hydra creates the output dir (``hydra.callbacks`` in
``conf/hydra/default.yaml``; the sweep report is :class:`~dominant_patterns.runs.sweep_status.SweepStatus`)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dominant_patterns.attacks.catalog import attack_catalog, table_attacks
from dominant_patterns.conf import CONFIG_DIR
from dominant_patterns.core.atomic import atomic_write
from dominant_patterns.core.devices import visible_gpu_count
from dominant_patterns.core.errors import ConfigError, StorageError
from dominant_patterns.runs.config_checks import check_task_name
from dominant_patterns.runs.run_dir import storage_error


def register_resolvers() -> None:
    """``${gpus_or:N}``: the number of GPUs here, counted without touching CUDA (the launcher's parent stays
    CUDA-free), or ``N`` where there is none; ``conf/hydra/launcher/*.yaml`` size their jobs with it."""
    if not OmegaConf.has_resolver("gpus_or"):
        OmegaConf.register_new_resolver("gpus_or", lambda default: visible_gpu_count() or int(default))
    # the attacks a paper table compares, from their cards: sweeps of experiment configs read them
    if not OmegaConf.has_resolver("attacks_of"):
        OmegaConf.register_new_resolver("attacks_of", lambda table: ",".join(table_attacks(table)))
    if not OmegaConf.has_resolver("methods_of"):
        OmegaConf.register_new_resolver("methods_of", lambda table: ",".join(methods_of(table)))
    if not OmegaConf.has_resolver("cpu_cap"):
        OmegaConf.register_new_resolver("cpu_cap", cpu_cap)


def cpu_cap(cap: Any, under_budget: Any = None, *, _root_: DictConfig) -> Any:
    """``${cpu_cap:CAP,UNDER_BUDGET}``: a ``conf/method`` entry's CPU cap on what a fit sees (e.g. UAP's 16
    crops), which ``trainer.budget`` lifts: CAP without a budget, UNDER_BUDGET (the published setting; null = no
    cap) under one, so a compute-matched sweep spends its passes on the data the method was published with. Caps
    on epochs and iterations need no resolver: the budget replaces them in the loop."""
    return cap if OmegaConf.select(_root_, "trainer.budget", default=None) is None else under_budget


def methods_of(table: str) -> list[str]:
    """The ``conf/method/*.yaml`` (embedded CPU settings) of the baselines a paper table compares (``all``: every
    baseline), in table order: each method's attack (its ``override /attack``) placed by its card; ours is left
    out (its rows come from the loss experiments)."""
    names = list(attack_catalog()) if table == "all" else table_attacks(table)
    wanted = [name for name in names if not attack_catalog()[name]["card"]["ours"]]
    methods = sorted(p.stem for p in (CONFIG_DIR / "method").glob("*.yaml"))
    return [m for attack in wanted for m in methods if method_attack(m) == attack]


def method_attack(name: str) -> str:
    """The attack a ``conf/method/<name>.yaml`` runs (its ``override /attack`` default)."""
    defaults = OmegaConf.load(CONFIG_DIR / "method" / f"{name}.yaml").get("defaults") or []
    return next(str(d["override /attack"]) for d in defaults if "override /attack" in d)


class EarlyChecks(Callback):
    """Checks that must pass before Hydra creates the output dir (``hydra.callbacks`` in conf/hydra/default.yaml).

    ``task_name`` is part of ``hydra.run.dir``/``hydra.sweep.dir``, which Hydra creates before the app
    runs, so ``task_name=../x`` would already have made a folder outside ``paths.output_dir``. Hydra
    turns a callback's exceptions into warnings, so a bad name exits here (code 2, like other bad input).
    The output dir must also take a write (Hydra writes ``.hydra/`` there before the app starts): a full or
    read-only disk exits here with one line (code 4, like any essential write).
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "run")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "sweep")

    @staticmethod
    def _check(config: DictConfig, mode: str) -> None:
        try:
            check_task_name(config.get("task_name", ""))
        except (ConfigError, OmegaConfBaseException) as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            sys.exit(2)
        folder = OmegaConf.select(config, f"hydra.{mode}.dir", default=None)
        try:
            if folder is not None:
                probe_writable(Path(str(folder)))
        except StorageError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            sys.exit(4)


#: Bytes a probe write must fit before Hydra writes its own files (``.hydra/*.yaml``, ``run.log``) into a dir.
PROBE_BYTES = 64 * 1024


def probe_writable(folder: Path) -> None:
    """Create ``folder`` and write (then remove) :data:`PROBE_BYTES` there; :class:`StorageError` when it fails."""
    probe = folder / ".write_probe.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(probe, lambda f: f.write(bytes(PROBE_BYTES)))
    except OSError as exc:
        raise storage_error(probe.parent, exc) from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
