"""benchmarks/qm9_precision_check.py: paired validity comparison of two stored copies of a model."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from proseco.pretrained import shipped_checkpoints
from tests.unit.benchmark_scripts import load_benchmark


def _script():
    return load_benchmark("qm9_precision_check.py")


def test_paired_difference_by_hand():
    script = _script()
    reference = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0])
    candidate = torch.tensor([1, 1, 1, 1, 0, 0, 1, 0])  # one pair flips 0 -> 1: +1/8
    diff, low, high = script.paired_difference(reference, candidate, draws=4000)
    assert diff == pytest.approx(0.125)
    # Each resampled mean is k/8 with k ~ Binomial(8, 1/8): P(k = 0) = (7/8)^8 = 0.34 > 0.025.
    assert low == 0.0
    assert 0.25 <= high <= 0.5
    same = script.paired_difference(reference, reference)
    assert same == (0.0, 0.0, 0.0)


def test_paired_difference_detects_a_shift_an_unpaired_interval_would_miss():
    script = _script()
    gen = torch.Generator().manual_seed(0)
    reference = (torch.rand(1000, generator=gen) < 0.5).long()
    candidate = reference.clone()
    zeros = (reference == 0).nonzero().flatten()[:40]
    candidate[zeros] = 1  # 40 of 1000 paired outcomes flip: +4 points, nothing else moves
    diff, low, high = script.paired_difference(reference, candidate)
    assert diff == pytest.approx(0.04)
    assert low > 0.02  # excludes 0; two independent 1000-sample Wilson intervals would overlap


def test_mcnemar_exact_by_hand():
    script = _script()
    ref = torch.tensor([1] * 10 + [0] * 990)
    four = ref.clone()
    four[:4] = 0  # 4 lost, 0 gained: p = 2 * (1/2)^4 = 0.125, not a difference
    assert script.mcnemar_exact(ref, four) == (4, 0, 0.125)
    six = ref.clone()
    six[:6] = 0  # p = 2 / 64 = 0.03125
    assert script.mcnemar_exact(ref, six) == (6, 0, 0.03125)
    mixed = ref.clone()
    mixed[:2] = 0
    mixed[10:12] = 1  # 2 lost, 2 gained: p = 2 * (1 + 4 + 6) / 16 -> capped at 1
    assert script.mcnemar_exact(ref, mixed) == (2, 2, 1.0)
    assert script.mcnemar_exact(ref, ref) == (0, 0, 1.0)


def test_paired_difference_rejects_unpaired_input():
    script = _script()
    with pytest.raises(ValueError, match="equal-length"):
        script.paired_difference(torch.ones(3), torch.ones(4))


def test_same_weights_give_identical_molecules(tmp_path, capsys):
    source = shipped_checkpoints()["mdlm"]
    copy = tmp_path / "copy"
    shutil.copytree(source, copy)
    out = tmp_path / "check.json"
    args = [str(source), str(copy), "--steps", "4", "--num-samples", "24", "--batch-size", "12"]
    assert _script().main([*args, "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["identical_share"] == 1.0
    assert summary["difference"] == 0.0
    assert summary["verdict"] == "same within noise"
    assert summary["steps"] == 4 and summary["num_samples"] == 24
    assert "verdict: same within noise" in capsys.readouterr().out


def test_both_are_decoded_with_the_candidates_settings(tmp_path):
    """A run's final/ has no ProSeCo decoding settings: the shipped copy's corrector applies to both."""
    source = shipped_checkpoints()["proseco"]
    bare = tmp_path / "final"
    shutil.copytree(source, bare)
    (bare / "sampling_config.json").unlink()
    out = tmp_path / "check.json"
    args = [str(bare), str(source), "--num-samples", "16", "--batch-size", "16"]
    assert _script().main([*args, "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["steps"] == 8 and summary["corrector"] == 1  # the shipped T=8, S=1
    assert summary["identical_share"] == 1.0


def test_json_into_a_missing_folder_fails_before_sampling(tmp_path, capsys):
    source = shipped_checkpoints()["mdlm"]
    out = tmp_path / "no" / "check.json"
    assert _script().main([str(source), str(source), "--json", str(out)]) == 2
    assert capsys.readouterr().err.startswith("error: --json")


def test_missing_directory_is_one_line_and_exit_2(tmp_path, capsys):
    source = shipped_checkpoints()["mdlm"]
    for args in ([str(source), str(tmp_path / "nope")], [str(tmp_path / "nope"), str(source)]):
        code = _script().main([*args, "--num-samples", "4"])
        assert code == 2
        err = capsys.readouterr().err  # (transformers may log the first model's loading above)
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and "nope" in lines[0]
