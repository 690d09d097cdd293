"""Molecule metrics on hand-checked molecules, and ``proseco eval molecules``."""

from __future__ import annotations

import argparse
import importlib.util
import json

import numpy as np
import pytest

from proseco.errors import DataError

pytest.importorskip("rdkit")

from proseco.chem import canonicalize, property_values  # noqa: E402
from proseco.commands import eval as cli  # noqa: E402
from proseco.eval import molecules  # noqa: E402
from proseco.eval.molecules import molecule_metrics  # noqa: E402


def test_validity_needs_a_nonempty_parsable_string_without_inner_whitespace():
    samples = ["CCO", "c1ccccc1", " CC\n", "C1CC", "C(C", "", "CC O", "C<mask>C", "c1cccc1"]
    m = molecule_metrics(samples, properties=())
    assert m["num_samples"] == 9 and m["num_valid"] == 3
    assert m["validity"] == pytest.approx(3 / 9)
    assert [canonicalize(s) for s in samples[:3]] == ["CCO", "c1ccccc1", "CC"]


def test_uniqueness_counts_spellings_of_one_molecule_once():
    m = molecule_metrics(["CCO", "OCC", "C(O)C", "CCN", "C1CC"], properties=())
    assert (m["num_valid"], m["num_unique"]) == (4, 2)
    assert m["uniqueness"] == 0.5


def test_novelty_compares_canonical_smiles_so_a_respelled_training_molecule_is_not_novel():
    train = {"OCC", "C1=CC=CC=C1"}  # raw, non-canonical spellings of ethanol and benzene
    samples = ["CCO", "c1ccccc1", "CCN", "CCN", "NCC", "C1CC"]
    m = molecule_metrics(samples, train, properties=())
    assert m["num_valid"] == 5 and m["num_unique"] == 3
    assert m["num_novel_unique"] == 1  # only ethylamine
    assert m["novelty"] == pytest.approx(1 / 5)  # divided by the number of valid samples
    # comparing against the raw training strings (as the research code did) calls all three novel
    raw = molecule_metrics(samples, train, properties=(), canonicalize_train=False)
    assert raw["num_novel_unique"] == 3


def test_canonicalize_train_false_trusts_the_given_strings():
    m = molecule_metrics(["CCO"], {"OCC"}, properties=(), canonicalize_train=False)
    assert m["num_novel_unique"] == 1
    m = molecule_metrics(["OCC"], {"CCO"}, properties=(), canonicalize_train=False)
    assert m["num_novel_unique"] == 0


@pytest.mark.parametrize(
    ("smiles", "rings"),
    [
        ("CCO", 0),
        ("c1ccccc1", 1),
        ("c1ccc2ccccc2c1", 2),  # naphthalene
        ("C1CCC2(CC1)CCCC2", 2),  # spiro[4.5]decane
        ("C1C2CC3CC1CC(C2)C3", 4),  # adamantane: SSSR 3, symmetrised 4
        ("C12C3C4C1C5C2C3C45", 6),  # cubane: SSSR 5, symmetrised 6
    ],
)
def test_ring_count_is_the_symmetrised_sssr(smiles, rings):
    assert property_values([smiles], "ring_count").tolist() == [rings]


def test_qed_matches_the_published_values():
    # Examples of Bickerton et al. (2012) as quoted in rdkit.Chem.QED's docstring.
    smiles = [
        "N=C(CCSCc1csc(N=C(N)N)n1)NS(N)(=O)=O",  # famotidine 0.253
        "CNC(=NCCSCc1nc[nH]c1C)NC#N",  # cimetidine 0.234
        "CCCCCNC(=N)NN=Cc1c[nH]c2ccc(CO)cc12",  # tegaserod 0.234
    ]
    qed = property_values(smiles, "qed")
    assert np.floor(qed * 1000).tolist() == [253, 234, 234]  # quoted as 0.253..., 0.234...


