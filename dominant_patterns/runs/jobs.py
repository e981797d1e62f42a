"""What every entry point shares: opening and closing a job, loading its model, data and source pattern.

    with open_job(cfg, "evaluate") as job:          # checks the whole config first
        model = load_model(cfg, job.settings)
        ...
        recorder = job.record(identity)            # config_resolved.yaml + metrics.jsonl + W&B
        ...
        recorder.finish(results)                   # metrics.json
    # the recorder is closed with exit code 0, or 1 when the block raised

:func:`guarded` turns the errors a user can act on into a message and an exit code (2: bad input,
3: non-finite loss, 4: an essential output could not be written, 128 + signal: interrupted, after a checkpoint).
"""

from __future__ import annotations

import contextlib
import logging
import random
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Subset

from dominant_patterns.core.atomic import atomic_write_text
from dominant_patterns.core.checkpoint import Interrupted
from dominant_patterns.core.devices import claim_device, describe_device, resolve_device, start_device, stop_device
from dominant_patterns.core.errors import StorageError, UserInputError
from dominant_patterns.core.loops import NonFiniteLossError, TrainerSettings
from dominant_patterns.core.pattern_files import read_pattern_file
from dominant_patterns.data.datasets import SplitDataset, build_dataset, skipped_files
from dominant_patterns.data.image_cache import prepare_split
from dominant_patterns.models.classifier import ClassifierWrapper, build_model
from dominant_patterns.runs.app_index import APPS
from dominant_patterns.runs.config_checks import check_config
from dominant_patterns.runs.identity import run_identity, source_identity
from dominant_patterns.runs.records import find_source_run
from dominant_patterns.runs.run_dir import own_run_dir, remove_leftovers, write_essential
from dominant_patterns.runs.sweep_status import JOB_NOTES, record_job
from dominant_patterns.runs.tracking import RunRecorder

log = logging.getLogger("dominant_patterns")

T = TypeVar("T")
#: Exit codes of a single run beside 2 (bad input): a non-finite loss, an essential file that could not be written.
EXIT_CODES: dict[type, int] = {NonFiniteLossError: 3, StorageError: 4}


def container(cfg: Any) -> Any:
    """A resolved plain-Python copy of a config node (other values pass through)."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Job:
    """An open job: its config, app (``kind``), output dir, loop settings (``settings.device`` resolved to
    ``device``); :meth:`record` opens the recorder of its record."""

    cfg: DictConfig
    kind: str
    out_dir: Path
    settings: TrainerSettings
    device: torch.device | None = None
    recorders: list[RunRecorder] = field(default_factory=list)

    def record(self, **identity: Any) -> RunRecorder:
        """Open the recorder of this job's record in its output dir (identity: ``records.run_identity``)."""
        return self.open_recorder(self.out_dir, self.cfg, identity)

    def open_recorder(self, out_dir: Path, cfg: DictConfig, identity: dict[str, Any], *,
                      concurrent: bool = False) -> RunRecorder:
        """A recorder of one record in ``out_dir`` with the job's device on its identity, closed with the job.

        The job's ``config_resolved.yaml`` is written once, in the job dir; a record in a folder of its own (one
        pattern of a K-pattern job) gets its own config (``cfg``) beside it. ``concurrent``: beside the job's
        other recorders (one W&B run each).
        """
        out_dir.mkdir(parents=True, exist_ok=True)
        if not self.recorders:  # the job's own config, once
            write_config(self.out_dir, self.cfg)
        if out_dir != self.out_dir:  # a record in a folder of its own gets its config beside it
            write_config(out_dir, cfg)
        full = run_identity(self.kind, cfg.task_name, cfg.tags, **identity, **describe_device(self.device))
        recorder = RunRecorder(out_dir, container(cfg.logger), container(cfg), full, concurrent=concurrent)
        self.recorders.append(recorder)
        return recorder


