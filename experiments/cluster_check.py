"""``make cluster-check``: ``hydra/launcher=slurm`` against a real one-node SLURM cluster on this machine.

    python experiments/cluster_check.py                  # about 7 minutes; needs root (scripts/slurm_local.py)
    python experiments/cluster_check.py --report PATH    # where the Markdown report goes

The cluster comes from ``scripts/slurm_local.py`` (Debian's slurmctld/slurmd/munge, started by hand, no GPU);
it is stopped at the end unless it was already up. Every job goes through the real submitit SLURM executor with
``conf/hydra/launcher/slurm.yaml`` as it is, plus the overrides a user sets for a site: the partition, the time
limit and the node's size (no GPU, 2 CPUs: ``gpus_per_node=0 cpus_per_task=1 mem_gb=2``). Cases:

* ``sweep``: 4 tiny jobs -> 4 finished ``metrics.json`` and ``sweep_summary.json``.
* ``rerun``: the same sweep into the same dir -> all 4 skipped, their records untouched.
* ``failure``: a bad value in one job of 3 -> the other two finish; the summary names the job and its error.
* ``time_limit``: a fit longer than its 3-minute limit -> SLURM's warning signal (USR2, ``signal_delay_s``
  before the limit), checkpoint, requeue by submitit (``max_num_timeout``), resume, finished.
* ``preemption``: a job in the preemptible partition is preempted by an ``urgent`` job the way SLURM does it
  (PreemptMode=REQUEUE with ``preempt_send_user_signal``: the job's ``--signal``, USR2, reaches its srun step),
  checkpoints, submitit requeues it (``scontrol requeue``), it resumes; its pattern equals an uninterrupted
  run's (``torch.equal``).
* ``term_then_usr2``: submitit's own preemption sequence (``SlurmJob._interrupt``: ``scancel --signal=TERM``,
  then ``scancel --signal=USR2``, here 1 s apart) -> requeued, resumed, bitwise equal.
* ``term_then_requeue``: preemption on a cluster without ``preempt_send_user_signal``: SIGTERM, then SLURM
  requeues the job itself (TERM, KillWait, KILL) -> resumed from its last periodic checkpoint, bitwise equal.
* ``without_requeue_flag``: the control for slurm.yaml's ``requeue: true``: without it SLURM (``JobRequeue=0``
  here) refuses submitit's ``scontrol requeue`` and the job fails.

Phase 1 runs the reference fit and every case but ``preemption`` together (2 job slots); phase 2 runs the
preemption alone, so the urgent job has exactly one job to preempt. A table case -> outcome (job ids, wall
seconds) is printed and written with the log lines of checkpoint -> requeue -> resume to the report.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import slurm_local  # noqa: E402  (scripts/ is not a package)

REPORT = REPO / "experiments" / "cluster" / "README.md"
#: The site overrides: the partition and the size of this node's job slots (no GPU, 1 CPU, 2 GB a job).
SITE = ["hydra.launcher.partition=cpu", "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=2"]
TINY = ["model=tiny", "dataset=synthetic", "logger=none", "trainer.progress=false"]
SMALL = [*TINY, "trainer.epochs=1", "dataset.num_fit=64", "dataset.num_eval=32"]
FIT_IMAGES, BATCH = 2000, 8
#: A fit of ~30 s on one core at 20 epochs (250 steps an epoch, a checkpoint every 50 steps).
LONG = [*TINY, f"dataset.num_fit={FIT_IMAGES}", "dataset.num_eval=16", f"trainer.batch_size={BATCH}",
        "trainer.eval_batch_size=16", "checkpoint_every=50", "seed=0"]
PREEMPT_EPOCHS = 20
#: The time-limit case: a 3-minute limit, USR2 20 s before it (SLURM sends it up to its 30 s check period earlier),
#: and a fit 1.75 times the limit at the reference fit's speed (measured beside the other jobs). Each run of the job
#: fits >= ~125 s, so the 4 runs max_num_timeout=3 allows hold the fit if the machine gets 1.5 x slower, and the
#: fit stays longer than the limit if it gets 1.7 x faster.
TIMEOUT_MIN, SIGNAL_DELAY_S, TIMEOUT_FIT_RATIO = 3, 20, 1.75
BAD_XI = "1.5"
#: submitit and app log lines that tell the story of an interrupted job
STORY = re.compile(r"Starting with JobEnvironment|Bypassing signal SIGTERM|Caught signal|interrupted by|"
                   r"Calling checkpoint|Requeued job|Job has timed out|Exiting gracefully|resuming from|"
                   r"Job completed successfully|fit .* over \d+ segments")
HYDRA_COPY = re.compile(r"^\[[^]]*\]\[submitit\]")


class CheckFailed(Exception):
    """A case's outcome is not the expected one (the message says what was seen)."""


