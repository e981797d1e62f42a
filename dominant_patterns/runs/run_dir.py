"""A run's output dir: owned by one process at a time, written atomically, essential files before optional ones.

* :func:`own_run_dir` takes ``run.lock`` (an ``flock`` held for the job's life, with the owner's pid, host,
  start time and command written in it). A second process is refused with a message naming the first; a
  lock left by a dead process (the kernel drops an ``flock`` when its holder dies, even after SIGKILL) is
  taken over with a log line. Where the file system has no ``flock``, a lock file of a dead pid on this host
  is taken over and one of another host is refused with the command to remove it.
* :func:`atomic_write_text` / :func:`write_essential` / :func:`write_optional`: every file is written through
  a unique temp file and renamed into place. An essential file (``metrics.json``, ``pattern.pt``) that cannot
  be written stops the run with one line naming the path and the free space (:class:`StorageError`); an
  optional one (pictures, ``summary.md``) is a warning.
* :func:`remove_leftovers`: temp files a killed write left in the dir are removed by the next owner.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from dominant_patterns.core.atomic import atomic_write_text
from dominant_patterns.core.errors import StorageError, UserInputError

log = logging.getLogger(__name__)

LOCK = "run.lock"
T = TypeVar("T")


class RunDirBusy(UserInputError):
    """Another live process owns the run dir."""


# ---------------------------------------------------------------------------------------------
# Free space and writes


def free_space(path: Path) -> str:
    """Free space of the file system holding ``path`` (or its nearest existing parent), for messages."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return "unknown"
    return f"{free / 2**20:.1f} MiB"


def storage_error(path: Path, exc: OSError) -> StorageError:
    """One line naming the file, the OS error and the free space left."""
    reason = exc.strerror or str(exc)
    return StorageError(f"could not write {path}: {reason} ({free_space(path)} free on that file system)")


def write_essential(path: Path, write: Callable[[], T]) -> T:
    """Run ``write()`` (an atomic writer of ``path``); an OS error becomes a one-line :class:`StorageError`."""
    try:
        return write()
    except OSError as exc:
        raise storage_error(Path(path), exc) from None


def write_optional(path: Path, write: Callable[[], T], what: str = "") -> T | None:
    """Run ``write()``; any failure is a warning naming the file (the run's results are already safe)."""
    try:
        return write()
    except Exception as exc:  # noqa: BLE001 - an optional picture must never end a run
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"
        log.warning("could not write %s%s: %s (%s free); the run's results are kept", path,
                    f" ({what})" if what else "", reason, free_space(Path(path)))
        return None


def set_aside(path: Path, suffix: str) -> Path:
    """Rename ``path`` to ``path<suffix>`` (``<suffix>.1``, ``.2``, ... when taken); returns the new path."""
    target = path.with_name(path.name + suffix)
    n = 0
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}{suffix}.{n}")
    path.replace(target)
    return target


def remove_leftovers(out_dir: Path) -> list[Path]:
    """Remove temp files a killed write left in ``out_dir`` (and its ``seed_*`` folders); call as its owner."""
    removed = []
    folders = [out_dir, *sorted(p for p in out_dir.glob("seed_*") if p.is_dir())]
    for folder in folders:
        for tmp in folder.glob("*.tmp"):
            if tmp.is_file():
                with contextlib.suppress(OSError):
                    tmp.unlink()
                    removed.append(tmp)
    if removed:
        log.info("removed %d temp file(s) left by an interrupted write: %s", len(removed),
                 ", ".join(p.name for p in removed))
    return removed


# ---------------------------------------------------------------------------------------------
# Ownership


def _owner_text() -> str:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                       "command": " ".join(sys.argv)[:500]})


def _read_owner(path: Path) -> dict[str, Any]:
    try:
        owner = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _describe(owner: dict[str, Any]) -> str:
    if not owner:
        return "another process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("started", 0)))
    return f"pid {owner.get('pid')} on {owner.get('host')} (since {started}: {owner.get('command', '?')})"


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError):
        return True
    return True


def _busy(out_dir: Path, owner: dict[str, Any]) -> RunDirBusy:
    return RunDirBusy(f"{out_dir} is in use by {_describe(owner)}; wait for it to finish, or run into another dir "
                      "(hydra.run.dir=... / hydra.sweep.dir=...)")


@contextlib.contextmanager
def own_run_dir(out_dir: Path) -> Iterator[Path]:
    """Hold ``out_dir/run.lock`` for the ``with`` block (see the module docstring); yields the lock's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / LOCK
    fd = _lock_flock(out_dir, path)
    try:
        yield path
    finally:
        if fd is not None:
            with contextlib.suppress(OSError):
                path.unlink()
            os.close(fd)
        else:
            with contextlib.suppress(OSError):
                path.unlink()


def _lock_flock(out_dir: Path, path: Path) -> int | None:
    """The fd holding ``flock`` on ``path`` with our owner line in it; None when locked by the fallback."""
    import fcntl

    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise storage_error(path, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _busy(out_dir, _read_owner(path)) from None
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                _lock_exclusive_file(out_dir, path)
                return None
            raise storage_error(path, exc) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the previous owner removed the file after we opened it: lock the new one
            os.close(fd)
            continue
        previous = _read_owner(path)
        if previous and previous.get("pid") != os.getpid():
            log.warning("taking over %s from %s, which is no longer running", path, _describe(previous))
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, _owner_text().encode(), 0)
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise storage_error(path, exc) from None
        return fd


def _lock_exclusive_file(out_dir: Path, path: Path) -> None:
    """The fallback where ``flock`` is missing: an owner file of a dead pid on this host is taken over."""
    owner = _read_owner(path)
    if owner:
        if owner.get("host") != socket.gethostname():
            raise RunDirBusy(f"{out_dir} is locked by {_describe(owner)} and this file system cannot tell whether "
                             f"it still runs; if it does not, remove {path} and rerun")
        if _pid_alive(owner.get("pid")) and owner.get("pid") != os.getpid():
            raise _busy(out_dir, owner)
        log.warning("taking over %s from %s, which is no longer running", path, _describe(owner))
    write_essential(path, lambda: atomic_write_text(path, _owner_text()))
