"""benchmarks/qm9_failure_modes.py: validity and the causes of invalid molecules of one model."""

from __future__ import annotations

import json

import pytest

from proseco.pretrained import shipped_checkpoints
from tests.unit.benchmark_scripts import load_benchmark

pytest.importorskip("rdkit")


def test_tally_counts_each_cause_in_a_hand_made_list():
    script = load_benchmark("qm9_failure_modes.py")
    smiles = ["CCO", "C1CC", "", "CO)O", "c1ccccc1", "CC12CC1", "N#CC1CCC1(CN)=O", "C1CC"]
    out = script.tally(smiles, examples=1)
    assert (out["num_samples"], out["num_valid"]) == (8, 2)
    assert out["validity"] == pytest.approx(0.25)
    assert out["reasons"] == {
        "empty": 1,
        "unbalanced parentheses": 1,
        "unmatched ring closure": 3,
        "valence": 1,
    }
    assert list(out["reasons"]) == [
        "empty",
        "unbalanced parentheses",
        "unmatched ring closure",
        "valence",
    ]  # the order of INVALID_REASONS, not of arrival
    assert out["examples"]["unmatched ring closure"] == ["C1CC"]


def test_samples_a_shipped_model_and_writes_the_tally(tmp_path, capsys):
    script = load_benchmark("qm9_failure_modes.py")
    model = shipped_checkpoints()["mdlm"]
    out_json = tmp_path / "modes.json"
    rc = script.main(
        [
            str(model),
            "--steps",
            "8",
            "--num-samples",
            "12",
            "--batch-size",
            "6",
            "--threads",
            "1",
            "--json",
            str(out_json),
        ]
    )
    assert rc == 0
    out = json.loads(out_json.read_text())
    assert out["num_samples"] == 12
    assert out["num_valid"] + sum(out["reasons"].values()) == 12
    assert out["settings"]["weights"] == "as exported" and out["settings"]["steps"] == 8
    assert "validity" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["missing", "corrupt", "raw-of-exported", "json-folder"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, case):
    script = load_benchmark("qm9_failure_modes.py")
    model = str(shipped_checkpoints()["mdlm"])
    if case == "missing":
        argv = [str(tmp_path / "nowhere")]
    elif case == "corrupt":
        (tmp_path / "config.json").write_text("{")
        argv = [str(tmp_path)]
    elif case == "raw-of-exported":
        argv = [model, "--weights", "raw"]
    else:
        argv = [model, "--json", str(tmp_path / "no" / "such" / "out.json")]
    try:
        rc = script.main(argv)
    except SystemExit as e:  # argparse's exit
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:"), err
