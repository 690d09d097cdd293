"""UDLM (Schiff et al., 2025): the continuous-time NELBO of uniform-noise diffusion.

The forward process (:func:`proseco.noising.uniform_noise_tokens`) replaces a token by one drawn
uniformly from the vocabulary without the mask token; the model sees ``zt`` and ``t``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from proseco.losses.inputs import check_loss_inputs, check_token_range, positions_and_times
from proseco.losses.output import LossOutput
from proseco.models.protocol import call_model, model_vocab_size
from proseco.noising import uniform_noise_tokens
from proseco.schedules import Schedule, get_schedule

__all__ = ["udlm_loss", "udlm_terms"]


def _drop_column(values: torch.Tensor, column: int | None) -> torch.Tensor:
    """``values`` ``[..., V]`` without column ``column`` (``None``: unchanged)."""
    if column is None:
        return values
    return torch.cat([values[..., :column], values[..., column + 1 :]], dim=-1)


def _reduced_ids(ids: torch.Tensor, mask_id: int | None) -> torch.Tensor:
    """Token ids in the ``N``-column space without the mask column."""
    if mask_id is None:
        return ids.long()
    return ids.long() - (ids > mask_id).long()


def udlm_terms(
    logits: torch.Tensor,
    x0: torch.Tensor,
    zt: torch.Tensor,
    alpha: torch.Tensor,
    dalpha: torch.Tensor,
    *,
    mask_id: int | None,
) -> torch.Tensor:
    """The UDLM continuous-time NELBO integrand per token, ``[B, L]`` (float32 or wider).

    Schiff et al. (2025), the uniform-noise ELBO: with ``N`` non-mask tokens,
    ``xbar = N alpha x + (1 - alpha) 1`` (``x`` = one-hot of ``x0``), ``xbar_theta = N alpha
    x_theta + (1 - alpha) 1`` and ``i = zt``::

        term = alpha' / (N alpha) * [ N / xbar_i - N / xbar_theta_i
                                      - sum_j (xbar_j / xbar_i) log(xbar_theta_i xbar_j /
                                                                    (xbar_theta_j xbar_i)) ]

    evaluated as the equal, non-negative sum ``-alpha' / (N alpha) * sum_j r_j (exp(u_j) - 1 -
    u_j)`` with ``r_j = xbar_j / xbar_i`` and ``u_j = log(xbar_theta_j / xbar_theta_i) - log r_j``
    (``sum_j xbar_j = sum_j xbar_theta_j = N``). It is 0 exactly when ``x_theta = x``.

    Args:
        logits: model outputs ``[B, L, V]``; the mask column is dropped, ``x_theta`` is the softmax
            over the other ``N`` columns.
        x0, zt: clean and noised tokens ``[B, L]`` (no mask ids).
        alpha, dalpha: ``alpha(t)`` and ``alpha'(t)`` ``[B]``, ``0 < alpha < 1``.
        mask_id: the column that is not a token of the process (``None``: every column is).
    """
    log_x_theta = F.log_softmax(_drop_column(logits.float(), mask_id), dim=-1)  # [B, L, N]
    n = log_x_theta.shape[-1]
    a = alpha.to(log_x_theta.dtype).view(-1, 1, 1)
    da = dalpha.to(log_x_theta.dtype).view(-1, 1)
    x = _reduced_ids(x0, mask_id).unsqueeze(-1)
    i = _reduced_ids(zt, mask_id).unsqueeze(-1)
    # log xbar_theta = log(N alpha x_theta + (1 - alpha)), stable for tiny x_theta
    log_xbar_theta = torch.logaddexp(torch.log(n * a) + log_x_theta, torch.log1p(-a))
    log_rtheta = log_xbar_theta - log_xbar_theta.gather(-1, i)  # [B, L, N]
    # xbar has two values: N alpha + 1 - alpha at x, 1 - alpha elsewhere
    log_hi, log_lo = torch.log(n * a + 1.0 - a), torch.log1p(-a)  # [B, 1, 1]
    onehot = torch.zeros_like(log_x_theta, dtype=torch.bool).scatter_(-1, x, True)
    log_xbar = torch.where(onehot, log_hi, log_lo)
    log_r = log_xbar - log_xbar.gather(-1, i)
    u = log_rtheta - log_r
    inner = (log_r.exp() * (torch.expm1(u) - u)).sum(-1)  # [B, L], >= 0
    return -da / (n * a.view(-1, 1)) * inner


def udlm_loss(
    model: Any,
    x0: torch.Tensor,
    *,
    mask_id: int | None,
    schedule: Schedule | str | None = None,
    t: torch.Tensor | None = None,
    zt: torch.Tensor | None = None,
    loss_mask: torch.Tensor | None = None,
    noise_mask: torch.Tensor | None = None,
    conditioning: Mapping[str, Any] | None = None,
    generator: torch.Generator | None = None,
    t_min: float = 1e-3,
    antithetic: bool = True,
) -> LossOutput:
    """The UDLM continuous-time NELBO (uniform noise): ``sum_l term_l / N_loss``.

    The forward process is :func:`proseco.noising.uniform_noise_tokens` over the vocabulary
    minus the mask token; the model (normally time-conditioned) sees ``zt`` and ``t``, and its
    mask column is excluded. Per-token terms are :func:`udlm_terms`; they count at loss positions
    that may be noised (``loss_mask & noise_mask``), clean or not, and are divided by the number
    of loss positions as in :func:`~proseco.losses.mdm_loss`.

    Args:
        model: a model following the protocol (``model(input_ids, timesteps=t, **conditioning)``).
        x0: clean tokens ``[B, L]``.
        mask_id: the mask id (never used as a token); ``None`` if the vocabulary has none.
        schedule: noise schedule (default log-linear).
        t: times ``[B]`` in ``(0, 1]``; drawn on ``[t_min, 1]`` when omitted.
        zt: noised tokens ``[B, L]``; drawn from ``q(zt | x0)`` when omitted (needs ``t``).
        loss_mask: ``[B, L]`` bool, positions that carry loss (default all).
        noise_mask: ``[B, L]`` bool, positions that may be noised (default ``loss_mask``).
        conditioning: extra model kwargs (``class_labels``, ``attention_mask``).
        generator: RNG for ``t`` and ``zt``.
        t_min, antithetic: how ``t`` is drawn (see :func:`proseco.noising.sample_t`).

    Returns:
        :class:`LossOutput`: ``loss`` (with gradient), ``mdm_loss`` = the same NELBO per token
        (detached), ``mdm_terms`` ``[B, L]``, ``num_masked`` = positions where ``zt != x0``,
        ``xt = zt``, ``corrector_loss = 0``; its term is named ``udlm_nelbo``.
    """
    schedule = get_schedule(schedule)
    check_loss_inputs(model, x0, mask_id, t, None, loss_mask, noise_mask)
    if zt is not None and t is None:
        raise ValueError("zt was given without t; pass the t that produced zt")
    conditioning = dict(conditioning or {})
    loss_mask, noise_mask, t = positions_and_times(
        x0, loss_mask, noise_mask, t, t_min=t_min, antithetic=antithetic, generator=generator
    )
    noise_mask = noise_mask.bool()
    vocab = model_vocab_size(model)
    if zt is None:
        if vocab is None:
            raise ValueError("the model declares no vocabulary size (config.vocab_size); pass zt")
        zt = uniform_noise_tokens(
            x0, t, vocab_size=vocab, mask_id=mask_id, schedule=schedule, noise_mask=noise_mask,
            generator=generator,
        )  # fmt: skip
    else:
        _check_uniform_zt(x0, zt, mask_id, noise_mask)
    logits = call_model(model, zt, t, **conditioning)
    check_token_range(x0, logits.shape[-1], "x0")
    if mask_id is not None and mask_id >= logits.shape[-1]:
        raise ValueError(
            f"mask_id {mask_id} is outside the model's vocabulary of {logits.shape[-1]}"
        )
    terms = udlm_terms(logits, x0, zt, schedule.alpha(t), schedule.dalpha(t), mask_id=mask_id)
    terms = torch.where(loss_mask & noise_mask, terms, 0.0)
    num_tokens = loss_mask.sum().clamp(min=1)
    loss = terms.sum() / num_tokens
    return LossOutput(
        loss=loss,
        mdm_loss=loss.detach(),
        corrector_loss=torch.zeros((), device=x0.device),
        mdm_terms=terms.detach(),
        corrector_terms=None,
        num_tokens=num_tokens,
        num_masked=((zt != x0) & loss_mask).sum(),
        t=t,
        xt=zt,
        y=None,
        proposal_error_rate=None,
        term_names=("udlm_nelbo", None),
    )


def _check_uniform_zt(
    x0: torch.Tensor, zt: torch.Tensor, mask_id: int | None, noise_mask: torch.Tensor
) -> None:
    if tuple(zt.shape) != tuple(x0.shape):
        raise ValueError(f"zt has shape {tuple(zt.shape)} but x0 has {tuple(x0.shape)}")
    if mask_id is not None and bool((zt == mask_id).any()):
        raise ValueError(f"zt contains the mask id {mask_id}; uniform noise never draws it")
    if bool(((zt != x0) & ~noise_mask).any()):
        raise ValueError("zt differs from x0 at positions noise_mask keeps clean")