def write_config(folder: Path, cfg: DictConfig) -> None:
    """``folder/config_resolved.yaml``: the resolved config of the record(s) written there."""
    path = folder / "config_resolved.yaml"
    write_essential(path, lambda: atomic_write_text(path, OmegaConf.to_yaml(cfg, resolve=True)))


def job_number() -> int | None:
    """This job's number in a multirun (Hydra's ``job.num``); None in a single run."""
    hydra_cfg = HydraConfig.get()
    return int(hydra_cfg.job.num) if hydra_cfg.mode == RunMode.MULTIRUN else None


@contextlib.contextmanager
def open_job(cfg: DictConfig, kind: str) -> Iterator[Job]:
    """Check the whole config, take the job's device, then yield the job; its recorders are closed with the
    job's exit code.

    The output dir is this process's for the job (``run_dir.own_run_dir``: a second process is refused; temp
    files a killed write left there are removed). The device: ``trainer.device`` resolved once for the job
    (``devices.claim_device``: ``auto`` spreads a multirun's jobs over the GPUs by job number, ``cuda:K`` pins
    one), held until the job ends.
    """
    check_config(cfg, kind)
    settings = TrainerSettings.from_config(container(cfg.trainer))
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    with own_run_dir(out_dir), claim_device(settings.device, job_number()) as device:
        remove_leftovers(out_dir)
        start_device(device)
        job = Job(cfg, kind, out_dir, replace(settings, device=str(device)), device=device)
        exit_code = 1
        try:
            yield job
            exit_code = 0
        finally:
            for recorder in job.recorders:
                recorder.close(exit_code)
            stop_device(device)


def guarded(task: Callable[[], T]) -> T | None:
    """Run an entry point's task; bad input, non-finite losses and unwritable outputs end with a one-line message
    (exit 2 / 3 / 4 in a single run; in a multirun the job is recorded as failed with that line and the sweep goes
    on, ending with exit code 1), a stop signal with :func:`stop_after_interrupt`."""
    JOB_NOTES.clear()
    try:
        return task()
    except (UserInputError, NonFiniteLossError, StorageError) as exc:
        log.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr, flush=True)
        if HydraConfig.get().mode == RunMode.RUN:
            sys.exit(next((code for kind, code in EXIT_CODES.items() if isinstance(exc, kind)), 2))
        JOB_NOTES.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    except Interrupted as exc:
        stop_after_interrupt(exc)
    return None


def stop_after_interrupt(exc: Interrupted) -> None:
    """Say how to continue, let submitit requeue the job (its handler), else exit with 128 + signal."""
    hydra_cfg = HydraConfig.get()
    command = APPS.get(_app_of(hydra_cfg), APPS["run"])
    if hydra_cfg.mode == RunMode.RUN:
        how = " ".join([command, *hydra_cfg.overrides.task, f"hydra.run.dir={hydra_cfg.runtime.output_dir}"])
    else:
        how = f"the same sweep ({command} -m ...) with hydra.sweep.dir={hydra_cfg.sweep.dir}"
    record_job(hydra_cfg, list(hydra_cfg.overrides.task), "interrupted", str(exc))
    log.warning("%s; continue with: %s", exc, how)
    print(f"{exc}\ncontinue with: {how}", file=sys.stderr, flush=True)
    if callable(exc.previous_handler):  # submitit: checkpoint() and requeue, then it exits itself
        exc.previous_handler(exc.signum, None)
    sys.exit(128 + exc.signum)


def _app_of(hydra_cfg: Any) -> str:
    """The app of the primary config Hydra composed (``config`` is the fitting app's)."""
    name = str(hydra_cfg.job.config_name)
    return "run" if name == "config" else name


# ---------------------------------------------------------------------------------------------
# Model, data and the source pattern