def test_property_statistics_over_valid_samples_and_the_novel_set():
    samples = ["c1ccccc1", "c1ccc2ccccc2c1", "CCO", "OCC", "C1CC"]
    m = molecule_metrics(samples, {"c1ccccc1"}, properties=("ring_count",))
    # valid (duplicates kept): rings [1, 2, 0, 0]
    assert m["ring_count_valid_mean"] == 0.75
    # population std of [1, 2, 0, 0]: sqrt(((.25)^2 + (1.25)^2 + 2 (.75)^2) / 4) = sqrt(0.6875)
    assert m["ring_count_valid_std"] == pytest.approx(0.6875**0.5)
    assert (m["ring_count_valid_q25"], m["ring_count_valid_median"], m["ring_count_valid_q75"]) == (
        0.0,
        0.5,
        1.25,
    )
    # novel unique set: naphthalene (2) and ethanol (0)
    assert m["ring_count_novel_mean"] == 1.0 and m["ring_count_novel_median"] == 1.0
    assert m["ring_count_novel_std"] == 1.0  # [2, 0]
    assert m["num_novel_unique"] == 2
    assert "qed_valid_mean" not in m


def test_qed_statistics_weight_duplicates():
    m = molecule_metrics(["CCO", "CCO", "c1ccccc1"], properties=("qed",))
    qed = property_values(["CCO", "c1ccccc1"], "qed")
    assert m["qed_valid_mean"] == pytest.approx((2 * qed[0] + qed[1]) / 3)
    assert m["qed_valid_median"] == pytest.approx(qed[0])


def test_undefined_ratios_are_none():
    m = molecule_metrics(["C1CC", ""], train_smiles=set())
    assert m["validity"] == 0.0 and m["uniqueness"] is None and m["novelty"] is None
    assert m["qed_valid_mean"] is None and m["ring_count_novel_q75"] is None
    m = molecule_metrics([])
    assert m["validity"] is None and m["novelty"] is None and "qed_novel_mean" not in m


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="list of SMILES"):
        molecule_metrics("CCO")
    with pytest.raises(ValueError, match="unknown molecule property 'logp'"):
        molecule_metrics(["CCO"], properties=("logp",))
    with pytest.raises(ValueError, match="not a valid SMILES"):
        property_values(["C1CC"], "ring_count")


def test_worker_processes_give_the_same_values():
    from proseco.data.qm9 import fixture_smiles

    smiles = fixture_smiles(1200)
    serial = property_values(smiles, "ring_count", num_workers=1)
    assert np.array_equal(property_values(smiles, "ring_count", num_workers=2), serial)


def test_fcd_is_skipped_with_a_warning_without_fcd_torch(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "fcd_torch" else real(n, *a)
    )
    with pytest.warns(UserWarning, match="pip install fcd-torch"):
        m = molecule_metrics(["CCO", "CCN"], properties=(), fcd_reference=["CCC", "CCCl"])
    assert m["fcd"] is None


@pytest.mark.slow  # ~17 s on 2 cores, and only with the optional fcd-torch
def test_fcd_is_zero_for_identical_sets_and_positive_otherwise():
    pytest.importorskip("fcd_torch")
    from proseco.data.qm9 import fixture_smiles

    a, b = fixture_smiles(100), fixture_smiles(200)[100:]
    assert molecules.fcd(a, a) == pytest.approx(0.0, abs=1e-3)
    assert molecules.fcd(a, b) > 1.0


# ------------------------------------------------------------------------- CLI
def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return cli.run(parser.parse_args(argv))


