"""The first pass every masked-diffusion loss shares (MDLM, ProSeCo, PRISM).

:func:`masked_pass` checks the arguments, draws ``t`` and then ``xt ~ q(xt | x0)`` (in that
order, so one ``generator`` seed fixes both), runs the model on ``xt`` and computes the MDLM
NELBO terms ``w(t) -log p1(x0)`` at the masked loss positions (SUBS: the mask token is never a
prediction). The losses built on it add their second pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from proseco.errors import ConfigError
from proseco.losses.config import LossConfig
from proseco.losses.inputs import (
    check_loss_inputs,
    check_token_range,
    log_probs_without_mask,
    positions_and_times,
)
from proseco.models.protocol import call_model, call_model_with_quality
from proseco.noising import mask_tokens
from proseco.schedules import Schedule

__all__ = ["MaskedPass", "masked_pass"]


@dataclass
class MaskedPass:
    """Pass 1 of a masked-diffusion loss.

    Attributes:
        t: times ``[B]`` (float32); xt: the noised input ``[B, L]``.
        loss_mask: ``[B, L]`` bool, positions that carry loss.
        weight: ``w(t)`` ``[B, 1]``.
        num_tokens: ``N``, the number of loss positions (at least 1).
        target: ``x0`` as ``[B, L, 1]`` int64, ready for ``gather``.
        masked: ``[B, L]`` bool, masked loss positions.
        log_probs: pass-1 log-probabilities ``[B, L, V]`` with the mask token excluded (set it
            to ``None`` once used: pass 2 should not keep it alive).
        mdm_terms: the MDLM terms ``[B, L]`` (0 off the masked loss positions), with gradient.
    """

    t: torch.Tensor
    xt: torch.Tensor
    loss_mask: torch.Tensor
    weight: torch.Tensor
    num_tokens: torch.Tensor
    target: torch.Tensor
    masked: torch.Tensor
    log_probs: torch.Tensor | None
    mdm_terms: torch.Tensor


def masked_pass(
    model: Any,
    x0: torch.Tensor,
    *,
    mask_id: int,
    schedule: Schedule,
    config: LossConfig,
    t: torch.Tensor | None,
    xt: torch.Tensor | None,
    loss_mask: torch.Tensor | None,
    noise_mask: torch.Tensor | None,
    conditioning: Mapping[str, Any],
    generator: torch.Generator | None,
    with_quality: bool = False,
) -> MaskedPass:
    """Check, draw ``t`` and ``xt`` where not given, run pass 1 and score the MDLM terms.

    Args:
        model, x0, mask_id, t, xt, loss_mask, noise_mask, generator: as in
            :func:`proseco.losses.proseco_loss`.
        schedule: the noise schedule (an object: see :func:`proseco.schedules.get_schedule`).
        config: ``t_min`` and ``antithetic`` decide the time draw.
        conditioning: extra model keyword arguments.
        with_quality: call the model as PRISM does (its output must carry quality logits:
            :class:`~proseco.errors.ConfigError` for a model without a quality head).
    """
    check_loss_inputs(model, x0, mask_id, t, xt, loss_mask, noise_mask)
    loss_mask, noise_mask, t = positions_and_times(
        x0, loss_mask, noise_mask, t, t_min=config.t_min, antithetic=config.antithetic,
        generator=generator,
    )  # fmt: skip
    if xt is None:
        xt = mask_tokens(
            x0, t, mask_id=mask_id, schedule=schedule, noise_mask=noise_mask, generator=generator
        )
    weight = schedule.weight(t).view(-1, 1)  # [B, 1]
    num_tokens = loss_mask.sum().clamp(min=1)
    target = x0.long().unsqueeze(-1)

    if with_quality:
        logits, quality = call_model_with_quality(model, xt, t, **conditioning)
        if quality is None:
            raise ConfigError(
                "loss.objective: prism needs a model with a quality head (its output has "
                "quality_logits); build the DiT with quality_head=True or call "
                "model.add_quality_head() (the trainer does this for loss.objective: prism)"
            )
    else:
        logits = call_model(model, xt, t, **conditioning)
    logits = logits.float()
    check_token_range(x0, logits.shape[-1], "x0")
    if mask_id >= logits.shape[-1]:
        raise ValueError(
            f"mask_id {mask_id} is outside the model's vocabulary of {logits.shape[-1]}"
        )
    log_probs = log_probs_without_mask(logits, mask_id)
    masked = (xt == mask_id) & loss_mask
    mdm_terms = torch.where(masked, -log_probs.gather(-1, target).squeeze(-1) * weight, 0.0)
    return MaskedPass(t, xt, loss_mask, weight, num_tokens, target, masked, log_probs, mdm_terms)
