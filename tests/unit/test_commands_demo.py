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


def _row(method, steps, nfe, validity, s=0, every=1):
    return {"method": method, "steps": steps, "corrector_steps": s, "corrector_every": every,
            "nfe": nfe, "validity": validity}  # fmt: skip


def test_the_headline_names_the_cheapest_proseco_setting_at_mdlm_best_validity():
    from proseco.commands.demo import headline

    rows = [
        _row("MDLM", 8, 8.0, 0.40),
        _row("MDLM", 32, 20.0, 0.50),
        _row("ProSeCo model, MDLM sampling", 32, 20.0, 0.55),  # not a corrector row
        _row("ProSeCo S=1 every=1", 4, 8.0, 0.45, s=1),
        _row("ProSeCo S=1 every=1", 8, 16.0, 0.50, s=1),
        _row("ProSeCo S=2 every=2", 8, 10.0, 0.52, s=2, every=2),
        _row("ProSeCo S=1 every=1", 32, 40.0, 0.70, s=1),
    ]
    first, second = headline(rows, num_samples=100)
    assert "MDLM's best, 50.0 % valid at 20.0 NFE (T=32)" in first
    assert "with 10.0 NFE (T=8, S=2 every=2: 52.0 %), 2.0x fewer model calls" in first
    # 1.96 * sqrt((0.5 * 0.5 + 0.7 * 0.3) / 100) = 0.133 -> 13 points
    assert "70.0 % at 40.0 NFE (T=32, S=1 every=1), +20.0 points" in second
    assert "within about 13 points" in second and "100 molecules" in second


def test_the_headline_says_so_when_no_proseco_setting_reaches_mdlm():
    from proseco.commands.demo import headline

    rows = [_row("MDLM", 32, 20.0, 0.60), _row("ProSeCo S=1 every=1", 32, 40.0, 0.55, s=1)]
    first, second = headline(rows, num_samples=1000)
    assert first == "No ProSeCo setting here reaches MDLM's best, 60.0 % valid at 20.0 NFE (T=32)."
    assert "-5.0 points" in second
    assert headline([_row("MDLM", 32, 20.0, 0.6)], 10) == []
