"""PRISM (Kim et al., 2025): fine-tune a model with a per-token quality head::

logits1 = model(xt)                       # pass 1: MDLM term (masked.py)
F       = prism_fill random masked positions per row
y       = xt with y_F ~ p1 (stop_grad)     # the model's own samples
q       = model(y).quality_logits         # pass 2: the head scores every position
L_q     = mean_{i in F} BCE(q_i, 1[y_i == x0_i])
loss    = L_q + mdm_weight L_mdm / (number of loss positions)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from proseco.losses.config import LossConfig, with_options
from proseco.losses.masked import masked_pass
from proseco.losses.output import LossOutput
from proseco.models.protocol import call_model_with_quality
from proseco.schedules import Schedule, get_schedule

__all__ = ["fill_positions", "prism_loss"]


def fill_positions(
    candidates: torch.Tensor, count: int, generator: torch.Generator | None
) -> torch.Tensor:
    """``count`` positions per row chosen uniformly among ``candidates`` ``[B, L]`` (all of
    them when a row has fewer); returns a ``[B, L]`` bool mask."""
    u = torch.rand(candidates.shape, generator=generator, device=candidates.device)
    u = u.masked_fill(~candidates, -1.0)
    k = min(count, candidates.shape[1])
    top = torch.topk(u, k, dim=1).indices
    chosen = torch.zeros_like(candidates).scatter_(1, top, True)
    return chosen & candidates


def prism_loss(
    model: Any,
    x0: torch.Tensor,
    *,
    mask_id: int,
    schedule: Schedule | str | None = None,
    config: LossConfig | None = None,
    t: torch.Tensor | None = None,
    xt: torch.Tensor | None = None,
    fill: torch.Tensor | None = None,
    loss_mask: torch.Tensor | None = None,
    noise_mask: torch.Tensor | None = None,
    conditioning: Mapping[str, Any] | None = None,
    generator: torch.Generator | None = None,
    backward_fn: Callable[[torch.Tensor], None] | None = None,
    **options: Any,
) -> LossOutput:
    """PRISM fine-tuning loss: the head learns whether each filled token equals the clean token.

    Pass 1 runs the model on ``xt`` (the MDLM term, weight ``config.mdm_weight``; PRISM's
    ``reg_lambda``) and, without gradient, draws a token from its distribution (mask excluded,
    no temperature) at ``config.prism_fill`` random masked loss positions per row. Pass 2 runs
    the model on that filled input ``y`` and takes the binary cross-entropy of its
    ``quality_logits`` against ``1[y_i == x0_i]`` at the filled positions only, averaged over
    them. Gradients of both terms reach the whole network (PRISM tunes the backbone too).

    Args:
        model: a model with a quality head (its output has ``quality_logits`` ``[B, L]``).
        x0, mask_id, schedule, t, xt, loss_mask, noise_mask, conditioning, generator,
        backward_fn: as in :func:`~proseco.losses.proseco_loss` (``backward_fn`` receives the
            MDLM part after pass 1 and the head part after pass 2).
        config: :class:`LossConfig` (``mdm_weight``, ``prism_fill``, ``t_min``, ``antithetic``);
            ``**options`` override its fields.
        fill: ``[B, L]`` bool, the positions to fill (must be masked in ``xt``); drawn when
            omitted.

    Returns:
        :class:`LossOutput` with ``loss = L_q + mdm_weight * mdm_loss``; terms ``mdlm_nelbo``
        and ``prism_bce`` (``corrector_loss`` = ``L_q``, the mean BCE per filled position),
        ``y`` = the filled input, ``proposal_error_rate`` = share of filled tokens that are
        wrong, ``quality_accuracy`` and ``num_filled``.

    Raises:
        ConfigError: if the model returns no ``quality_logits``.
    """
    config = with_options(config, options)
    schedule = get_schedule(schedule)
    conditioning = dict(conditioning or {})
    first = masked_pass(
        model, x0, mask_id=mask_id, schedule=schedule, config=config, t=t, xt=xt,
        loss_mask=loss_mask, noise_mask=noise_mask, conditioning=conditioning,
        generator=generator, with_quality=True,
    )  # fmt: skip
    t, xt, num_tokens, masked = first.t, first.xt, first.num_tokens, first.masked
    mdm_terms = first.mdm_terms
    mdm_sum = mdm_terms.sum()
    with torch.no_grad():
        if fill is None:
            fill = fill_positions(masked, config.prism_fill, generator)
        elif bool((fill.bool() & (xt != mask_id)).any()):
            raise ValueError("fill marks positions that are not masked in xt; fill masks only")
        fill = fill.bool()
        probs = first.log_probs.detach().exp()[fill]  # [N, V]
        y = xt.clone()
        if len(probs):
            y[fill] = torch.multinomial(probs, 1, generator=generator).squeeze(-1).to(y.dtype)
    mdm_part = config.mdm_weight * mdm_sum / num_tokens
    if backward_fn is not None:
        if mdm_part.requires_grad:  # (not when only the head trains)
            backward_fn(mdm_part)
        mdm_part, mdm_sum, mdm_terms = mdm_part.detach(), mdm_sum.detach(), mdm_terms.detach()
    first.log_probs = first.mdm_terms = None  # pass 2 does not keep pass 1's tensors alive

    _, quality = call_model_with_quality(model, y, t, **conditioning)
    labels = (y == x0).float()
    bce = F.binary_cross_entropy_with_logits(quality.float(), labels, reduction="none")
    quality_terms = torch.where(fill, bce, 0.0)
    num_filled = fill.sum()
    quality_loss = quality_terms.sum() / num_filled.clamp(min=1)
    if backward_fn is not None:
        backward_fn(quality_loss)
        quality_loss = quality_loss.detach()
    loss = quality_loss + mdm_part
    with torch.no_grad():
        denom = num_filled.clamp(min=1)
        wrong = ((y != x0) & fill).sum() / denom
        agree = (((quality.detach() > 0).float() == labels) & fill).sum() / denom
    return LossOutput(
        loss=loss.detach() if backward_fn is not None else loss,
        mdm_loss=(mdm_sum / num_tokens).detach(),
        corrector_loss=quality_loss.detach(),
        mdm_terms=mdm_terms.detach(),
        corrector_terms=quality_terms.detach(),
        num_tokens=num_tokens,
        num_masked=masked.sum(),
        t=t,
        xt=xt,
        y=y,
        proposal_error_rate=wrong,
        quality_accuracy=agree,
        num_filled=num_filled,
        term_names=("mdlm_nelbo", "prism_bce"),
    )
