"""Logits processors: temperature, top-k, top-p (hand-computed), Gumbel draws, top-p applied once."""

from __future__ import annotations

import math

import pytest
import torch

from proseco.sampling import sample
from proseco.sampling.processors import LogitsProcessor, exclude_token, gumbel_argmax

PROBS = torch.tensor([[0.5, 0.3, 0.2]])
LOGITS = PROBS.log()


def probs_of(processor: LogitsProcessor, logits: torch.Tensor = LOGITS) -> torch.Tensor:
    return processor.log_probs(logits.clone()).exp()


def test_identity_settings_return_the_softmax():
    assert torch.allclose(probs_of(LogitsProcessor()), PROBS, atol=1e-6)


def test_temperature_two_takes_square_roots_of_probabilities():
    # softmax(log p / 2) = sqrt(p) / sum sqrt(p) = [0.7071, 0.5477, 0.4472] / 1.7020
    expected = torch.tensor([[0.415454, 0.321812, 0.262756]])
    assert torch.allclose(probs_of(LogitsProcessor(temperature=2.0)), expected, atol=1e-5)


def test_top_k_keeps_only_the_k_most_likely_tokens():
    expected = torch.tensor([[0.625, 0.375, 0.0]])
    assert torch.allclose(probs_of(LogitsProcessor(top_k=2)), expected, atol=1e-6)


def test_top_p_keeps_the_token_that_crosses_the_mass():
    # mass before each sorted token: 0, 0.5, 0.8 -> with p=0.55 keep the first two
    expected = torch.tensor([[0.625, 0.375, 0.0]])
    assert torch.allclose(probs_of(LogitsProcessor(top_p=0.55)), expected, atol=1e-6)
    # p=0.45: mass before the second token is 0.5 >= 0.45, so only the first is kept
    assert torch.allclose(probs_of(LogitsProcessor(top_p=0.45)), torch.tensor([[1.0, 0, 0]]))


def test_top_p_works_on_unsorted_rows_and_float64():
    logits = torch.tensor([[0.2, 0.5, 0.3]]).log()
    out = probs_of(LogitsProcessor(top_p=0.55, float64=True), logits)
    assert out.dtype == torch.float64
    assert torch.allclose(out, torch.tensor([[0.0, 0.625, 0.375]], dtype=torch.float64))


def test_exclude_token_sets_the_column_to_minus_infinity():
    logits = torch.zeros(2, 3, 4)
    exclude_token(logits, 3)
    assert torch.isinf(logits[..., 3]).all() and (logits[..., :3] == 0).all()
    exclude_token(logits, 9)  # outside the vocabulary: no-op


@pytest.mark.parametrize("float64", [False, True])
def test_gumbel_draws_follow_the_distribution(float64):
    g = torch.Generator().manual_seed(0)
    tokens = gumbel_argmax(LOGITS.expand(40_000, 3), g, float64)
    freq = torch.bincount(tokens, minlength=3).float() / tokens.numel()
    assert torch.allclose(freq, PROBS[0], atol=0.01)


def test_gumbel_never_picks_a_filtered_token():
    g = torch.Generator().manual_seed(0)
    logits = torch.tensor([[0.0, float("-inf"), 0.0]]).expand(5000, 3)
    assert (gumbel_argmax(logits, g) != 1).all()


def test_greedy_uses_no_randomness_and_reports_the_probability():
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    tokens, probs = LogitsProcessor(temperature=0.0).sample(LOGITS.clone(), g)
    assert tokens.tolist() == [0] and math.isclose(probs.item(), 0.5, rel_tol=1e-6)
    assert torch.equal(g.get_state(), state)


def test_sample_reports_the_processed_probability_of_the_drawn_token():
    g = torch.Generator().manual_seed(1)
    tokens, probs = LogitsProcessor(top_p=0.55).sample(LOGITS.expand(100, 3).clone(), g)
    expected = torch.tensor([0.625, 0.375, 0.0])[tokens]
    assert torch.allclose(probs, expected, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [{"temperature": -1.0}, {"top_k": -1}, {"top_p": 0.0}, {"top_p": 1.5}, {"top_k": 1.5}],
)
def test_bad_settings_raise(kwargs):
    with pytest.raises(ValueError):
        LogitsProcessor(**kwargs)


class FixedModel(torch.nn.Module):
    """Same distribution [0.5, 0.3, 0.2] (token 3 = mask) at every position, whatever the input."""

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        logits = torch.tensor([0.5, 0.3, 0.2, 1.0]).log()
        return logits.expand(*input_ids.shape, 4).clone()


def test_top_p_is_applied_once_even_when_logits_are_reused():
    # With 256 steps for 4 tokens most steps unmask nothing, so logits are reused; filtering the
    # already-filtered distribution again would drop token 1 (0.625/0.375 -> only token 0).
    g = torch.Generator().manual_seed(0)
    tokens, nfe = [], 0
    for _ in range(40):
        out = sample(
            FixedModel(), mask_id=3, batch_size=4, length=4, steps=256, top_p=0.55, generator=g
        )
        tokens.append(out.tokens.flatten())
        nfe += out.denoiser_nfe
    tokens = torch.cat(tokens)
    freq = torch.bincount(tokens, minlength=4).float() / tokens.numel()
    assert torch.allclose(freq, torch.tensor([0.625, 0.375, 0.0, 0.0]), atol=0.04)
    assert nfe < 40 * 256 / 4  # most steps reused the logits