@dataclass
class Case:
    name: str
    ok: bool = False
    outcome: str = "not run"
    job_ids: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)


@dataclass
class Sweep:
    """One ``python -m dominant_patterns -m hydra/launcher=slurm ...`` launch into ``sweep_dir``."""

    name: str
    sweep_dir: Path
    overrides: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[str] | None = None

    @property
    def log(self) -> Path:
        return self.sweep_dir.parent / f"{self.sweep_dir.name}.launcher.log"

    def start(self) -> Sweep:
        self.sweep_dir.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "dominant_patterns", "-m", "hydra/launcher=slurm", *SITE, *self.overrides,
               f"hydra.sweep.dir={self.sweep_dir}"]
        with self.log.open("a") as out:
            out.write("$ " + " ".join(cmd) + "\n")
            out.flush()
            self.proc = subprocess.Popen(cmd, cwd=self.sweep_dir.parent, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, text=True)
        return self

    def wait(self, timeout: float) -> int:
        """The launcher's exit code; on a timeout it is stopped, its jobs cancelled, and the case fails."""
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            for job in self.job_ids():
                subprocess.run(["scancel", job], env=self.env, capture_output=True)
            raise CheckFailed(f"{self.name}: the launcher did not finish in {timeout:.0f} s (log: {self.log})"
                              ) from None
        return code

    def job_ids(self) -> list[str]:
        """SLURM job ids of this sweep's jobs (array tasks as ``A_i``), from submitit's log files."""
        logs = (self.sweep_dir / ".submitit").glob("*/*_log.out")
        return sorted({p.name.removesuffix("_0_log.out") for p in logs}, key=_job_key)

    def job_log(self, job_id: str, stream: str = "out") -> str:
        """The job's stdout (or stderr) over all its runs (submitit appends; the app and submitit log to both)."""
        path = self.sweep_dir / ".submitit" / job_id / f"{job_id}_0_log.{stream}"
        return path.read_text(errors="replace") if path.exists() else ""

    def summary(self) -> dict:
        path = self.sweep_dir / "sweep_summary.json"
        if not path.exists():
            raise CheckFailed(f"{self.name}: no sweep_summary.json in {self.sweep_dir} (log: {self.log})")
        return json.loads(path.read_text())


def _job_key(job_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in job_id.split("_") if part.isdigit())


# ---------------------------------------------------------------------------------------------
# SLURM queries

def slurm(env: dict[str, str], *args: str) -> str:
    return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=60).stdout


def job_field(env: dict[str, str], job_id: str, key: str) -> str:
    match = re.search(rf"\b{key}=(\S+)", slurm(env, "scontrol", "show", "job", job_id))
    return match.group(1) if match else "?"


def ctld_lines(*job_ids: str) -> list[str]:
    """slurmctld's log lines about these jobs (submitted, started, requeued, done)."""
    text = slurm_local.layout_from_env().log("slurmctld").read_text(errors="replace")
    pattern = re.compile(rf"JobId=({'|'.join(job_ids)})\b")
    return [line for line in text.splitlines() if pattern.search(line)]


def running_job(sweep: Sweep, timeout: float = 600) -> str:
    """Wait until the sweep's (only) job runs and has written a checkpoint: the job is mid-fit."""
    deadline = time.time() + timeout
    ckpt = sweep.sweep_dir / "0" / "checkpoint.ckpt"
    while time.time() < deadline:
        ids = sweep.job_ids()
        if ids and ckpt.exists() and job_field(sweep.env, ids[0], "JobState") == "RUNNING":
            return ids[0]
        if sweep.proc is not None and sweep.proc.poll() is not None:
            raise CheckFailed(f"{sweep.name}: the launcher ended before the job was mid-fit (log: {sweep.log})")
        time.sleep(0.5)
    raise CheckFailed(f"{sweep.name}: no running job with a checkpoint after {timeout:.0f} s")


