"""``proseco demo``: bad arguments are one line and exit 2 before anything is loaded or written;
earlier results in the output directory survive a failed run."""

from __future__ import annotations

import pytest

from proseco.commands import main


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--num-samples", "0"], "--num-samples must be >= 1"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--steps", "0", "4"], "--steps must be >= 1"),
        (["--threads", "-1"], "--threads must be >= 0"),
    ],
)
def test_bad_arguments_fail_fast_and_keep_earlier_results(tmp_path, capsys, flags, match):
    out = tmp_path / "demo"
    out.mkdir()
    for name in ("samples.jsonl", "results.json", "pareto.png"):
        (out / name).write_text(f"earlier {name}")
    assert main(["demo", "--output-dir", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1 and "Traceback" not in err
    for name in ("samples.jsonl", "results.json", "pareto.png"):
        assert (out / name).read_text() == f"earlier {name}"


def test_an_output_dir_that_is_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("mine")
    assert main(["demo", "--output-dir", str(target)]) == 2
    assert "is a file" in capsys.readouterr().err
    assert target.read_text() == "mine"
