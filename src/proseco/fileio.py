"""Writing files without ever leaving a half-written one, and I/O errors that say why.

``with atomic_open(path) as f`` writes to a temporary file beside ``path`` and moves it into place
(``os.replace``, atomic on POSIX) only when the block ends without an error; on an error or a kill
the temporary file is removed (or left as a hidden ``.name.*`` file) and ``path`` keeps its earlier
content. :func:`atomic_write_text` does the same for a string, with a :func:`fault_point` hook
(``PROSECO_FAULT=NAME`` kills the process half way through, for crash tests).

Files written here respect the umask (``0o666 & ~umask``, as ``open`` would create them; a
replaced file keeps its mode), although ``mkstemp`` creates them private (0600);
:func:`apply_umask` does the same for a directory of files written by other libraries
(``safetensors`` also writes 0600).

I/O failures become :class:`~proseco.errors.OutputError` naming the path and the cause (read-only
file system, no space left, permission denied): :func:`output_error` for an ``OSError``,
:func:`writing` around a block (it also recognises ``torch.save``'s bare "unexpected pos" errors
by probing the disk).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from proseco.errors import DataError, OutputError, ProsecoError

__all__ = [
    "FAULT_ENV",
    "apply_umask",
    "atomic_open",
    "atomic_write_text",
    "fault_point",
    "new_file_mode",
    "output_error",
    "BadLine",
    "read_jsonl_objects",
    "writing",
]

FAULT_ENV = "PROSECO_FAULT"

_CAUSES = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (a file size limit was hit)",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied (the directory is read-only for this user)",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a component of the path is a file, not a directory",
    errno.EISDIR: "the path is a directory",
}
_HINTS = {
    errno.ENOSPC: "free some space or choose another --output-dir",
    errno.EDQUOT: "free some space or choose another --output-dir",
    errno.EFBIG: "raise the file size limit (ulimit -f) or choose another --output-dir",
}


def fault_point(name: str) -> None:
    """Testing hook: kill this process with SIGKILL here when ``$PROSECO_FAULT == name``."""
    if os.environ.get(FAULT_ENV) == name:  # pragma: no cover - the process dies
        os.kill(os.getpid(), signal.SIGKILL)


def output_error(err: OSError, path: str | os.PathLike, what: str = "") -> OutputError:
    """An :class:`OutputError` naming ``path`` and the cause of ``err`` (full disk, read-only...)."""
    where = err.filename or path
    cause = _CAUSES.get(err.errno or 0, err.strerror or str(err))
    code = errno.errorcode.get(err.errno or 0)
    cause = f"{cause} ({code})" if code else cause
    hint = _HINTS.get(err.errno or 0, "choose a writable --output-dir")
    what = f"{what} " if what else ""
    return OutputError(f"cannot write {what}{where}: {cause}; {hint}")


def _probe(directory: Path) -> OSError | None:
    """Write and remove 1 MiB in ``directory`` (or its nearest existing parent): the error, if any.

    ``torch.save`` reports a failed write as a ``RuntimeError`` ("unexpected pos ..."), without
    the errno; this finds out whether the disk is full or read-only.
    """
    while not directory.is_dir() and directory != directory.parent:
        directory = directory.parent
    probe = directory / f".proseco-probe-{os.getpid()}"
    try:
        with open(probe, "wb") as f:
            f.write(b"\0" * (1 << 20))
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        return err
    finally:
        with suppress(OSError):
            probe.unlink()
    return None


@contextmanager
def writing(path: str | Path, what: str = "") -> Iterator[None]:
    """Report failed writes under ``path`` as one :class:`OutputError` with the cause."""
    try:
        yield
    except ProsecoError:
        raise
    except OSError as err:
        raise output_error(err, path, what) from err
    except RuntimeError as err:  # torch.save / safetensors on a full disk
        probed = _probe(Path(path))
        if probed is None:
            raise
        raise output_error(probed, path, what) from err


def _umask() -> int:
    """The process's umask (read from ``/proc/self/status`` where it can be, so no thread sees
    it changed; else set and restored)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode(path: str | os.PathLike) -> int:
    """The mode a file written to ``path`` should have: the mode of the file it replaces, else
    ``0o666 & ~umask`` (what ``open`` gives a new file)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~_umask()


def apply_umask(directory: str | os.PathLike) -> None:
    """Give every file under ``directory`` the mode ``0o666 & ~umask`` (for files other
    libraries create private, as ``safetensors`` does)."""
    mode = 0o666 & ~_umask()
    for root, _, files in os.walk(directory):
        for name in files:
            os.chmod(os.path.join(root, name), mode)


def atomic_write_text(path: str | Path, text: str, *, fault: str | None = None) -> Path:
    """Replace ``path`` by ``text`` atomically (temporary file, fsync, ``os.replace``).

    Args:
        fault: a :func:`fault_point` name checked half way through writing the temporary file.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    mode = new_file_mode(path)
    try:
        with open(tmp, "w") as f:
            os.fchmod(f.fileno(), mode)
            half = len(text) // 2
            f.write(text[:half])
            f.flush()
            if fault is not None:
                fault_point(fault)
            f.write(text[half:])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise
    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by a killed writer
        with suppress(OSError):
            stale.unlink()
    return path