# ---------------------------------------------------------------------------------------------
# Checks shared by the cases

def submission(sweep: Sweep, job_id: str) -> str:
    """The sbatch script submitit wrote for the job (an array task's is its array's)."""
    folder = sweep.sweep_dir / ".submitit"
    scripts = [*folder.glob(f"{job_id}/*_submission.sh"), *folder.glob(f"{job_id.split('_')[0]}/*_submission.sh")]
    return scripts[0].read_text() if scripts else ""


def finished_records(sweep: Sweep, nums: list[int]) -> dict[int, dict]:
    records = {}
    for num in nums:
        path = sweep.sweep_dir / str(num) / "metrics.json"
        record = json.loads(path.read_text()) if path.exists() else {}
        if record.get("status") != "finished":
            raise CheckFailed(f"{sweep.name}: job #{num} has no finished metrics.json ({path})")
        records[num] = record
    return records


def delta(path: Path) -> torch.Tensor:
    return torch.load(path, map_location="cpu", weights_only=True)["delta"]


def story(log: str) -> list[str]:
    """The lines of a job log that show signal -> checkpoint -> requeue -> resume, in order (submitit logs each
    message twice, through its own handler and through Hydra's as ``[time][submitit][LEVEL]``: that copy is left
    out)."""
    return [line.strip() for line in log.splitlines() if STORY.search(line) and not HYDRA_COPY.match(line)]


def expect_story(log: str, kind: str, before: tuple[str, ...] = ()) -> None:
    """``log`` shows USR2 -> checkpoint -> submitit's requeue (``kind``: preempted / timed-out) -> resume -> done."""
    expect_in_order(log, [*before, r"interrupted by SIGUSR2 at epoch \d+, step \d+; checkpoint saved",
                          rf"Caught signal SIGUSR2 on \S+: this job is {kind}", r"Calling checkpoint method",
                          r"Requeued job", r"Exiting gracefully", r"Starting with JobEnvironment",
                          r"resuming from \S*checkpoint\.ckpt: epoch \d+, batch \d+, step \d+",
                          r"Job completed successfully"], kind)


def expect_in_order(log: str, patterns: list[str], what: str) -> None:
    pos = 0
    for pattern in patterns:
        match = re.compile(pattern).search(log, pos)
        if match is None:
            raise CheckFailed(f"{what}: {pattern!r} not found in the job log after position {pos}")
        pos = match.end()


def compare_to_reference(sweep: Sweep, reference: Path) -> str:
    a, b = delta(sweep.sweep_dir / "0" / "pattern.pt"), delta(reference)
    equal = torch.equal(a, b)
    text = (f"torch.equal({sweep.name}/0/pattern.pt delta, {reference.parent.parent.name}/0/pattern.pt delta) = "
            f"{equal}; shape {tuple(a.shape)}, max |diff| = {(a - b).abs().max().item():.3g}")
    if not equal:
        raise CheckFailed(text)
    return text


# ---------------------------------------------------------------------------------------------
# Cases

CASES = ("sweep", "rerun", "failure", "time_limit", "preemption", "term_then_usr2", "term_then_requeue",
         "without_requeue_flag")
#: the cases of phase 1, each in its own thread beside the main thread's sweep, rerun and failure
BACKGROUND = ("time_limit", "term_then_usr2", "term_then_requeue", "without_requeue_flag")


