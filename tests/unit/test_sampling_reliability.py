"""Nothing silent in the sampler: logits that would give wrong tokens, settings that would give
meaningless ones and arguments of the wrong type are errors that say what to fix (issue 9)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from proseco import LossConfig
from proseco.errors import ConfigError, ModelOutputError
from proseco.sampling import Corrector, sample

V, MASK = 8, 7


class Fixed(torch.nn.Module):
    """Returns ``logits`` (``[V']``) at every position; declares ``vocab_size``."""

    def __init__(self, logits: torch.Tensor, vocab_size: int | None = V) -> None:
        super().__init__()
        self.logits = logits
        self.config = SimpleNamespace(vocab_size=vocab_size, max_position_embeddings=16)

    def forward(self, input_ids):
        return self.logits.expand(*input_ids.shape, -1).clone()


def logits_with(**at) -> torch.Tensor:
    logits = torch.zeros(V)
    for index, value in at.items():
        logits[int(index[1:])] = value
    return logits


@pytest.mark.parametrize(
    "logits, match",
    [
        (logits_with(c0=float("nan")), "non-finite"),
        (torch.full((V,), float("-inf")), "non-finite"),
        (logits_with(c2=float("inf")), "non-finite"),
        (
            torch.cat([torch.full((V - 1,), float("-inf")), torch.zeros(1)]),
            "non-finite",
        ),  # only mask
        (torch.zeros(V + 3), "declares a vocabulary of 8"),
    ],
)
def test_logits_that_would_give_wrong_tokens_are_refused(logits, match):
    with pytest.raises(ModelOutputError, match=match):
        sample(Fixed(logits), mask_id=MASK, length=4, steps=2)


def test_logits_without_a_mask_column_are_refused():
    model = Fixed(torch.zeros(V - 1), vocab_size=None)  # 7 columns, mask id 7
    with pytest.raises(ModelOutputError, match="no column for mask_id 7"):
        sample(model, mask_id=MASK, length=4, steps=2)


def test_minus_inf_on_some_tokens_is_fine():
    out = sample(Fixed(logits_with(c0=float("-inf"), c1=float("-inf"))), mask_id=MASK, length=6,
                 steps=3, corrector=Corrector(1))  # fmt: skip
    assert not ((out.tokens == 0) | (out.tokens == 1) | (out.tokens == MASK)).any()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(temperature=float("inf")), "temperature must be a finite"),
        (dict(temperature=float("nan")), "temperature must be a finite"),
        (dict(top_p=float("nan")), "top_p"),
        (dict(eps=float("nan")), "eps"),
        (dict(generator=123), "torch.Generator"),
        (dict(prompt=torch.tensor([[1.5, 2.0]])), "integer token ids"),
        (dict(prompt=[[1, 2], [0.5]]), "integer token ids"),
    ],
)
def test_meaningless_settings_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        sample(Fixed(torch.zeros(V)), mask_id=MASK, length=4, steps=2, **kwargs)


@pytest.mark.parametrize("name", ["sc_weight", "mdm_weight"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0])
def test_non_finite_loss_weights_are_refused(name, value):
    with pytest.raises(ConfigError, match=f"loss.{name} must be a finite number"):
        LossConfig(**{name: value})
