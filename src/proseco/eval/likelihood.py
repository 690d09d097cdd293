"""Likelihoods of diffusion models: the Monte Carlo ELBO of a continuation and the held-out NELBO.

* :func:`elbo_loglikelihood` — ``log p(target | context)`` estimated by the ELBO, as LLaDA scores
  multiple-choice answers (used by the lm-eval model of :mod:`proseco.eval.harness`);
  :func:`stratified_mask_counts` draws its mask counts.
* :func:`validation_nelbo` — the NELBO per token (and its perplexity bound) of a diffusion model
  on held-out token ids (``proseco eval nelbo``), with the bound of the model's training method.

Neither needs lm-eval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from proseco.errors import ConfigError, DataError
from proseco.methods import method_for_model
from proseco.models.protocol import call_model

__all__ = ["elbo_loglikelihood", "stratified_mask_counts", "validation_nelbo"]


def stratified_mask_counts(n: int, draws: int, generator: torch.Generator | None) -> torch.Tensor:
    """``[draws]`` numbers of masked positions in ``1..n``, stratified over the draws.

    Draw ``j`` takes ``ceil(n * (u + j) / draws)`` with one uniform offset ``u``: each count is
    uniform on ``1..n`` (as the ELBO needs) while the draws cover the range evenly (less variance
    than independent draws; LLaDA's estimator does the same).
    """
    u = torch.rand((), generator=generator)
    fractions = (u + torch.arange(draws, dtype=torch.float64)) / draws
    return torch.ceil(fractions * n).clamp(1, n).long()


@torch.no_grad()
def elbo_loglikelihood(
    model: Any,
    context: Sequence[int],
    target: Sequence[int],
    *,
    mask_id: int,
    mc_num: int = 128,
    mc_batch_size: int = 32,
    generator: torch.Generator | None = None,
    conditioning: dict[str, Any] | None = None,
) -> tuple[float, int]:
    """Monte Carlo ELBO of ``log p(target | context)`` for a masked diffusion model.

    Each draw masks ``m`` of the ``n`` target positions (``m`` uniform on ``1..n``, positions
    uniform) and scores ``(n / m) * sum over masked positions of log p(x_i | masked input)``; the
    mean over draws is an unbiased estimate of the ELBO, a lower bound on the log-likelihood
    (LLaDA, Eq. 6). The context is never masked; the mask token is excluded from the softmax, as
    in training.

    Args:
        model: any model of :mod:`proseco.models.protocol` (time-conditioned ones get ``t = m/n``).
        context: prompt token ids (may be empty).
        target: continuation token ids, ``n >= 1``.
        mask_id: the mask token id.
        mc_num: Monte Carlo draws.
        mc_batch_size: draws per forward pass.
        generator: CPU ``torch.Generator`` for the draws.
        conditioning: extra model keyword arguments.

    Returns:
        ``(estimate, forward_passes)``.
    """
    n = len(target)
    if n == 0:
        return 0.0, 0
    device = next(iter(model.parameters())).device if hasattr(model, "parameters") else "cpu"
    seq = torch.tensor([*context, *target], dtype=torch.long)
    p = len(context)
    target_ids = seq[p:]
    counts = stratified_mask_counts(n, mc_num, generator)
    total, passes = 0.0, 0
    for chunk in counts.split(mc_batch_size):
        rows = len(chunk)
        ranks = torch.rand(rows, n, generator=generator).argsort(dim=1).argsort(dim=1)
        masked = ranks < chunk[:, None]  # [rows, n], exactly chunk[r] True per row
        x = seq.repeat(rows, 1)
        x[:, p:] = torch.where(masked, torch.full_like(x[:, p:], mask_id), x[:, p:])
        t = (chunk.double() / n).float()
        logits = call_model(model, x.to(device), t.to(device), **(conditioning or {}))
        logits = logits[:, p:].float().cpu()
        no_mask = torch.zeros(logits.shape[-1])
        no_mask[mask_id] = float("-inf")  # the mask token is never a prediction
        logits = logits + no_mask
        logp = F.log_softmax(logits, dim=-1).gather(-1, target_ids.expand(rows, n)[..., None])
        per_draw = (logp.squeeze(-1) * masked).sum(dim=1) * (n / chunk.double())
        total += float(per_draw.sum())
        passes += 1
    return total / mc_num, passes


@torch.no_grad()
def validation_nelbo(
    model: Any,
    input_ids: torch.Tensor,
    *,
    mask_id: int,
    loss_mask: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    batch_size: int = 16,
    num_draws: int = 1,
    schedule: Any = None,
    seed: int = 0,
    t_min: float = 1e-3,
) -> dict[str, float]:
    """The MDLM NELBO per token of a diffusion model on held-out sequences, and its perplexity.

    Each row is noised ``num_draws`` times (times drawn antithetically per batch from one seeded
    generator) and scored with the bound of the model's training method
    (:meth:`proseco.methods.TrainingMethod.nelbo`: :func:`proseco.losses.mdm_loss` for a
    masked diffusion model, :func:`proseco.losses.udlm_loss` for a uniform-noise one, read from
    its config); the result is ``sum of NELBO terms / number of loss tokens`` over all draws, an
    unbiased estimate of the NELBO per token, and ``ppl = exp(nelbo)`` bounds the model's
    perplexity from above. A causal (AR) model has no such bound: ``ConfigError``.

    Args:
        model: a diffusion model following :mod:`proseco.models.protocol`.
        input_ids: clean held-out tokens ``[N, L]`` (e.g. the wrapped validation split).
        mask_id: the mask token id.
        loss_mask: ``[N, L]`` bool, positions that count and may be masked (default all).
        attention_mask: ``[N, L]``, 0 at padding, passed to the model (padded layouts).
        batch_size: rows per forward pass.
        num_draws: noise draws per row (more = less variance).
        schedule: noise schedule (default log-linear).
        seed: seeds the time and mask draws.
        t_min: smallest time drawn.

    Returns:
        ``{"nelbo": nats per token, "ppl": exp(nelbo), "tokens": loss tokens per draw}``.
    """
    if input_ids.dim() != 2 or input_ids.shape[0] == 0:
        raise DataError(f"input_ids must be a non-empty [N, L] tensor, got {input_ids.shape}")
    if batch_size < 1 or num_draws < 1:
        raise ConfigError(f"batch_size and num_draws must be >= 1, got {batch_size}, {num_draws}")
    device = next(model.parameters()).device if hasattr(model, "parameters") else None
    generator = torch.Generator(device=device or "cpu").manual_seed(seed)
    loss_fn = method_for_model(model).nelbo
    total, tokens = 0.0, 0
    for _ in range(num_draws):
        for start in range(0, input_ids.shape[0], batch_size):
            rows = slice(start, start + batch_size)
            x0 = input_ids[rows].to(device)
            keep = None if loss_mask is None else loss_mask[rows].to(device)
            pad = None
            if attention_mask is not None:
                pad = {"attention_mask": attention_mask[rows].to(device)}
            out = loss_fn(
                model, x0, mask_id=mask_id, schedule=schedule, loss_mask=keep,
                conditioning=pad, generator=generator, t_min=t_min,
            )  # fmt: skip
            total += float(out.mdm_terms.double().sum())
            tokens += int(x0.numel() if keep is None else keep.sum())
    if tokens == 0:
        raise DataError("loss_mask selects no tokens; nothing to evaluate")
    nelbo = total / tokens
    return {"nelbo": nelbo, "ppl": math.exp(nelbo), "tokens": tokens // num_draws}
