"""Writing files without ever leaving a half-written one: :func:`atomic_open`, :func:`os_error`.

``with atomic_open(path) as f`` writes to a temporary file beside ``path`` and moves it into place
(``os.replace``, atomic on POSIX) only when the block ends without an error; on an error or a kill
the temporary file is removed (or left as a hidden ``.name.*`` file) and ``path`` keeps its earlier
content. I/O failures become :class:`~proseco.errors.OutputError` naming the path and the cause
(read-only file system, no space left, permission denied).
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from proseco.errors import OutputError

__all__ = ["atomic_open", "os_error"]

_CAUSES = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOTDIR: "a parent of it is a file, not a directory",
    errno.EISDIR: "it is a directory",
}


def os_error(path: str | os.PathLike, error: OSError, action: str = "write") -> OutputError:
    """An :class:`OutputError` saying which ``path`` failed and why (disk full, read-only...)."""
    cause = _CAUSES.get(error.errno or -1, error.strerror or str(error))
    return OutputError(f"cannot {action} {os.fspath(path)}: {cause}")


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
        raise os_error(path, e) from None
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise os_error(path, e) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
