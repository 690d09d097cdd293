"""QM9 loading: files, canonicalisation, split, labels, model tensors, cache.

Tests that read all of QM9 use the normal cache (``~/.cache/proseco/qm9`` or
``$PROSECO_CACHE_DIR``): the first run builds it (~7-15 s on 2 cores), later runs load it in
~0.3 s. Only the QED table (~70 s to build) is behind ``slow``.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from proseco.data import qm9
from proseco.data.qm9 import (
    HANDWRITTEN_SMILES,
    QM9_SIZE,
    fixture_smiles,
    load_qm9,
    qm9_tensors,
    split_indices,
)
from proseco.data.smiles import QM9_TOKENS, SmilesTokenizer

pytest.importorskip("rdkit")
needs_qm9 = pytest.mark.skipif(
    importlib.util.find_spec("qm9pack") is None, reason='needs pip install "proseco[chem]"'
)


# ------------------------------------------------------------------------- fast, no QM9
def test_split_rule_matches_hand_counts_and_is_deterministic():
    train, val = split_indices(QM9_SIZE)
    assert (len(train), len(val)) == (124_289, 6_542)  # floor(0.95 n), ceil(0.05 n)
    assert len(np.intersect1d(train, val)) == 0
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(QM9_SIZE))
    train2, val2 = split_indices(QM9_SIZE)
    assert np.array_equal(train, train2) and np.array_equal(val, val2)
    expected_val = np.random.default_rng(42).permutation(QM9_SIZE)[:6542]
    assert np.array_equal(val, expected_val)
    assert not np.array_equal(split_indices(QM9_SIZE, seed=0)[1], val)


def test_split_rejects_bad_fractions():
    with pytest.raises(ValueError, match="val_fraction"):
        split_indices(10, val_fraction=1.0)


def test_canonicalisation_and_ring_counts_on_a_subset():
    canon, rings = qm9._canonical_and_rings(["C1=CNC=N1", "O=CC1=CC=CO1", "OC1C2CC1C2", "CCO"])
    assert canon == ["c1c[nH]cn1", "O=Cc1ccco1", "OC1C2CC1C2", "CCO"]
    assert rings == [1, 1, 3, 0]  # bicyclo[1.1.0]butane: SSSR 2, symmetrised SSSR 3


def test_fixtures_parse_and_need_no_download():
    from rdkit import Chem

    nci = fixture_smiles()
    assert len(nci) == 4999 and nci[0] == "CC1=CC(=O)C=CC1=O"
    assert fixture_smiles(3) == nci[:3]
    hand = fixture_smiles(source="handwritten")
    assert hand == list(HANDWRITTEN_SMILES)
    assert all(Chem.MolFromSmiles(s) is not None for s in hand)
    with pytest.raises(ValueError, match="source"):
        fixture_smiles(source="zinc")


def test_missing_qm9pack_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "qm9pack" else real(n, *a)
    )
    with pytest.raises(ImportError, match=r'pip install "proseco\[chem\]"'):
        qm9.qm9_csv_files()


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="split"):
        load_qm9("test")
    with pytest.raises(ValueError, match="label"):
        qm9_tensors(SmilesTokenizer(), label="logp")


# ------------------------------------------------------------------------- whole QM9
@needs_qm9
def test_qm9_has_130831_molecules_and_5_percent_validation():
    everything = load_qm9("all")
    train, val = load_qm9("train"), load_qm9("validation")
    assert len(everything) == QM9_SIZE == 130_831
    assert (len(train), len(val)) == (124_289, 6_542)
    assert sorted(train.smiles + val.smiles) == sorted(everything.smiles)
    assert everything.smiles[:3] == ["C", "N", "O"]
    assert len(set(everything.smiles)) == 130_744  # 87 rows repeat after canonicalisation


@needs_qm9
def test_every_qm9_molecule_round_trips_through_the_default_tokenizer():
    data = load_qm9("all")
    tok = SmilesTokenizer()
    assert set(SmilesTokenizer.count_tokens(data.smiles)) == set(QM9_TOKENS)
    ids = tok.encode_batch(data.smiles, length=32)  # raises on an unknown or too long molecule
    assert tok.decode_batch(ids) == data.smiles


@needs_qm9
def test_ring_count_labels_use_the_whole_datasets_90th_percentile():
    everything, train = load_qm9("all"), load_qm9("train")
    assert everything.thresholds["ring_count"] == train.thresholds["ring_count"] == 3.0
    labels = everything.labels("ring_count")
    assert labels.sum() == 10_332  # molecules with 4 or more rings
    assert abs(labels.mean() - 0.079) < 0.001  # integer ties keep it under 10%
    assert np.array_equal(labels, (everything.ring_count > 3).astype(np.int64))
    with pytest.raises(ValueError, match="with_qed=True"):
        everything.labels("qed")


@needs_qm9
def test_qm9_tensors_are_bos_tokens_eos_pad_with_labels():
    tok = SmilesTokenizer()
    batch = qm9_tensors(tok, "validation", length=32, label="ring_count")
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert ids.shape == (6_542, 32) and mask.shape == ids.shape and labels.shape == (6_542,)
    assert ids.dtype == mask.dtype == labels.dtype == torch.long
    assert (ids[:, 0] == tok.bos_token_id).all()
    assert ((ids == tok.eos_token_id).sum(1) == 1).all()
    assert torch.equal(mask, (ids != tok.pad_token_id).long())
    assert set(labels.unique().tolist()) == {0, 1}
    assert tok.decode_batch(ids[:5]) == load_qm9("validation").smiles[:5]
    assert "labels" not in qm9_tensors(tok, "validation")


@needs_qm9
def test_cache_is_built_once_and_reused_without_reading_the_csv_files(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setattr(qm9, "QM9_SIZE", 4)
    monkeypatch.setattr(qm9, "_raw_smiles", lambda: ["C1=CNC=N1", "OCC", "C", "N"])
    first = load_qm9("all", cache_dir=cache)
    assert first.smiles == ["c1c[nH]cn1", "CCO", "C", "N"] and list(cache.iterdir())

    def fail():
        raise AssertionError("rebuilt the cache")

    monkeypatch.setattr(qm9, "_raw_smiles", fail)
    qm9._table.cache_clear()
    again = load_qm9("all", cache_dir=cache)
    assert again.smiles == first.smiles


@needs_qm9
@pytest.mark.slow
def test_qed_labels_put_about_10_percent_in_class_1():
    data = load_qm9("all", with_qed=True)
    assert data.qed is not None and data.qed.shape == (QM9_SIZE,)
    assert 0.55 < data.thresholds["qed"] < 0.56
    assert abs(data.labels("qed").mean() - 0.10) < 0.001
    train = load_qm9("train", with_qed=True)
    assert train.thresholds["qed"] == data.thresholds["qed"]
