"""A Hydra callback that records every multirun job's outcome and reports the failed ones at the end.

Each job appends one line to ``<sweep dir>/jobs.jsonl`` (works across submitit processes); at
the end of the sweep, or at exit when Hydra stops on a failed job, the launching process prints
a summary (finished / skipped / failed / interrupted, with each failed job's overrides and
error) and writes it to ``<sweep dir>/sweep_summary.json``.
"""

from __future__ import annotations

import atexit
import json
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

STATUS_FILE = "jobs.jsonl"
#: Filled by a job for the sweep report (``status: skipped``, or ``status: failed`` with its one-line ``error`` when
#: the job ended on bad input without raising); read by :meth:`SweepStatus.on_job_end`.
JOB_NOTES: dict[str, Any] = {}
#: The counts of the last multirun this process launched (read by :func:`exit_if_jobs_failed`).
LAST_COUNTS: dict[str, int] = {}


def record_job(hydra_cfg: Any, overrides: list[str], status: str, error: str | None = None) -> None:
    """Append one job's outcome to ``<sweep dir>/jobs.jsonl`` (multirun jobs only)."""
    if hydra_cfg.get("mode") != RunMode.MULTIRUN:
        return
    record = {"num": int(hydra_cfg.job.num), "overrides": overrides, "status": status, "error": error,
              "output_dir": str(hydra_cfg.runtime.output_dir), "time": time.time()}
    path = Path(str(hydra_cfg.sweep.dir)) / STATUS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


class SweepStatus(Callback):
    """Registered in ``conf/hydra/default.yaml`` under ``hydra.callbacks``."""

    def __init__(self) -> None:
        self.sweep_dir: Path | None = None
        self.started = 0.0
        self.reported = False

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        self.started = time.time()
        self.reported = False
        atexit.register(self.report)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        hydra_cfg = config.get("hydra")
        if hydra_cfg is None or hydra_cfg.get("mode") != RunMode.MULTIRUN:
            return
        status = "finished" if job_return.status == JobStatus.COMPLETED else "failed"
        status = JOB_NOTES.pop("status", status) if status == "finished" else status
        error = JOB_NOTES.pop("error", None)
        if job_return.status == JobStatus.FAILED:
            exc = job_return._return_value
            error = f"{type(exc).__name__}: {exc}"
        record_job(hydra_cfg, list(job_return.overrides or []), status, error)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.report()

    def report(self) -> None:
        """Print and save the summary of the jobs of this launch (once)."""
        if self.reported or self.sweep_dir is None:
            return
        self.reported = True
        path = self.sweep_dir / STATUS_FILE
        jobs: dict[int, dict[str, Any]] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("time", 0) >= self.started:
                    jobs[rec["num"]] = rec  # the latest record of each job
        counts = {s: sum(1 for j in jobs.values() if j["status"] == s)
                  for s in ("finished", "skipped", "failed", "interrupted")}
        lines = [f"multirun summary ({self.sweep_dir}): {len(jobs)} jobs: "
                 + ", ".join(f"{n} {s}" for s, n in counts.items())]
        for num, job in sorted(jobs.items()):
            if job["status"] == "failed":
                overrides = " ".join(job["overrides"])
                lines.append(f"  FAILED job #{num} [{overrides}]: {job['error']} ({job['output_dir']})")
            elif job["status"] == "interrupted":
                lines.append(f"  INTERRUPTED job #{num}: {job['error']}")
        if counts["failed"] or counts["interrupted"]:
            lines.append("  fix the failed jobs and rerun the same sweep with hydra.sweep.dir="
                         f"{self.sweep_dir}: finished jobs are skipped, interrupted ones resume")
        LAST_COUNTS.clear()
        LAST_COUNTS.update(counts)
        summary = {"jobs": [jobs[k] for k in sorted(jobs)], "counts": counts}
        try:
            (self.sweep_dir / "sweep_summary.json").write_text(json.dumps(summary, indent=1))
        except OSError:
            pass
        print("\n".join(lines), file=sys.stderr, flush=True)


def exit_if_jobs_failed() -> None:
    """End the launching process with exit code 1 when its multirun had failed jobs (each already reported)."""
    if LAST_COUNTS.get("failed"):
        sys.exit(1)