class Check:
    """Runs the cases on a running cluster; ``cases`` holds their outcomes in table order."""

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.work, self.env = work, env
        self.cases: dict[str, Case] = {n: Case(n) for n in CASES}
        self.ref: Sweep | None = None
        self.comparisons: list[str] = []
        self.stories: dict[str, list[str]] = {}

    def sweep(self, name: str, overrides: list[str], subdir: str | None = None) -> Sweep:
        return Sweep(name, self.work / (subdir or name), overrides, self.env)

    def run_case(self, name: str) -> None:
        case, start = self.cases[name], time.time()
        try:
            case.outcome = getattr(self, f"case_{name}")(case)
            case.ok = True
        except CheckFailed as exc:
            case.outcome = f"FAILED: {exc}"
        except Exception as exc:  # noqa: BLE001 - a broken case is reported, the others still run
            case.outcome = f"FAILED: {type(exc).__name__}: {exc}"
        case.wall_s = time.time() - start
        print(f"[cluster-check] {name}: {'ok' if case.ok else 'FAILED'} ({case.wall_s:.0f} s) {case.outcome}",
              flush=True)

    def run(self) -> None:
        """Phase 1: the reference fit and every case but preemption at once; phase 2: preemption alone."""
        self.ref = self.sweep("reference", [*LONG, f"trainer.epochs={PREEMPT_EPOCHS}"]).start()
        threads = [threading.Thread(target=self.run_case, args=(name,)) for name in BACKGROUND]
        for t in threads:
            t.start()
        for name in ("sweep", "rerun", "failure"):
            self.run_case(name)
        for t in threads:
            t.join()
        self.reference()
        self.run_case("preemption")

    def reference(self) -> Path:
        """The uninterrupted fit's ``pattern.pt`` (one segment)."""
        self.reference_record()
        assert self.ref is not None
        return self.ref.sweep_dir / "0" / "pattern.pt"

    def reference_record(self) -> dict:
        assert self.ref is not None
        self.ref.wait(900)
        record = finished_records(self.ref, [0])[0]
        if record.get("timing", {}).get("fit_segments", 1) != 1:
            raise CheckFailed(f"the reference fit was interrupted: {record['timing']}")
        return record

    # -- sweep, rerun, failure ------------------------------------------------------------------

    def case_sweep(self, case: Case) -> str:
        sweep = self.sweep("sweep", [*SMALL, "seed=0,1,2,3"]).start()
        code = sweep.wait(600)
        case.job_ids = sweep.job_ids()
        counts = sweep.summary()["counts"]
        finished_records(sweep, [0, 1, 2, 3])
        if code != 0 or counts.get("finished") != 4:
            raise CheckFailed(f"exit {code}, summary {counts} (log: {sweep.log})")
        return f"4 jobs -> 4 finished metrics.json; sweep_summary.json: {_counts(counts)}"

    def case_rerun(self, case: Case) -> str:
        sweep = self.sweep("sweep_rerun", [*SMALL, "seed=0,1,2,3"], subdir="sweep")
        before = {n: (sweep.sweep_dir / str(n) / "metrics.json").read_bytes() for n in range(4)}
        code = sweep.start().wait(600)
        case.job_ids = [j for j in sweep.job_ids() if j not in self.cases["sweep"].job_ids]
        counts = sweep.summary()["counts"]
        unchanged = all((sweep.sweep_dir / str(n) / "metrics.json").read_bytes() == before[n] for n in range(4))
        if code != 0 or counts.get("skipped") != 4 or counts.get("finished") or not unchanged:
            raise CheckFailed(f"exit {code}, summary {counts}, records unchanged: {unchanged} (log: {sweep.log})")
        return f"same dir -> {_counts(counts)}; the 4 metrics.json byte-identical"

    def case_failure(self, case: Case) -> str:
        xis = ["0.0392156862745098", BAD_XI, "0.0313725490196"]
        sweep = self.sweep("failure", [*SMALL, "seed=0", f"xi={','.join(xis)}"]).start()
        code = sweep.wait(600)
        case.job_ids = sweep.job_ids()
        failed = [j for j in sweep.summary()["jobs"] if j["status"] == "failed"]
        finished_records(sweep, [0, 2])
        if code == 0 or len(failed) != 1 or failed[0]["num"] != 1 or f"xi={BAD_XI}" not in (failed[0]["error"] or ""):
            raise CheckFailed(f"exit {code}, failed jobs {failed} (log: {sweep.log})")
        reported = [line.strip() for line in sweep.log.read_text(errors="replace").splitlines()
                    if "FAILED job #1" in line]
        if not reported:
            raise CheckFailed(f"the launcher did not report the failed job (log: {sweep.log})")
        case.notes.append(reported[0])
        return (f"xi={BAD_XI} in job #1 only -> jobs #0, #2 finished, #1 failed, launcher exit {code}, summary: "
                f"{failed[0]['error']}")

    # -- time limit -----------------------------------------------------------------------------

    def case_time_limit(self, case: Case) -> str:
        epoch_s = float(self.reference_record()["timing"]["fit_seconds"]) / PREEMPT_EPOCHS
        epochs = math.ceil(TIMEOUT_FIT_RATIO * TIMEOUT_MIN * 60 / epoch_s)
        case.notes.append(f"driver: the reference fit took {epoch_s:.2f} s an epoch -> {epochs} epochs for about "
                          f"{TIMEOUT_FIT_RATIO} x the {TIMEOUT_MIN}-minute limit")
        sweep = self.sweep(case.name, [*LONG, f"trainer.epochs={epochs}", f"hydra.launcher.timeout_min={TIMEOUT_MIN}",
                                       f"hydra.launcher.signal_delay_s={SIGNAL_DELAY_S}"]).start()
        code = sweep.wait(1200)
        case.job_ids = sweep.job_ids()
        log = sweep.job_log(case.job_ids[0])
        self.stories[case.name] = story(log)
        timing = finished_records(sweep, [0])[0].get("timing", {})
        expect_story(log, "timed-out")
        requeues = sum("Requeued job" in line for line in self.stories[case.name])
        restarts = job_field(self.env, case.job_ids[0], "Restarts")
        case.notes += ctld_lines(case.job_ids[0])
        if code != 0:
            raise CheckFailed(f"launcher exit {code} (log: {sweep.log})")
        if float(timing.get("fit_seconds", 0)) <= TIMEOUT_MIN * 60:
            raise CheckFailed(f"the fit took {timing.get('fit_seconds')} s, not longer than the {TIMEOUT_MIN * 60} s "
                              "limit (the machine got much faster than while the reference fit ran)")
        return (f"limit {TIMEOUT_MIN * 60} s, fit {float(timing.get('fit_seconds', 0)):.0f} s in "
                f"{timing.get('fit_segments', '?')} segments: USR2 before the limit -> checkpoint -> requeue "
                f"({requeues} of max_num_timeout=3; SLURM Restarts={restarts}) -> finished")

    # -- preemption -----------------------------------------------------------------------------

    def interrupted_sweep(self, name: str, *extra: str) -> tuple[Sweep, str]:
        """A sweep of the reference's fit, started, and its job id once it is mid-fit."""
        sweep = self.sweep(name, [*LONG, f"trainer.epochs={PREEMPT_EPOCHS}", *extra]).start()
        job = running_job(sweep)
        self.cases[name].job_ids = [job]
        return sweep, job

    def case_preemption(self, case: Case) -> str:
        sweep, job = self.interrupted_sweep(case.name)
        cpus = os.cpu_count() or 1  # the whole node: the preemptible job is all that stands in its way
        preemptor = slurm(self.env, "sbatch", "--parsable", "--partition=urgent", f"--cpus-per-task={cpus}",
                          "--mem=100M", "--job-name=preemptor", f"--output={self.work / 'preemptor_%j.out'}",
                          "--wrap", "sleep 10").strip()
        case.notes.append(f"driver: urgent job {preemptor} (--cpus-per-task={cpus}) submitted while job {job} "
                          "was mid-fit")
        code = sweep.wait(900)
        case.job_ids.append(f"{preemptor} (urgent)")
        case.notes += ctld_lines(job, preemptor)
        self.stories[case.name] = story(sweep.job_log(job))
        expect_story(sweep.job_log(job), "preempted")
        return self.finish(case, sweep, code, f"preempted for urgent job {preemptor}: USR2 at {{at}} -> checkpoint -> "
                                              "submitit's requeue")

    def case_term_then_usr2(self, case: Case) -> str:
        sweep, job = self.interrupted_sweep(case.name)
        slurm(self.env, "scancel", "--signal=TERM", job)
        time.sleep(1)
        slurm(self.env, "scancel", "--signal=USR2", job)
        case.notes.append(f"driver: scancel --signal=TERM {job}; 1 s later scancel --signal=USR2 {job}")
        code = sweep.wait(900)
        case.notes += ctld_lines(job)
        self.stories[case.name] = story(sweep.job_log(job))
        expect_story(sweep.job_log(job), "preempted", before=(r"Bypassing signal SIGTERM",))
        return self.finish(case, sweep, code, "TERM (submitit ignores it), USR2 at {at} -> checkpoint -> submitit's "
                                              "requeue")

    def case_term_then_requeue(self, case: Case) -> str:
        sweep, job = self.interrupted_sweep(case.name)
        slurm(self.env, "scancel", "--signal=TERM", job)
        time.sleep(2)
        slurm(self.env, "scontrol", "requeue", job)
        case.notes.append(f"driver: scancel --signal=TERM {job}; 2 s later scontrol requeue {job}")
        code = sweep.wait(900)
        case.notes += ctld_lines(job)
        self.stories[case.name] = story(sweep.job_log(job))
        expect_in_order(sweep.job_log(job), [r"Bypassing signal SIGTERM", r"Starting with JobEnvironment",
                                             r"resuming from \S*checkpoint\.ckpt: epoch \d+, batch \d+, step \d+",
                                             r"Job completed successfully"], case.name)
        return self.finish(case, sweep, code, "TERM (submitit ignores it), `scontrol requeue` (SLURM: TERM, KillWait, "
                                              "KILL) -> from the last periodic checkpoint")

    def case_without_requeue_flag(self, case: Case) -> str:
        """The control: without ``additional_parameters.requeue`` SLURM (JobRequeue=0) refuses submitit's requeue."""
        sweep, job = self.interrupted_sweep(case.name, "~hydra.launcher.additional_parameters.requeue")
        slurm(self.env, "scancel", "--signal=USR2", job)
        code = sweep.wait(900)
        err = sweep.job_log(job, "err")
        self.stories[case.name] = story(sweep.job_log(job)) + [line for line in err.splitlines() if "disabled" in line]
        failed = [j for j in sweep.summary()["jobs"] if j["status"] == "failed"]
        error = failed[0]["error"] if failed else ""
        if "--requeue" in submission(sweep, job) or code == 0 or "'scontrol', 'requeue'" not in (error or ""):
            raise CheckFailed(f"expected SLURM to refuse the requeue; exit {code}, failed jobs {failed}")
        return (f"no `--requeue` in the sbatch script; USR2 -> checkpoint -> `scontrol requeue` refused by SLURM "
                f"(JobRequeue=0): job #0 failed, not requeued ({error}); slurm.yaml's `requeue: true` prevents this")

    def finish(self, case: Case, sweep: Sweep, code: int, how: str) -> str:
        """The interrupted job finished from its checkpoint, with the uninterrupted run's pattern, bitwise."""
        job = case.job_ids[0]
        log = sweep.job_log(job)
        timing = finished_records(sweep, [0])[0].get("timing", {})
        if code != 0:
            raise CheckFailed(f"launcher exit {code} (log: {sweep.log})")
        if "#SBATCH --requeue" not in submission(sweep, job):
            raise CheckFailed(f"no #SBATCH --requeue in job {job}'s sbatch script")
        comparison = compare_to_reference(sweep, self.reference())
        self.comparisons.append(comparison)
        stopped = re.search(r"interrupted by SIGUSR2 at (epoch \d+, step \d+)", log)
        resumed = re.search(r"resuming from \S+: (epoch \d+, batch \d+, step \d+)", log)
        total = PREEMPT_EPOCHS * FIT_IMAGES // BATCH
        return (f"{how.format(at=stopped.group(1) if stopped else '?')} -> SLURM Restarts="
                f"{job_field(self.env, job, 'Restarts')} -> resumed at {resumed.group(1) if resumed else '?'} of "
                f"{total} steps -> finished in {timing.get('fit_segments', '?')} segments; pattern bitwise equal "
                "to the uninterrupted run's")


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {s}" for s, n in counts.items())