def test_cli_reads_jsonl_prints_a_table_and_writes_json(tmp_path, capsys):
    samples = tmp_path / "samples.jsonl"
    lines = [
        {"text": "CCO"},
        {"text": "OCC"},
        {"smiles": "C1CC", "text": "CC"},
        {"text": "c1ccccc1"},
    ]
    samples.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    out = tmp_path / "m.json"
    assert _run_cli(["molecules", str(samples), "--train-set", "none", "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["train_set"] == "none"
    m = report["metrics"]
    assert (m["num_samples"], m["num_valid"], m["num_unique"]) == (
        4,
        3,
        2,
    )  # "smiles" wins over "text"
    assert m["novelty"] is None
    table = capsys.readouterr().out
    assert "validity" in table and "0.7500" in table


def test_cli_default_output_and_bad_lines(tmp_path):
    samples = tmp_path / "s.jsonl"
    samples.write_text('{"text": "CCO"}\n')
    assert (
        _run_cli(["molecules", str(samples), "--train-set", "none", "--properties", "ring_count"])
        == 0
    )
    assert json.loads((tmp_path / "s.metrics.json").read_text())["metrics"]["num_valid"] == 1
    samples.write_text('{"text": "CCO"}\n{"id": 3}\n')
    with pytest.raises(DataError, match="s.jsonl:2 has no string field"):
        _run_cli(["molecules", str(samples), "--train-set", "none"])


def test_cli_refuses_an_empty_samples_file_and_keeps_earlier_metrics(tmp_path, capsys):
    from proseco.commands import main

    samples, metrics = tmp_path / "s.jsonl", tmp_path / "s.metrics.json"
    samples.write_text("\n\n")
    metrics.write_text("earlier")
    argv = ["eval", "molecules", str(samples), "--train-set", "none"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "holds no samples" in err and err.count("\n") == 1
    assert metrics.read_text() == "earlier"


def test_cli_without_a_task_prints_help(capsys):
    assert _run_cli([]) == 2
    assert "molecules" in capsys.readouterr().out


@pytest.mark.skipif(importlib.util.find_spec("qm9pack") is None, reason="needs qm9pack")
def test_cli_novelty_against_qm9(tmp_path):
    samples = tmp_path / "s.jsonl"
    samples.write_text("\n".join(json.dumps({"text": s}) for s in ["OCC", "CC1(O)CC1=O", "ClCCl"]))
    out = tmp_path / "m.json"
    assert (
        _run_cli(["molecules", str(samples), "--output", str(out), "--properties", "ring_count"])
        == 0
    )
    m = json.loads(out.read_text())["metrics"]
    assert m["num_valid"] == 3 and m["num_novel_unique"] == 2  # ethanol is in QM9


def test_invalid_reason_names_why_each_hand_made_string_fails():
    from proseco.chem import INVALID_REASONS, invalid_reason

    cases = {
        "CCO": None,
        "[13CH3]C": None,  # digits inside brackets are not ring labels
        "C%10CC%10": None,  # two-digit label, used twice
        "  ": "empty",
        "CC O": "whitespace",
        "CO)O": "unbalanced parentheses",
        "CC(=O": "unbalanced parentheses",
        "C1CC": "unmatched ring closure",
        "CC12CC1": "unmatched ring closure",
        "C%10CC": "unmatched ring closure",
        "[2H]C2CC": "unmatched ring closure",  # the 2 in [2H] is an isotope, not a label
        "C[Xx]": "other syntax",
        "N#CC1CCC1(CN)=O": "valence",  # a five-bonded carbon
        "c1cccc1": "aromaticity",  # a five-ring of aromatic carbons cannot be kekulized
    }
    assert {s: invalid_reason(s) for s in cases} == cases
    assert {r for r in cases.values() if r} <= set(INVALID_REASONS)


def test_invalid_reason_is_none_exactly_where_canonicalize_accepts():
    from proseco.chem import invalid_reason

    samples = ["CCO", "c1ccccc1", " CC\n", "C1CC", "C(C", "", "CC O", "C<mask>C", "c1cccc1"]
    assert [invalid_reason(s) is None for s in samples] == [
        canonicalize(s) is not None for s in samples
    ]
