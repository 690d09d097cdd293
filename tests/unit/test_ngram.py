"""The interpolated bigram baseline of the text study's gate, pinned on hand-counted rows."""

import math

import pytest
import torch

from proseco.errors import DataError
from proseco.eval.ngram import best_interpolated_bigram_nll, bigram_nll, fit_bigram


def test_counts_include_the_start_context():
    model = fit_bigram(torch.tensor([[0, 1, 1], [0, 2, 1]]), vocab_size=3)
    pairs = model.pair_counts.view(4, 3)
    assert pairs[3].tolist() == [2, 0, 0]  # both rows start with 0
    assert pairs[0].tolist() == [0, 1, 1]
    assert pairs[1].tolist() == [0, 1, 0]
    assert pairs[2].tolist() == [0, 1, 0]
    assert model.context_counts.tolist() == [2, 1, 1, 2]
    # add-one unigram over 6 tokens: counts 2, 3, 1
    assert torch.allclose(model.unigram, torch.tensor([3 / 9, 4 / 9, 2 / 9], dtype=torch.float64))


def test_nll_matches_a_hand_computation():
    model = fit_bigram(torch.tensor([[0, 1, 1], [0, 2, 1]]), vocab_size=3)
    lam = 0.5
    uni = [3 / 9, 4 / 9, 2 / 9]
    # held-out row [0, 2, 2]: start->0, 0->2, 2->2
    p0 = lam * 1.0 + (1 - lam) * uni[0]
    p1 = lam * 0.5 + (1 - lam) * uni[2]
    p2 = lam * 0.0 + (1 - lam) * uni[2]
    expected = -(math.log(p0) + math.log(p1) + math.log(p2)) / 3
    assert bigram_nll(model, torch.tensor([[0, 2, 2]]), lam) == pytest.approx(expected, rel=1e-12)


def test_unseen_context_falls_back_to_the_unigram():
    model = fit_bigram(torch.tensor([[0, 0, 0]]), vocab_size=3)
    # context 1 never occurs: its next token is scored by the unigram alone, whatever lam is
    a = bigram_nll(model, torch.tensor([[0, 1, 2]]), 0.9)
    uni = model.unigram.tolist()
    expected = -(math.log(0.9 + 0.1 * uni[0]) + math.log(0.1 * uni[1]) + math.log(uni[2])) / 3
    assert a == pytest.approx(expected, rel=1e-12)


def test_best_lambda_beats_the_unigram_on_repetitive_data():
    rows = torch.tensor([[0, 1, 2, 0, 1, 2]] * 4)
    nll, lam = best_interpolated_bigram_nll(rows, rows, vocab_size=3)
    assert lam == 0.99
    unigram_nll = math.log(3)
    assert nll < 0.1 < unigram_nll


def test_bad_rows_are_refused():
    with pytest.raises(DataError, match="token ids must lie"):
        fit_bigram(torch.tensor([[0, 5]]), vocab_size=3)
    with pytest.raises(DataError, match=r"\[N, L\]"):
        fit_bigram(torch.tensor([0, 1]), vocab_size=3)