# ---------------------------------------------------------------------------------------------
# Report

def table(cases: list[Case]) -> list[str]:
    rows = ["| case | outcome | SLURM job ids | wall s | details |", "|---|---|---|---|---|"]
    for c in cases:
        rows.append(f"| {c.name} | {'ok' if c.ok else '**FAILED**'} | {', '.join(c.job_ids) or '-'} | "
                    f"{c.wall_s:.0f} | {short(c.outcome).replace('|', '/')} |")
    return rows


def versions(env: dict[str, str]) -> str:
    import submitit

    slurm_v = slurm(env, "sinfo", "--version").strip() or "slurm ?"
    plugin_v = importlib.metadata.version("hydra-submitit-launcher")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                           text=True).stdout.strip()
    return (f"{slurm_v}, submitit {submitit.__version__}, hydra-submitit-launcher {plugin_v}, "
            f"torch {torch.__version__}, Python {platform.python_version()}, commit {commit.stdout.strip() or '?'}"
            f"{' with uncommitted changes' if dirty else ''}")


#: slurm.conf keys shown in the report: the ones that decide how jobs are signalled, requeued and placed
CONF_KEYS = re.compile(r"^(SelectType|ProctrackType|TaskPlugin|Preempt|SlurmctldParameters|AuthInfo|KillWait|"
                       r"NodeName|PartitionName)")

