"""The run directory: one writer at a time, no foreign files replaced, clear I/O errors.

* :class:`RunLock` holds an OS lock (``fcntl.flock``) on ``OUTPUT/.proseco.lock`` for the life of a
  run. The kernel drops it when the process ends, however it ends (``kill -9`` included), so a
  crashed run never blocks the next one, while a second live run into the same directory is
  refused with the holder's pid, host, start time and command (written into the lock file).
* :func:`inspect_run_dir` tells a proseco run from a directory holding someone else's files;
  training refuses to write into a non-empty directory that is not a run.
* :func:`atomic_write_text` writes a temporary file and renames it over the target, so a kill
  leaves either the old or the new content, never a truncated file.
* :func:`writing` turns low-level write failures (``OSError``, and the ``RuntimeError`` s that
  ``torch.save`` raises on a full disk) into an :class:`~proseco.errors.OutputError` naming the
  path and the cause (no space left, read-only, permission denied...).
* :func:`fault_point` is a testing hook: ``PROSECO_FAULT=NAME`` kills the process with SIGKILL at
  the point named ``NAME`` (``metrics-rewrite``), to check that a crash there loses nothing.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from proseco.errors import OutputError
from proseco.fileio import FAULT_ENV, atomic_write_text, fault_point, output_error, writing

__all__ = [
    "LOCK_FILE",
    "CHECKPOINTS",
    "STATE_FILE",
    "METRICS_FILE",
    "list_checkpoints",
    "FAULT_ENV",
    "RunLock",
    "RunDirState",
    "inspect_run_dir",
    "refuse_foreign",
    "atomic_write_text",
    "writing",
    "output_error",
    "fault_point",
]

LOCK_FILE = ".proseco.lock"
CHECKPOINTS = "checkpoints"  # OUTPUT/checkpoints/step-N/
STATE_FILE = "trainer_state.json"  # written last: a checkpoint directory with it is complete
METRICS_FILE = "metrics.jsonl"
_CHECKPOINT_NAME = re.compile(r"^step-(\d+)$")


@dataclass
class RunDirState:
    """What :func:`inspect_run_dir` found.

    Attributes:
        exists: the directory exists.
        entries: its entries, except the lock file.
        is_run: it holds a proseco run (a lock file or a ``config.yaml`` that is a recipe).
        checkpoints: step numbers of its complete checkpoints.
        has_final: ``final/`` exists.
        has_metrics: ``metrics.jsonl`` holds at least one record.
    """

    exists: bool
    entries: list[str] = field(default_factory=list)
    is_run: bool = False
    checkpoints: list[int] = field(default_factory=list)
    has_final: bool = False
    has_metrics: bool = False

    @property
    def empty(self) -> bool:
        return not self.entries

    @property
    def has_progress(self) -> bool:
        """Anything a restart would lose: checkpoints, an export, or logged metrics."""
        return bool(self.checkpoints) or self.has_final or self.has_metrics

    def describe(self) -> str:
        parts = []
        if self.checkpoints:
            parts.append(f"checkpoints up to step {max(self.checkpoints)}")
        if self.has_final:
            parts.append("final/")
        if self.has_metrics:
            parts.append("metrics.jsonl")
        return ", ".join(parts) or ", ".join(self.entries)


def refuse_foreign(found: RunDirState, path: str | Path) -> None:
    """Raise :class:`OutputError` if ``found`` is a non-empty directory that is not a run."""
    if found.exists and not found.empty and not found.is_run:
        shown = ", ".join(found.entries[:5]) + (", ..." if len(found.entries) > 5 else "")
        raise OutputError(
            f"{path} is not empty and does not hold a proseco run (it holds {shown}); proseco "
            "never writes into a directory with other files: choose a new or empty --output-dir"
        )


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints ``(step, path)`` under ``output_dir``, oldest first."""
    root = Path(output_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _CHECKPOINT_NAME.match(path.name)
        if match and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def _is_recipe(path: Path) -> bool:
    from proseco.training.config_io import load_config

    try:
        load_config(path)
    except (ValueError, OSError):
        return False
    return True


def inspect_run_dir(path: str | Path) -> RunDirState:
    """Look at ``path`` without changing it.

    Raises:
        OutputError: ``path`` is a file, or cannot be listed.
    """
    path = Path(path)
    if not path.exists():
        return RunDirState(exists=False)
    if not path.is_dir():
        raise OutputError(
            f"the output directory {path} is an existing file, not a directory; choose another "
            "--output-dir"
        )
    try:
        names = sorted(os.listdir(path))
    except OSError as err:
        raise output_error(err, path) from err
    entries = [n for n in names if n != LOCK_FILE]
    metrics = path / METRICS_FILE
    try:
        has_metrics = metrics.is_file() and metrics.stat().st_size > 0
    except OSError:
        has_metrics = False
    return RunDirState(
        exists=True,
        entries=entries,
        is_run=LOCK_FILE in names or _is_recipe(path / "config.yaml"),
        checkpoints=[s for s, _ in list_checkpoints(path)],
        has_final=(path / "final").is_dir(),
        has_metrics=has_metrics,
    )


# ------------------------------------------------------------------------------------ the lock
def _holder_text(raw: str) -> str:
    try:
        info = json.loads(raw)
        text = f"pid {info['pid']} on host {info['host']}, started {info['started']}"
    except (ValueError, KeyError, TypeError):
        return "another process (it has not written its details yet)"
    if info.get("command"):
        text += f": {info['command']}"
    return text


class RunLock:
    """An exclusive ``flock`` on ``DIR/.proseco.lock``, held until :meth:`release` or exit.

    Args:
        directory: the run directory (created if missing, on :meth:`acquire`).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self._fd: int | None = None
        self._created_dir = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise :class:`OutputError` naming the run that holds it."""
        import fcntl

        if self._fd is not None:
            return
        with writing(self.directory):
            if not self.directory.exists():
                self.directory.mkdir(parents=True)
                self._created_dir = True
        while True:
            with writing(self.directory):
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                holder = os.pread(fd, 4096, 0).decode(errors="replace")
                os.close(fd)  # the holder's lock file stays: removing it would let a third run in
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise OutputError(
                        f"{self.directory} is in use by another proseco run "
                        f"({_holder_text(holder)}); wait for it to end or stop it, or choose "
                        "another --output-dir"
                    ) from None
                raise OutputError(
                    f"cannot lock {self.path} ({os.strerror(err.errno or 0)}); the file system "
                    "does not support file locks, choose a local --output-dir"
                ) from None
            # the holder before us may have removed the file while we waited: lock the new one
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "command": " ".join(sys.argv),
        }
        try:
            with writing(self.path):
                os.ftruncate(fd, 0)
                os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        except BaseException:
            os.close(fd)
            self._cleanup_dir()
            raise
        self._fd = fd

    def _cleanup_dir(self) -> None:
        """Leave no trace of a run that wrote nothing: remove a lone lock file and a new dir."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return
        try:
            if names == [LOCK_FILE]:
                self.path.unlink()
                names = []
            if not names and self._created_dir:
                self.directory.rmdir()
        except OSError:
            pass

    def release(self) -> None:
        """Drop the lock (a lock file that is the directory's only content is removed first)."""
        if self._fd is None:
            return
        self._cleanup_dir()
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
