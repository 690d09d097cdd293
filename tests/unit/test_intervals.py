"""Bootstrap intervals of the text study (``proseco.eval.intervals``)."""

import math

import pytest
import torch

from proseco.errors import ConfigError
from proseco.eval.intervals import (
    mauve_replicates,
    percentile_interval,
    replicates,
    resample_indices,
    token_weighted_ppl,
)


def test_resample_indices_are_seeded_and_in_range():
    a, b = resample_indices(7, 50, seed=3), resample_indices(7, 50, seed=3)
    assert a.shape == (50, 7) and torch.equal(a, b)
    assert int(a.min()) >= 0 and int(a.max()) <= 6
    assert not torch.equal(a, resample_indices(7, 50, seed=4))
    with pytest.raises(ConfigError, match="n >= 1"):
        resample_indices(0, 5, seed=0)


def test_percentile_interval_by_hand_and_centered():
    values = torch.arange(101, dtype=torch.float64)  # 0..100: percentiles are the values
    assert percentile_interval(values, 0.9) == pytest.approx((5.0, 95.0))
    # mean 50, centered on 60: everything moves up by 10
    assert percentile_interval(values, 0.9, center=60.0) == pytest.approx((15.0, 105.0))
    with pytest.raises(ConfigError, match="level"):
        percentile_interval(values, 1.0)


def test_token_weighted_ppl_and_its_replicates():
    per_sample = torch.tensor([[2.0, 1.0], [6.0, 3.0]])  # NLL sums, token counts
    assert float(token_weighted_ppl(per_sample)) == pytest.approx(math.exp(8.0 / 4.0))
    index = torch.tensor([[0, 0], [1, 1], [0, 1]])
    reps = replicates(per_sample, token_weighted_ppl, index)
    assert reps.tolist() == pytest.approx([math.exp(2.0), math.exp(2.0), math.exp(2.0)])
    means = replicates(torch.tensor([1.0, 3.0]), lambda x: x.mean(dim=1), index)
    assert means.tolist() == [1.0, 3.0, 2.0]


def test_mauve_interval_separates_a_shifted_sample_and_covers_its_point():
    pytest.importorskip("mauve")
    g = torch.Generator().manual_seed(0)
    p = torch.randn(300, 16, generator=g)
    near = torch.randn(300, 16, generator=g)
    far = torch.randn(300, 16, generator=g) + 0.6
    m_near, r_near = mauve_replicates(p.numpy(), near.numpy(), draws=100)
    m_far, r_far = mauve_replicates(p.numpy(), far.numpy(), draws=100)
    assert r_near.shape == (100,)
    lo_n, hi_n = percentile_interval(r_near, center=m_near)
    lo_f, hi_f = percentile_interval(r_far, center=m_far)
    assert lo_n <= m_near <= hi_n and lo_f <= m_far <= hi_f
    assert hi_f < lo_n  # far from the reference: a lower score, and the intervals say so
    diff = r_near - r_far
    assert percentile_interval(diff, center=m_near - m_far)[0] > 0


def _shifted_pair(shift: float = 0.3):
    g = torch.Generator().manual_seed(0)
    p = torch.randn(300, 16, generator=g).numpy()
    q = (torch.randn(300, 16, generator=g) + shift).numpy()
    return p, q


def test_mauve_point_is_the_package_score_or_its_mean_over_k_means_seeds():
    mauve = pytest.importorskip("mauve")
    p, q = _shifted_pair()
    per_seed = [mauve.compute_mauve(p_features=p, q_features=q, seed=s, verbose=False).mauve
                for s in (5, 6, 7)]  # fmt: skip
    assert mauve_replicates(p, q, draws=4, seed=5, quantizations=1)[0] == per_seed[0]
    point, reps = mauve_replicates(p, q, draws=4, seed=5, quantizations=3)
    assert point == pytest.approx(sum(per_seed) / 3)
    assert reps.shape == (4,)
    with pytest.raises(ValueError, match="quantizations"):
        mauve_replicates(p, q, draws=4, quantizations=0)


def test_mauve_interval_carries_the_spread_of_the_quantization():
    mauve = pytest.importorskip("mauve")
    p, q = _shifted_pair()
    per_seed = [mauve.compute_mauve(p_features=p, q_features=q, seed=s, verbose=False).mauve
                for s in range(10)]  # fmt: skip
    intervals = {}
    for k in (1, 10):
        point, reps = mauve_replicates(p, q, draws=200, quantizations=k)
        intervals[k] = percentile_interval(reps, center=point)
    fixed, varied = intervals[1], intervals[10]
    # one quantization: the histogram's noise only, and some seeds' scores fall outside it
    assert not all(fixed[0] <= m <= fixed[1] for m in per_seed)
    assert all(varied[0] <= m <= varied[1] for m in per_seed)