CASE_TEXT = [
    "- **sweep**: 4 tiny jobs (`model=tiny dataset=synthetic logger=none`, 64 images, 1 epoch, seeds 0-3).",
    "- **rerun**: the same sweep into the same `hydra.sweep.dir`: every job skips its finished record.",
    f"- **failure**: 3 jobs, `xi={BAD_XI}` in the middle one only.",
    f"- **time_limit**: a fit of about {TIMEOUT_FIT_RATIO} x its limit (`timeout_min={TIMEOUT_MIN}`; the epochs "
    "sized from the reference fit's speed): SLURM sends the job's `--signal=USR2@signal_delay_s` before the "
    "limit; submitit counts it against `max_num_timeout` and requeues.",
    f"- **preemption**: a {PREEMPT_EPOCHS}-epoch fit in the preemptible partition; once it is mid-fit an `urgent` "
    "job asks for the whole node. SLURM preempts it (PreemptMode=REQUEUE; `preempt_send_user_signal`: the job's "
    "`--signal`, USR2, goes to its srun step, where submitit's handler lives), the app checkpoints, submitit calls "
    "`scontrol requeue`, the job waits out `cred_expire` and resumes. Compared with the same fit run "
    "uninterrupted (`reference`).",
    "- **term_then_usr2**: submitit's own preemption sequence (`SlurmJob._interrupt`: `scancel --signal=TERM`, "
    "then `--signal=USR2`), 1 s apart.",
    "- **term_then_requeue**: a cluster without `preempt_send_user_signal`: SIGTERM, then SLURM requeues the job "
    "itself (here `scontrol requeue` 2 s later); it resumes from its last periodic checkpoint.",
    "- **without_requeue_flag**: the control for slurm.yaml's `additional_parameters: {requeue: true}`: the same "
    "fit without it, USR2. The cluster has `JobRequeue=0`, so SLURM must refuse submitit's `scontrol requeue`.",
]


