"""Forward process: time draws and masking."""

import pytest
import torch

from proseco.noising import mask_tokens, sample_t
from proseco.schedules import get_schedule


def test_antithetic_times_are_stratified():
    g = torch.Generator().manual_seed(0)
    t = sample_t(8, t_min=0.0, generator=g)
    u = torch.sort(t).values
    gaps = u.diff()
    torch.testing.assert_close(gaps, torch.full_like(gaps, 1 / 8), atol=1e-6, rtol=0)


def test_times_lie_in_range():
    g = torch.Generator().manual_seed(1)
    for antithetic in (True, False):
        t = sample_t(1000, t_min=0.1, antithetic=antithetic, generator=g)
        assert float(t.min()) >= 0.1 and float(t.max()) <= 1.0


def test_bad_time_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        sample_t(0)
    with pytest.raises(ValueError, match="t_min"):
        sample_t(4, t_min=1.0)


@pytest.mark.parametrize("name", ["loglinear", "cosine"])
def test_mask_rate_matches_schedule(name):
    schedule = get_schedule(name)
    g = torch.Generator().manual_seed(0)
    x0 = torch.zeros(4, 20000, dtype=torch.long)
    t = torch.tensor([0.1, 0.4, 0.7, 1.0])
    xt = mask_tokens(x0, t, mask_id=9, schedule=schedule, generator=g)
    rate = (xt == 9).float().mean(1)
    torch.testing.assert_close(rate, schedule.mask_prob(t), atol=0.012, rtol=0)


def test_noise_mask_protects_positions():
    x0 = torch.arange(10).repeat(3, 1)
    keep = torch.zeros(3, 10, dtype=torch.bool)
    keep[:, 5:] = True
    xt = mask_tokens(x0, torch.ones(3), mask_id=99, noise_mask=keep)
    assert torch.equal(xt[:, :5], x0[:, :5])
    assert bool((xt[:, 5:] == 99).float().mean() > 0.9)
