"""Shared test fixtures: tiny deterministic models that follow the model protocol."""

from __future__ import annotations

import pytest
import torch
from torch import nn

# CI runs two pytest workers on two cores: one intra-op thread each avoids oversubscription,
# which slows tiny models down by 10-50x.
torch.set_num_threads(1)


class TableModel(nn.Module):
    """``logits[b, l] = table[input_ids[b, l]]``: each position sees only its own token.

    Small enough to compute losses by hand. ``table`` is ``[V, V]``.
    """

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table.clone().float())
        self.vocab_size = table.shape[1]

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.table[input_ids]


class MixModel(nn.Module):
    """A small contextual model: embedding, one mixing layer over positions, output head."""

    def __init__(self, vocab_size: int, length: int, width: int = 16, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, width)
        self.mix = nn.Linear(length, length)
        self.head = nn.Linear(width, vocab_size)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, input_ids: torch.Tensor, **_: object) -> torch.Tensor:
        h = self.embed(input_ids)  # [B, L, D]
        h = h + torch.tanh(self.mix(h.transpose(1, 2)).transpose(1, 2))
        return self.head(h)


@pytest.fixture
def mix_model() -> MixModel:
    return MixModel(vocab_size=8, length=12)