NOT_SHOWN = [
    "- GPUs: no gres here (`gpus_per_node=0`); SLURM's `CUDA_VISIBLE_DEVICES`, cgroup device limits and a resumed "
    "fit on a GPU (equal to the uninterrupted one only up to float rounding, not bitwise) are not exercised.",
    "- Another node: every requeue lands on the same node and the same local disk; on a cluster the sweep dir must "
    "be on a filesystem all nodes see (the checkpoint's atomic rename on NFS/Lustre is not tested here).",
    "- Multi-node and multi-task jobs (`nodes` > 1, `tasks_per_node` > 1; submitit requeues from rank 0 only): the "
    "app runs one task a job.",
    "- Accounting: no slurmdbd, so `sacct` fails and submitit's watcher sees every job as UNKNOWN (its launcher "
    "logs `Bypassing sacct error` and relies on the result files): a job that dies without writing one (OOM kill, "
    "node failure) would keep the launcher waiting instead of being reported failed.",
    "- Site policy: accounts and QOS limits (`AccountingStorageEnforce`), partition time limits, "
    "QOS-based preemption, cgroup CPU/memory enforcement (`task/cgroup`).",
]


def short(text: str) -> str:
    """Paths relative to the repository, so the report reads the same on every checkout."""
    return text.replace(f"{REPO}/", "")


