#!/usr/bin/env python3
"""A one-node SLURM cluster on this machine, for testing ``hydra/launcher=slurm`` against a real scheduler.

    python3 scripts/slurm_local.py up        # install the Debian packages if missing, start munged/slurmctld/slurmd
    python3 scripts/slurm_local.py status    # the daemons, the node, the queue
    python3 scripts/slurm_local.py down      # cancel the cluster's jobs, stop exactly the daemons ``up`` started
    export SLURM_CONF=$(python3 scripts/slurm_local.py conf)   # then sinfo, sbatch, squeue ... talk to it

Needs root (slurmd runs jobs as their users; ``SlurmUser=root``) and Debian's ``slurmctld slurmd slurm-client
munge`` (installed with apt-get when missing). No systemd: the daemons are started by hand with every path
(config, munge key and socket, state, spool, logs, pid files) under one state dir, ``$DP_SLURM_DIR`` (default
``/tmp/dp-slurm``), so nothing in /etc is touched and another munge or SLURM on the machine is left alone.

The node is this machine as it is: its ``hostname -s``, its CPUs and 95 % of its memory, no GPU. Partitions:
``cpu`` (default, preemptible: PreemptMode=REQUEUE with a grace time in which the job gets its ``--signal``,
``preempt_send_user_signal``) and ``urgent`` (a higher priority tier: its jobs preempt ``cpu`` jobs, and are
never preempted). Ports: ``$DP_SLURM_PORT`` (slurmctld, default 6817) and the next one (slurmd).

slurmd runs at nice 10, and so do the jobs it starts. Idempotent: ``up`` on a running cluster only waits for the
node; ``down`` on a stopped one does nothing. Each daemon's pid and start time are kept in ``daemons.json``;
``down`` signals a pid only while it is still that process (same start time and command), so a reused pid is
never hit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
#: binary -> the Debian package that ships it
BINARIES = {"slurmctld": "slurmctld", "slurmd": "slurmd", "sbatch": "slurm-client", "sinfo": "slurm-client",
            "scontrol": "slurm-client", "munged": "munge", "mungekey": "munge"}
DEFAULT_DIR = "/tmp/dp-slurm"
DEFAULT_PORT = 6817
DAEMONS = ("munged", "slurmctld", "slurmd")
#: Seconds a preempted ``cpu`` job keeps running after its ``--signal`` (submitit's USR2) before SLURM kills it.
GRACE_S = 60
#: How long a requeued job waits before it may start again (SLURM's ``cred_expire``; its default is 120 s).
CRED_EXPIRE_S = 30
COMMANDS = ("up", "down", "status", "conf")
#: Niceness of slurmd and so of every job (jobs are background work here).
NICE = 10


class ClusterError(RuntimeError):
    """The cluster cannot be brought up or down; the message says why in one line."""


@dataclass(frozen=True)
class Layout:
    """Every path of the cluster, under one state dir."""

    root: Path
    port: int

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def key(self) -> Path:
        return self.root / "munge" / "munge.key"

    @property
    def socket(self) -> Path:
        return self.root / "run" / "munge.socket"

    @property
    def registry(self) -> Path:
        return self.root / "daemons.json"

    def pid_file(self, daemon: str) -> Path:
        return self.root / "run" / f"{daemon}.pid"

    def log(self, daemon: str) -> Path:
        return self.root / "log" / f"{daemon}.log"


def layout_from_env() -> Layout:
    """The layout named by ``$DP_SLURM_DIR`` and ``$DP_SLURM_PORT``."""
    port_text = os.environ.get("DP_SLURM_PORT", str(DEFAULT_PORT))
    if not port_text.isdigit() or not 1024 <= int(port_text) <= 65534:
        raise ClusterError(f"DP_SLURM_PORT={port_text!r} is not a port; valid: 1024-65534 (slurmd takes the next)")
    return Layout(Path(os.environ.get("DP_SLURM_DIR", DEFAULT_DIR)).resolve(), int(port_text))


def client_env(layout: Layout) -> dict[str, str]:
    """``os.environ`` with ``SLURM_CONF`` pointing at this cluster (sbatch passes it on to the jobs)."""
    return {**os.environ, "SLURM_CONF": str(layout.conf)}


# ---------------------------------------------------------------------------------------------
# Packages

def missing_binaries() -> list[str]:
    return [name for name in BINARIES if shutil.which(name) is None and not Path("/usr/sbin", name).exists()]


def ensure_packages() -> None:
    """Install Debian's SLURM and munge packages with apt-get when a binary is missing."""
    missing = missing_binaries()
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ClusterError(f"{', '.join(missing)} missing and cannot be installed here (needs root and apt-get): "
                           f"apt-get install {' '.join(PACKAGES)}")
    print(f"slurm_local: installing {' '.join(PACKAGES)} (missing: {', '.join(missing)})", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
            raise ClusterError(f"cannot install {' '.join(PACKAGES)}: {' '.join(cmd[:2])} failed: {last}")
    if missing_binaries():
        raise ClusterError(f"apt-get installed {' '.join(PACKAGES)} but {', '.join(missing_binaries())} is missing")


def binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


# ---------------------------------------------------------------------------------------------
# The node and its config

def node_name() -> str:
    return socket.gethostname().split(".")[0]


def memory_mb() -> int:
    """95 % of this machine's memory in MB (SLURM drains a node that has less than it is configured with)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(int(line.split()[1]) / 1024 * 0.95)
    raise ClusterError("cannot read MemTotal from /proc/meminfo")


def slurm_conf(layout: Layout) -> str:
    """The one-node slurm.conf of this machine."""
    root, node = layout.root, node_name()
    lines = [
        "# Written by scripts/slurm_local.py: a one-node cluster for testing; every path under its state dir.",
        "ClusterName=dplocal",
        f"SlurmctldHost={node}(127.0.0.1)",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"SlurmctldPort={layout.port}",
        f"SlurmdPort={layout.port + 1}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={layout.socket},cred_expire={CRED_EXPIRE_S}",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={layout.pid_file('slurmctld')}",
        f"SlurmdPidFile={layout.pid_file('slurmd')}",
        f"SlurmctldLogFile={layout.log('slurmctld')}",
        f"SlurmdLogFile={layout.log('slurmd')}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "MpiDefault=none",
        "SwitchType=switch/none",
        "ReturnToService=2",
        "SchedulerParameters=sched_interval=5,bf_interval=5",
        "PreemptType=preempt/partition_prio",
        "PreemptMode=REQUEUE",
        "SlurmctldParameters=preempt_send_user_signal",
        "JobRequeue=0",  # stricter than SLURM's default 1: only jobs submitted with --requeue may be requeued
        "KillWait=10",  # SIGTERM -> SIGKILL when SLURM ends or requeues a job (its default is 30 s)
        "MinJobAge=600",
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 1} RealMemory={memory_mb()} State=UNKNOWN",
        f"PartitionName=cpu Nodes={node} Default=YES MaxTime=INFINITE State=UP PriorityTier=1 "
        f"PreemptMode=REQUEUE GraceTime={GRACE_S}",
        f"PartitionName=urgent Nodes={node} MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF",
    ]
    return "\n".join(lines) + "\n"


def prepare_dirs(layout: Layout) -> None:
    """The state dir's folders (munged wants its key private and its socket dir open) and the munge key."""
    for sub, mode in (("etc", 0o755), ("munge", 0o700), ("run", 0o755), ("log", 0o755), ("state", 0o755),
                      ("spool", 0o755)):
        path = layout.root / sub
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
    if not layout.key.exists():
        run_checked([binary("mungekey"), "--create", f"--keyfile={layout.key}"], "mungekey")
    layout.conf.write_text(slurm_conf(layout))


def run_checked(cmd: list[str], what: str, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}").splitlines()[-1]
        raise ClusterError(f"{what} failed: {last}")


# ---------------------------------------------------------------------------------------------
# Processes

def start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def command_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def load_registry(layout: Layout) -> dict[str, dict[str, int]]:
    try:
        return json.loads(layout.registry.read_text())
    except (OSError, ValueError):
        return {}


def alive(entry: dict[str, int] | None, daemon: str) -> bool:
    """True while the registered process still runs (same pid, start time and daemon name)."""
    if not entry:
        return False
    return start_time(entry["pid"]) == entry["start"] and daemon in command_of(entry["pid"])


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def check_port(port: int, daemon: str) -> None:
    if not port_free(port):
        raise ClusterError(f"port {port} ({daemon}) is taken by another process; stop it or choose other ports "
                           f"with DP_SLURM_PORT=N (slurmctld N, slurmd N+1)")


def log_tail(layout: Layout, daemon: str, lines: int = 3) -> str:
    try:
        text = layout.log(daemon).read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return " | ".join(text[-lines:]) or "empty log"


def start_daemon(layout: Layout, daemon: str, registry: dict[str, dict[str, int]]) -> None:
    """Start ``daemon`` (it forks into the background and writes its pid file) unless ours already runs."""
    if alive(registry.get(daemon), daemon):
        return
    if daemon == "munged":
        cmd = [binary("munged"), f"--key-file={layout.key}", f"--socket={layout.socket}",
               f"--pid-file={layout.pid_file(daemon)}", f"--log-file={layout.log(daemon)}",
               f"--seed-file={layout.root / 'munge' / 'munged.seed'}"]
    elif daemon == "slurmctld":
        cmd = [binary("slurmctld"), "-c", "-f", str(layout.conf)]  # -c: no jobs from an earlier cluster
    else:  # jobs inherit slurmd's niceness: they yield to interactive work on a shared machine
        cmd = ["nice", "-n", str(NICE), binary("slurmd"), "-f", str(layout.conf)]
    layout.pid_file(daemon).unlink(missing_ok=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=client_env(layout))
    pid = wait_for_pid(layout, daemon)
    if proc.returncode != 0 or pid is None:
        detail = (proc.stderr.strip().splitlines() or [log_tail(layout, daemon)])[-1]
        raise ClusterError(f"{daemon} did not start: {detail} (log: {layout.log(daemon)})")
    registry[daemon] = {"pid": pid, "start": start_time(pid) or 0}
    layout.registry.write_text(json.dumps(registry, indent=1))


def wait_for_pid(layout: Layout, daemon: str, timeout: float = 15) -> int | None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            pid = int(layout.pid_file(daemon).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pid = 0
        if pid and start_time(pid) is not None:
            return pid
        time.sleep(0.2)
    return None


def node_state(layout: Layout) -> str:
    proc = subprocess.run(["sinfo", "-h", "-N", "-n", node_name(), "-o", "%T"], capture_output=True, text=True,
                          env=client_env(layout), timeout=30)
    return (proc.stdout.strip().splitlines() or ["unknown"])[0]


def wait_idle(layout: Layout, timeout: float = 90) -> None:
    """Wait until the node is schedulable (idle, or already running jobs of this cluster)."""
    deadline, state = time.time() + timeout, "unknown"
    while time.time() < deadline:
        state = node_state(layout)
        if state in ("idle", "mixed", "allocated"):
            return
        time.sleep(1)
    raise ClusterError(f"node {node_name()} is {state!r}, not idle, after {timeout:.0f} s "
                       f"(slurmd log: {log_tail(layout, 'slurmd')})")


# ---------------------------------------------------------------------------------------------
# Commands

def up(layout: Layout) -> None:
    """Install, configure and start the cluster, then wait for the node; a running cluster is left as it is."""
    if os.geteuid() != 0:
        raise ClusterError("slurm_local needs root (slurmd runs the jobs; SlurmUser=root); run it with sudo")
    ensure_packages()
    registry = load_registry(layout)
    running = [d for d in DAEMONS if alive(registry.get(d), d)]
    if len(running) < len(DAEMONS):
        for daemon, port in (("slurmctld", layout.port), ("slurmd", layout.port + 1)):
            if daemon not in running:
                check_port(port, daemon)
        if not running:
            prepare_dirs(layout)
        try:
            for daemon in DAEMONS:
                start_daemon(layout, daemon, registry)
            wait_idle(layout)
        except ClusterError:
            down(layout, quiet=True)  # stop what this call started (and anything left of an earlier one)
            raise
    wait_idle(layout)
    print(f"slurm_local: up, node {node_name()} {node_state(layout)} "
          f"({os.cpu_count()} CPUs, {memory_mb()} MB); export SLURM_CONF={layout.conf}", flush=True)


def cancel_jobs(layout: Layout, timeout: float = 90) -> None:
    """Cancel every job of this cluster and wait until they are gone (their slurmstepd exit with them)."""
    env = client_env(layout)
    subprocess.run(["scancel", "--full", "--user", "root"], capture_output=True, env=env, timeout=30)
    deadline = time.time() + timeout
    while time.time() < deadline:
        proc = subprocess.run(["squeue", "-h", "-t", "running,completing,pending,requeued", "-o", "%i"],
                              capture_output=True, text=True, env=env, timeout=30)
        if proc.returncode != 0 or not proc.stdout.strip():
            return
        time.sleep(1)
    print(f"slurm_local: warning: jobs still listed after {timeout:.0f} s: {proc.stdout.split()}", file=sys.stderr)


def stop_process(entry: dict[str, int], daemon: str, timeout: float = 20) -> None:
    """SIGTERM the registered process, SIGKILL it if it is still that process after ``timeout``."""
    pid = entry["pid"]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not alive(entry, daemon):
            return
        os.kill(pid, sig)
        deadline = time.time() + timeout
        while time.time() < deadline and alive(entry, daemon):
            time.sleep(0.2)
    if alive(entry, daemon):
        raise ClusterError(f"{daemon} (pid {pid}) did not stop")


def down(layout: Layout, quiet: bool = False) -> None:
    """Cancel the cluster's jobs, then stop the daemons ``up`` started (slurmd, slurmctld, munged), by pid."""
    registry = load_registry(layout)
    if not any(alive(registry.get(d), d) for d in DAEMONS):
        layout.registry.unlink(missing_ok=True)
        if not quiet:
            print("slurm_local: not running", flush=True)
        return
    if alive(registry.get("slurmctld"), "slurmctld"):
        cancel_jobs(layout)
    for daemon in reversed(DAEMONS):
        if daemon in registry:
            stop_process(registry[daemon], daemon)
    layout.registry.unlink(missing_ok=True)
    stopped = ", ".join(f"{d} ({registry[d]['pid']})" for d in DAEMONS if d in registry)
    if not quiet:
        print(f"slurm_local: stopped {stopped}", flush=True)


def status(layout: Layout) -> bool:
    """Print the daemons, the node and the queue; True when all three daemons run."""
    registry = load_registry(layout)
    states = {d: alive(registry.get(d), d) for d in DAEMONS}
    print("  ".join(f"{d}: {'pid ' + str(registry[d]['pid']) if up_ else 'stopped'}" for d, up_ in states.items()))
    if all(states.values()):
        print(f"node {node_name()}: {node_state(layout)}; SLURM_CONF={layout.conf}")
        subprocess.run(["squeue"], env=client_env(layout))
    return all(states.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", help=f"one of {', '.join(COMMANDS)}")
    args = parser.parse_args(argv)
    try:
        if args.command not in COMMANDS:
            raise ClusterError(f"unknown command {args.command!r}; valid: {', '.join(COMMANDS)}")
        layout = layout_from_env()
        if args.command == "up":
            up(layout)
        elif args.command == "down":
            down(layout)
        elif args.command == "conf":
            print(layout.conf)
        else:
            return 0 if status(layout) else 1
    except ClusterError as exc:
        print(f"slurm_local: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
