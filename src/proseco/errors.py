"""Errors that mean "bad input or environment": the command line reports them as one line.

Everything the user can fix by changing an argument, a file or a setting raises a subclass of
:class:`ProsecoError`. The command line (``proseco ...``) prints such errors as a single line and
exits with status 2; other exceptions are bugs and keep their traceback. Set ``PROSECO_DEBUG=1``
(or pass ``--debug``) to see the traceback of a :class:`ProsecoError` too.

The subclasses also derive from the built-in exception a Python caller would expect
(``ValueError`` for a bad setting, ``OSError`` for a file problem), so ``except ValueError`` keeps
working.
"""

from __future__ import annotations

__all__ = [
    "ProsecoError",
    "ConfigError",
    "ModelLoadError",
    "DataError",
    "OutputError",
    "ModelOutputError",
]


class ProsecoError(Exception):
    """Base class: a problem the user can fix; reported as one line, exit status 2."""


class ConfigError(ProsecoError, ValueError):
    """An invalid setting (a sampling or training option, a recipe field, a CLI flag)."""


class ModelLoadError(ProsecoError, OSError):
    """A model directory that is missing, incomplete or unreadable."""


class DataError(ProsecoError, ValueError):
    """Input data that cannot be used (empty, corrupt, too small for the batch...)."""


class OutputError(ProsecoError, OSError):
    """An output path that cannot be written (read-only, full disk, a file where a directory
    should be...)."""


class ModelOutputError(ProsecoError, ValueError):
    """A model whose outputs cannot be sampled from (non-finite logits, wrong vocabulary width)."""