def report(check: Check, total_s: float, node: str) -> str:
    cases = list(check.cases.values())
    conf = slurm_local.layout_from_env().conf
    conf_lines = [line for line in conf.read_text().splitlines() if CONF_KEYS.match(line)] if conf.exists() else []
    lines = [
        "# `hydra/launcher=slurm` on a real SLURM cluster",
        "",
        "Written by `make cluster-check` (`experiments/cluster_check.py`; needs root): a one-node SLURM cluster on "
        f"this machine ({node}; `scripts/slurm_local.py`). Every job is submitted by the real submitit SLURM "
        "executor with `conf/hydra/launcher/slurm.yaml` as it is, plus the overrides a user sets for a site: "
        f"`{' '.join(SITE)}` (the partition and this node's size) and, in the time-limit case, "
        f"`hydra.launcher.timeout_min={TIMEOUT_MIN} hydra.launcher.signal_delay_s={SIGNAL_DELAY_S}`.",
        "",
        f"{versions(check.env)}.",
        "",
        "## Result",
        "",
        f"**{sum(c.ok for c in cases)} of {len(cases)} cases ok**, {total_s:.0f} s wall in all. Phase 1 runs the "
        "reference fit and every case but preemption at once on the node's 2 job slots (a case's wall time "
        "includes its jobs' waits for a slot and, after a requeue, SLURM's `cred_expire`); phase 2 runs the "
        "preemption alone, so the urgent job has exactly one job to preempt.",
        "",
        *table(cases),
        "",
        *CASE_TEXT,
        "",
        "## Bitwise comparison with the uninterrupted run",
        "",
        *[f"- {c}" for c in check.comparisons],
        "",
        "## The cluster",
        "",
        "```",
        *conf_lines,
        "```",
    ]
    for name, title in (("preemption", "Preemption: checkpoint -> requeue -> resume in the job's log"),
                        ("term_then_usr2", "TERM, then USR2: the job's log"),
                        ("term_then_requeue", "TERM, then SLURM's requeue: the job's log"),
                        ("time_limit", "Time limit: the job's log"),
                        ("without_requeue_flag", "Without `--requeue`: the job's log")):
        lines += ["", f"## {title}", "", "```", *check.stories.get(name, ["(no log)"]), "```"]
        if check.cases[name].notes:
            lines += ["", "The driver and slurmctld:", "", "```", *check.cases[name].notes, "```"]
    if check.cases["failure"].notes:
        lines += ["", "## The failed job, as the launcher reports it", "", "```", *check.cases["failure"].notes,
                  "```"]
    return short("\n".join([*lines, "", "## What one node does not show", "", *NOT_SHOWN])) + "\n"


# ---------------------------------------------------------------------------------------------

def job_env(layout: slurm_local.Layout, work: Path) -> dict[str, str]:
    """The launchers' environment, which sbatch passes on to the jobs: this cluster, outputs under ``work``, one
    thread a job (the node has one CPU per job slot and no CPU binding), no W&B."""
    return {**slurm_local.client_env(layout), "DP_OUTPUT_DIR": str(work / "outputs"), "OMP_NUM_THREADS": "1",
            "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "100000000000", "PYTHONUNBUFFERED": "1",
            "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--report", type=Path, default=REPORT, help=f"Markdown report (default {REPORT})")
    parser.add_argument("--work", type=Path, default=None, help="sweep dirs (default outputs/cluster_check/<time>)")
    args = parser.parse_args(argv)
    layout = slurm_local.layout_from_env()
    was_up = all(slurm_local.alive(slurm_local.load_registry(layout).get(d), d) for d in slurm_local.DAEMONS)
    try:
        slurm_local.up(layout)
    except slurm_local.ClusterError as exc:
        print(f"cluster-check: error: {exc}", file=sys.stderr)
        return 2
    work = (args.work or REPO / "outputs" / "cluster_check" / time.strftime("%Y-%m-%d_%H-%M-%S")).resolve()
    node = (f"node `{slurm_local.node_name()}`, {os.cpu_count()} CPUs, {slurm_local.memory_mb()} MB, no GPU; "
            "partitions `cpu` (default, preemptible) and `urgent`")
    start = time.time()
    check = Check(work, job_env(layout, work))
    try:
        check.run()
    finally:
        if not was_up:
            slurm_local.down(layout)
    total = time.time() - start
    text = report(check, total, node)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(text)
    (work / "README.md").write_text(text)
    print("\n".join(table(list(check.cases.values()))))
    print(f"cluster-check: {sum(c.ok for c in check.cases.values())}/{len(check.cases)} ok, {total:.0f} s; "
          f"report {args.report}, sweeps in {work}")
    return 0 if all(c.ok for c in check.cases.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