# ------------------------------------------------------------------------ what a directory holds


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file that replaces ``path`` when the ``with`` block succeeds.

    Args:
        path: the file to (re)place; its parent directories are created.
        mode: ``"w"`` (text, UTF-8) or ``"wb"``.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a directory; pass a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise output_error(e, path) from None
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as f:
            os.fchmod(f.fileno(), new_file_mode(path))  # mkstemp makes it 0600
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise output_error(e, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class BadLine:
    """One line of a JSONL file that :func:`read_jsonl_objects` cannot use.

    Attributes:
        path, lineno: where it is (1-based line number).
        kind: ``"utf8"`` (not UTF-8), ``"json"`` (not JSON), ``"depth"`` (nested too deeply)
            or ``"object"`` (JSON, but not an object).
        detail: what is wrong (the byte, the JSON parser's message...).
        text: the line as far as it could be decoded.
    """

    path: Path
    lineno: int
    kind: str
    detail: str
    text: str

    def message(self) -> str:
        """The default error message, naming the file and line."""
        where = f"{self.path}:{self.lineno}"
        if self.kind == "utf8":
            return f"{where} is not UTF-8 text ({self.detail}); save the file as UTF-8"
        if self.kind == "json":
            return f"{where} is not valid JSON ({self.detail}); expected one object per line"
        if self.kind == "depth":
            return f"{where} is nested too deeply to read"
        return f"{where} is not a JSON object; expected one per line"


_BLANK = object()


def _parse_line(raw: bytes, path: Path, lineno: int, objects: bool) -> Any:
    """The JSON value of one line, :data:`_BLANK` for a blank one, or the :class:`BadLine`
    saying why there is none."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        detail = f"byte {raw[e.start]:#04x} at column {e.start + 1}"
        return BadLine(path, lineno, "utf8", detail, raw.decode("utf-8", "replace"))
    if not text.strip():
        return _BLANK
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        return BadLine(path, lineno, "json", e.msg, text)
    except RecursionError:
        return BadLine(path, lineno, "depth", "nested too deeply", text)
    if objects and not isinstance(value, dict):
        return BadLine(path, lineno, "object", type(value).__name__, text)
    return value


def read_jsonl_objects(
    path: str | os.PathLike,
    *,
    what: str = "samples file",
    hint: str = "write one with `proseco sample`",
    empty: str | None = "holds no samples; nothing to evaluate",
    objects: bool = True,
    torn_tail: bool = False,
    max_objects: int | None = None,
    opener: Callable[[Path], IO[bytes]] | None = None,
    on_bad_line: Callable[[BadLine], Exception] | None = None,
) -> list[tuple[int, Any]]:
    """``(line number, value)`` for each non-blank line of a JSONL file: the one JSONL reader
    of the package (samples, data records, HumanEval problems, metrics, ``--config``).

    By default (a samples file) a missing file, a line that is not UTF-8, not JSON (or nested
    too deeply) or not an object, and a file without any object are each a
    :class:`~proseco.errors.DataError` naming the file and line.

    Args:
        path: the file.
        what, hint: how a missing file is reported: ``"{what} {path} does not exist; {hint}"``.
        empty: the rest of the message for a file without any value (``None``: allowed).
        objects: refuse values that are not JSON objects.
        torn_tail: skip a last line that ends without a newline and does not parse (a record
            torn by a kill while appending).
        max_objects: stop after this many values (e.g. ``1`` for a file's first record).
        opener: opens ``path`` for reading bytes (``gzip.open`` for ``.gz``; default ``open``).
        on_bad_line: builds the exception for a bad line (default: a ``DataError`` with
            :meth:`BadLine.message`).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} {path} does not exist" + (f"; {hint}" if hint else ""))
    records: list[tuple[int, Any]] = []
    with (opener or open)(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            value = _parse_line(raw, path, lineno, objects)
            if isinstance(value, BadLine):
                if torn_tail and not raw.endswith(b"\n"):  # the last line, cut short
                    break
                if on_bad_line is not None:
                    raise on_bad_line(value)
                raise DataError(value.message())
            if value is not _BLANK:
                records.append((lineno, value))
            if max_objects is not None and len(records) >= max_objects:
                break
    if not records and empty is not None:
        raise DataError(f"{what} {path} {empty}")
    return records
