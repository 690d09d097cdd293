"""Bootstrap intervals for sample-quality metrics (the text study's gen-PPL, MAUVE, entropy...).

Every metric of a set of ``N`` samples is recomputed on ``draws`` resamples of the samples (drawn
with replacement); the 2.5 and 97.5 percentiles of the replicates are the 95 % interval. Two
points sampled independently (two methods, two step counts) are compared replicate by replicate:
the percentiles of ``a_b - b_b`` are the interval of the difference. Intervals are
bias-corrected percentiles (replicates shifted to the point estimate; see
:func:`percentile_interval`).

MAUVE is the exception that needs care: resampling the feature vectors themselves puts duplicate
points into its k-means quantization, which moves the score by itself (0.03 -> 0.007 on one
resample of random features). :func:`mauve_replicates` therefore holds the quantization of the
full sets fixed and resamples the samples' *cluster histogram* (a multinomial draw of ``N``
points from it), which is the same as resampling the samples' cluster labels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from proseco.errors import ConfigError

__all__ = [
    "resample_indices",
    "percentile_interval",
    "replicates",
    "token_weighted_ppl",
    "mauve_replicates",
]


def resample_indices(n: int, draws: int, seed: int) -> torch.Tensor:
    """``[draws, n]`` int64 indices into ``n`` samples, drawn with replacement from ``seed``."""
    if n < 1 or draws < 1:
        raise ConfigError(f"need n >= 1 samples and draws >= 1, got n={n}, draws={draws}")
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, n, (draws, n), generator=generator)


def percentile_interval(
    values: Sequence[float] | torch.Tensor, level: float = 0.95, *, center: float | None = None
) -> tuple[float, float]:
    """``(low, high)``: the central ``level`` percentile interval of bootstrap replicates.

    With ``center`` (the point estimate) the replicates are first shifted so that their mean is
    ``center``: a bias-corrected percentile interval. MAUVE needs it, since a resampled
    histogram is noisier than the original and its replicates sit below the point value.
    """
    if not 0.0 < level < 1.0:
        raise ConfigError(f"level must lie in (0, 1), got {level}")
    v = torch.as_tensor(values, dtype=torch.float64)
    if v.numel() == 0:
        raise ConfigError("no replicates to take an interval of")
    if center is not None:
        v = v + (center - v.mean())
    tail = (1.0 - level) / 2.0
    low, high = torch.quantile(v, torch.tensor([tail, 1.0 - tail], dtype=torch.float64)).tolist()
    return low, high


def replicates(
    per_sample: torch.Tensor,
    statistic: Callable[[torch.Tensor], torch.Tensor],
    index: torch.Tensor,
) -> torch.Tensor:
    """``statistic`` of every resample: ``[draws]`` float64.

    Args:
        per_sample: ``[N, ...]`` per-sample values (e.g. ``[N]`` entropies, ``[N, 2]`` NLL sums
            and token counts).
        statistic: maps ``[draws, N, ...]`` to ``[draws]`` (e.g. a mean over dim 1).
        index: ``[draws, N]`` from :func:`resample_indices`.
    """
    return statistic(per_sample[index]).double()


def token_weighted_ppl(nll_and_count: torch.Tensor) -> torch.Tensor:
    """``exp(sum NLL / sum count)`` over dim ``-2`` of ``[..., N, 2]`` (NLL sum, token count)."""
    totals = nll_and_count.double().sum(dim=-2)
    return torch.exp(totals[..., 0] / totals[..., 1].clamp_min(1.0))


def mauve_replicates(
    p_features: Any,
    q_features: Any,
    *,
    draws: int,
    seed: int = 0,
    quantizations: int = 10,
    **mauve_options: Any,
) -> tuple[float, torch.Tensor]:
    """MAUVE of samples ``q`` against references ``p`` and ``draws`` bootstrap replicates.

    MAUVE quantizes both feature sets with k-means, and the k-means seed alone moves the score a
    lot at a few hundred samples (0.03, 0.05 and 0.11 under seeds 0-2 for two 500-sample sets of
    576-dim Gaussian features, one shifted by 0.3), so the score is computed under
    ``quantizations`` seeds (``seed``, ``seed + 1``, ...):

    * the point value is the mean of ``mauve.compute_mauve(p_features=..., q_features=...,
      seed=s)`` over those seeds (with ``quantizations=1``: the package's score at ``seed``);
    * replicate ``d`` takes the quantization ``d % quantizations``, redraws the samples' cluster
      histogram as ``Multinomial(N_q, q_hist) / N_q`` over its clusters and recomputes the
      divergence curve and its area with the package's own functions. So the intervals carry the
      spread of the quantization as well as that of the samples. The reference histogram of each
      quantization is held fixed (it is shared by every point of a study), and two rows scored
      with the same ``seed`` share quantization seeds replicate by replicate, so their paired
      differences cancel part of that spread.

    Resampling the features themselves would put duplicates into k-means and move the score by
    itself, which is why the histogram is resampled instead.

    Args:
        p_features: ``[N_p, H]`` reference features (numpy or tensor).
        q_features: ``[N_q, H]`` sample features.
        draws: bootstrap replicates.
        seed: first k-means seed, and seed of the multinomial draws.
        quantizations: k-means seeds (each costs one ``compute_mauve`` call, ~0.35 s for 2 x 500
            features on one CPU thread).
        mauve_options: passed to ``compute_mauve`` (e.g. ``num_buckets``).

    Returns:
        ``(mauve, replicates [draws] float64)``.
    """
    import numpy as np
    from mauve import compute_mauve
    from mauve.compute_mauve import compute_area_under_curve, get_divergence_curve_for_multinomials

    if quantizations < 1:
        raise ValueError(f"quantizations must be >= 1, got {quantizations}")
    p_arr, q_arr = np.asarray(p_features), np.asarray(q_features)
    results = [
        compute_mauve(
            p_features=p_arr, q_features=q_arr, seed=seed + k, verbose=False, **mauve_options
        )  # fmt: skip
        for k in range(quantizations)
    ]
    scaling = mauve_options.get("mauve_scaling_factor", 5)
    size = mauve_options.get("divergence_curve_discretization_size", 25)
    weights = np.linspace(1e-6, 1 - 1e-6, size)
    rng = np.random.default_rng(seed)
    n_q = q_arr.shape[0]
    out = []
    for d in range(draws):
        result = results[d % quantizations]
        q_hist = rng.multinomial(n_q, result.q_hist / result.q_hist.sum()) / n_q
        x, y = get_divergence_curve_for_multinomials(result.p_hist, q_hist, weights, scaling).T
        i, j = np.argsort(x), np.argsort(y)
        area = compute_area_under_curve(x[i], y[i]) + compute_area_under_curve(y[j], x[j])
        out.append(0.5 * area)
    point = float(np.mean([r.mauve for r in results]))
    return point, torch.tensor(out, dtype=torch.float64)
