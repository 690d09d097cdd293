"""The child side of :func:`proseco.eval.humaneval.run_program` (run as a script, not imported).

``python -I -B _humaneval_harness.py PROGRAM TOKEN_FD CPU MEMORY FILE_SIZE`` sets hard POSIX
limits, replaces ``socket``'s constructors, reads a one-line token from stdin, runs ``PROGRAM`` as
``__main__`` and, only when the program returns normally (its ``check(...)`` call included),
writes the token to ``TOKEN_FD`` and leaves at once with ``os._exit(0)``. The parent counts a
pass only when that token arrives, so a program that ends early (``raise SystemExit(0)``,
``os._exit(0)``, a signal) fails whatever its exit status.

It guards against programs that stop before their tests end, not against code written to find
the token in its own interpreter (nothing running in one process can): see the module
docstring of :mod:`proseco.eval.humaneval` for what the runner does and does not promise.
"""

import contextlib
import os
import sys


def _limit(cpu: int, memory: int, file_size: int) -> None:
    """Hard limits on CPU seconds, address space and bytes per written file (where POSIX)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return
    limits = (
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_AS, memory),
        (resource.RLIMIT_FSIZE, file_size),
    )
    for which, value in limits:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(which, (value, value))


def _no_network() -> None:
    """Make ``socket``'s constructors raise (stops accidental network use, not a determined one)."""
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in proseco's HumanEval runner")

    socket.socket = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a program may have closed or replaced them
            stream.flush()


def _main() -> None:
    path, token_fd = sys.argv[1], int(sys.argv[2])
    _limit(*(int(v) for v in sys.argv[3:6]))
    _no_network()
    token = sys.stdin.readline().strip().encode() + b"\n"  # stdin is then at its end
    with open(path, encoding="utf-8") as f:
        code = compile(f.read(), path, "exec")
    sys.argv = [path]
    exec(code, {"__name__": "__main__", "__file__": path, "__builtins__": __builtins__})
    _flush()
    os.write(token_fd, token)  # reached only when the program (and its check) returned
    os._exit(0)  # no atexit handlers or lingering threads of the program after the report


if __name__ == "__main__":
    _main()