def load_model(cfg: DictConfig, settings: TrainerSettings) -> ClassifierWrapper:
    """``cfg.model`` built, frozen, on the trainer's device (channels-last when the trainer says so)."""
    model = build_model(**container(cfg.model)).to(resolve_device(settings.device))
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def load_datasets(cfg: DictConfig, model: ClassifierWrapper,
                  seed: int | None = None) -> tuple[SplitDataset, SplitDataset]:
    """Fit and evaluation sets of ``seed`` (default ``cfg.seed``); the evaluation set defaults to the fit
    dataset's held-out split."""
    seed = int(cfg.seed) if seed is None else seed
    fit_set = build_dataset(container(cfg.dataset), split="fit", image_size=model.input_size, seed=seed)
    eval_cfg = cfg.get("eval_dataset") or cfg.dataset
    eval_set = build_dataset(container(eval_cfg), split="eval", image_size=model.input_size, seed=seed)
    return fit_set, eval_set


def load_split(data_cfg: dict[str, Any], split: str, model: ClassifierWrapper, seed: int) -> SplitDataset:
    """A split of an analysis app, its files decoded once first (unreadable ones named and left out; none left:
    :class:`~dominant_patterns.core.errors.DataError`), as the fitting app's splits are."""
    dataset = build_dataset(data_cfg, split=split, image_size=model.input_size, seed=seed)
    return prepare_split(dataset, data_cfg, cache_dir=None)[0]


def skipped_counts(**splits: SplitDataset) -> dict[str, Any]:
    """``skipped_<split>_images`` and ``skipped_<split>_files`` of a record, for each split given."""
    out: dict[str, Any] = {}
    for split, dataset in splits.items():
        files = skipped_files(dataset)
        out.update({f"skipped_{split}_images": len(files), f"skipped_{split}_files": files})
    return out


def limit(dataset: SplitDataset, n: int | None) -> SplitDataset | Subset:
    """The first ``n`` images of a split (all when ``n`` is None)."""
    return dataset if not n or n >= len(dataset) else Subset(dataset, range(int(n)))


def pattern_path(cfg: DictConfig) -> Path:
    """The pattern file of an analysis app: ``cfg.pattern`` (a file or run folder) or the ``cfg.source`` lookup."""
    if cfg.get("pattern"):
        return Path(str(cfg.pattern)).expanduser()
    source = OmegaConf.to_container(cfg.source, resolve=True)
    return find_source_run(cfg.paths.output_dir, source) / "pattern.pt"  # type: ignore[arg-type]


class SourcePattern(NamedTuple):
    """The model an analysis app scores on, and the checked pattern (fitted to its input size) it scores."""

    model: ClassifierWrapper
    delta: torch.Tensor
    meta: dict[str, Any]
    path: Path
    xi: float
    identity: dict[str, Any]


def load_source_pattern(cfg: DictConfig, settings: TrainerSettings) -> SourcePattern:
    """Seed, build ``cfg.model`` and read the pattern (ours or any file, ``pattern_files.read_pattern_file``),
    checked and fitted to the model (evaluate, layers, transfer); ``identity``: what its record inherits."""
    seed_everything(int(cfg.seed))
    model = load_model(cfg, settings)
    path = pattern_path(cfg)
    pattern = read_pattern_file(path, size=model.input_size, std=model.info.std,
                                scale=str(cfg.get("pattern_scale") or "auto"), xi=cfg.get("pattern_xi"),
                                fit=str(cfg.get("pattern_fit") or "resize"))
    if pattern.source["fit"] != "none":
        log.warning("pattern %s: %s fitted to %dx%d for %s (pattern_fit=%s)", path, pattern.source["shape"],
                    model.input_size, model.input_size, model.name, pattern.source["fit"])
    log.info("pattern %s (model %s, fit on %s; l_inf %.2f/255 within xi %.2f/255)", path,
             pattern.meta.get("model", "-"), pattern.meta.get("dataset", "-"), pattern.source["linf_255"],
             pattern.xi * 255)
    identity = source_identity(pattern.meta, Path(pattern.source["path"]), pattern.xi, pattern.source)
    return SourcePattern(model, pattern.delta, pattern.meta, Path(pattern.source["path"]), pattern.xi, identity)
