"""An interpolated bigram baseline: the NLL a count model reaches on held-out token rows.

A diffusion model's validation NELBO means little on its own at small scale; next to the
NLL of a bigram fitted to the same training rows it says whether the model has learnt more than
which token tends to follow which. The text study gates its verdict on it
(``benchmarks/text.py``).

The model (Jelinek-Mercer interpolation)::

    p(b | a) = lam * c(a, b) / c(a) + (1 - lam) * (c(b) + 1) / (N + V)

with ``c`` counts over the training rows, ``N`` training tokens and ``V`` the vocabulary; a
context never seen in training falls back to the unigram term alone. Every row starts from a
virtual start context, so position 0 is scored by what rows start with (always BOS in the
wrapped layout), as a diffusion model sees position 0 too. ``lam`` is chosen on the held-out
rows themselves from a grid: the bigram gets its best case, which makes the gate stricter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from proseco.errors import DataError

__all__ = ["BigramModel", "fit_bigram", "bigram_nll", "best_interpolated_bigram_nll"]

LAMBDAS = (*(round(0.05 * i, 2) for i in range(1, 20)), 0.97, 0.99)  # 0.05 .. 0.99


@dataclass(frozen=True)
class BigramModel:
    """Counts of a bigram model over ``V`` tokens plus one start context (id ``V``).

    Attributes:
        vocab_size: ``V``.
        pair_counts: ``[(V + 1) * V]`` int64, ``c(a, b)`` at ``a * V + b``.
        context_counts: ``[V + 1]`` int64, ``c(a)`` as a context.
        unigram: ``[V]`` float64, the add-one unigram distribution.
    """

    vocab_size: int
    pair_counts: torch.Tensor
    context_counts: torch.Tensor
    unigram: torch.Tensor


def _pairs(rows: torch.Tensor, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(context, next) ids of every position of ``rows [N, L]``, start context first."""
    if rows.dim() != 2 or rows.numel() == 0:
        raise DataError(f"expected token rows [N, L] with N, L > 0, got shape {tuple(rows.shape)}")
    rows = rows.long()
    if int(rows.min()) < 0 or int(rows.max()) >= vocab_size:
        raise DataError(
            f"token ids must lie in [0, {vocab_size}); got {int(rows.min())}..{int(rows.max())}"
        )
    start = torch.full((rows.shape[0], 1), vocab_size, dtype=torch.long)
    context = torch.cat([start, rows[:, :-1]], dim=1)
    return context.reshape(-1), rows.reshape(-1)


def fit_bigram(rows: torch.Tensor, vocab_size: int) -> BigramModel:
    """Count a bigram model on training rows ``[N, L]`` of ids in ``[0, vocab_size)``."""
    context, target = _pairs(rows, vocab_size)
    pairs = torch.bincount(context * vocab_size + target, minlength=(vocab_size + 1) * vocab_size)
    contexts = torch.bincount(context, minlength=vocab_size + 1)
    counts = torch.bincount(target, minlength=vocab_size).double()
    unigram = (counts + 1.0) / (counts.sum() + vocab_size)
    return BigramModel(vocab_size, pairs, contexts, unigram)


def bigram_nll(model: BigramModel, rows: torch.Tensor, lam: float) -> float:
    """Mean NLL (nats/token) of ``rows [N, L]`` under the interpolated bigram with weight ``lam``."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must lie in [0, 1], got {lam}")
    context, target = _pairs(rows, model.vocab_size)
    pair = model.pair_counts[context * model.vocab_size + target].double()
    seen = model.context_counts[context].double()
    conditional = torch.where(seen > 0, pair / seen.clamp_min(1.0), torch.zeros_like(pair))
    weight = torch.where(seen > 0, torch.full_like(pair, lam), torch.zeros_like(pair))
    prob = weight * conditional + (1.0 - weight) * model.unigram[target]
    return float(-prob.log().mean())


def best_interpolated_bigram_nll(
    train_rows: torch.Tensor,
    held_out_rows: torch.Tensor,
    vocab_size: int,
    lambdas: Sequence[float] = LAMBDAS,
) -> tuple[float, float]:
    """``(nll, lam)``: the lowest held-out NLL (nats/token) over ``lambdas`` and its weight."""
    model = fit_bigram(train_rows, vocab_size)
    scores = [(bigram_nll(model, held_out_rows, lam), lam) for lam in lambdas]
    return min(scores)
