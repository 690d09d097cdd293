"""The ProSeCo self-correction loss (paper, Algorithm 1) and the MDLM NELBO it contains::

    logits1 = model(xt)                       # SUBS: mask logit -inf, unmasked positions carry over
    L_mdm   = sum_l [xt_l == m] w(t) -log p1(x0_l)
    y       = stop_grad(argmax p1)            # == xt at unmasked positions (SUBS), argmax at masked
    logits2 = model(y)                        # mask logit -inf, no carry-over
    L_sc    = sum_l w(t) -log p2(x0_l)        # at every loss position
    loss    = (mdm_weight L_mdm + sc_weight L_sc) / (number of loss positions)

``sc_weight = 0`` is MDLM (:func:`mdm_loss`): pass 2 is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from proseco.losses.config import LossConfig, with_options
from proseco.losses.inputs import log_probs_without_mask
from proseco.losses.masked import masked_pass
from proseco.losses.output import LossOutput
from proseco.models.protocol import call_model
from proseco.schedules import Schedule, get_schedule

__all__ = ["mdm_loss", "proseco_loss"]


def proseco_loss(
    model: Any,
    x0: torch.Tensor,
    *,
    mask_id: int,
    schedule: Schedule | str | None = None,
    config: LossConfig | None = None,
    t: torch.Tensor | None = None,
    xt: torch.Tensor | None = None,
    loss_mask: torch.Tensor | None = None,
    noise_mask: torch.Tensor | None = None,
    conditioning: Mapping[str, Any] | None = None,
    step: int | None = None,
    generator: torch.Generator | None = None,
    backward_fn: Callable[[torch.Tensor], None] | None = None,
    **options: Any,
) -> LossOutput:
    """ProSeCo loss (Algorithm 1): MDLM term plus a corrector term on the model's own argmax.

    Args:
        model: a model following the protocol (``model(input_ids, **conditioning)``).
        x0: clean tokens ``[B, L]``.
        mask_id: the mask token id.
        schedule: noise schedule (default log-linear, ``w(t) = 1/t``).
        config: loss options (:class:`LossConfig`); ``**options`` override its fields.
        t: times ``[B]`` in ``(0, 1]``; drawn on ``[t_min, 1]`` when omitted.
        xt: noised tokens ``[B, L]``; drawn from ``q(xt | x0)`` when omitted (needs ``t``).
        loss_mask: ``[B, L]`` bool, positions that carry loss (default all). ``N`` is its sum.
        noise_mask: ``[B, L]`` bool, positions that may be masked (default ``loss_mask``).
            Padding and SFT prompts belong to neither.
        conditioning: extra model kwargs used in both passes (``class_labels``, ``attention_mask``).
        step: the optimizer step, compared with ``config.start_step``.
        generator: RNG for ``t``, ``xt`` and a sampled proposal.
        backward_fn: two-backward memory mode. When given, the loss calls
            ``backward_fn(mdm part)`` right after pass 1 (freeing its activations) and
            ``backward_fn(corrector part)`` after pass 2; the returned ``loss`` is detached.
            Gradients equal those of ``backward_fn(loss)`` in the one-backward mode. Peak
            activation memory is MDLM's instead of about twice it, and the step is no slower
            (``benchmarks/loss_step.py``), so the training engine uses it by default
            (``loss.two_backward``).

    Returns:
        :class:`LossOutput` with terms ``mdlm_nelbo`` and ``corrector_nll`` (this one only when
        ``sc_weight > 0``).
    """
    config = with_options(config, options)
    schedule = get_schedule(schedule)
    conditioning = dict(conditioning or {})
    first = masked_pass(
        model, x0, mask_id=mask_id, schedule=schedule, config=config, t=t, xt=xt,
        loss_mask=loss_mask, noise_mask=noise_mask, conditioning=conditioning,
        generator=generator,
    )  # fmt: skip
    t, xt, loss_mask, num_tokens = first.t, first.xt, first.loss_mask, first.num_tokens
    mdm_terms = first.mdm_terms
    mdm_sum = mdm_terms.sum()

    use_corrector = config.sc_weight > 0 and (step is None or step >= config.start_step)
    y = None
    if use_corrector:
        with torch.no_grad():
            y = corrector_input(first.log_probs.detach(), xt, mask_id, loss_mask, config, generator)
    if backward_fn is not None:
        backward_fn(config.mdm_weight * mdm_sum / num_tokens)
        mdm_sum = mdm_sum.detach()
        mdm_terms = mdm_terms.detach()
    first.log_probs = first.mdm_terms = None  # pass 2 does not keep pass 1's tensors alive

    corrector_terms = None
    corrector_sum = torch.zeros((), device=x0.device)
    error_rate = None
    if use_corrector:
        # Pass 2: corrector on the model's own proposal; mask logit excluded, no carry-over.
        logits2 = call_model(model, y, t, **conditioning).float()
        logp2 = log_probs_without_mask(logits2, mask_id)
        nll2 = -logp2.gather(-1, first.target).squeeze(-1)
        if config.errors_upweighted:
            nll2 = torch.where(y == x0, -torch.exp(-nll2), nll2)
        corrector_weight = first.weight if config.weighted else 1.0
        corrector_terms = torch.where(loss_mask, nll2 * corrector_weight, 0.0)
        corrector_sum = corrector_terms.sum()
        error_rate = (((y != x0) & loss_mask).sum() / num_tokens).detach()
        if backward_fn is not None:
            backward_fn(config.sc_weight * corrector_sum / num_tokens)
            corrector_sum = corrector_sum.detach()

    loss = (config.mdm_weight * mdm_sum + config.sc_weight * corrector_sum) / num_tokens
    if backward_fn is not None:
        loss = loss.detach()
    return LossOutput(
        loss=loss,
        mdm_loss=(mdm_sum / num_tokens).detach(),
        corrector_loss=(corrector_sum / num_tokens).detach(),
        mdm_terms=mdm_terms.detach(),
        corrector_terms=None if corrector_terms is None else corrector_terms.detach(),
        num_tokens=num_tokens,
        num_masked=first.masked.sum(),
        t=t,
        xt=xt,
        y=y,
        proposal_error_rate=error_rate,
        term_names=("mdlm_nelbo", "corrector_nll" if config.sc_weight > 0 else None),
    )


def corrector_input(
    logp1: torch.Tensor,
    xt: torch.Tensor,
    mask_id: int,
    loss_mask: torch.Tensor,
    config: LossConfig,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """The stop-gradient proposal ``y`` ``[B, L]`` built from pass-1 log-probs ``[B, L, V]``."""
    if config.proposal == "argmax":
        proposal = logp1.argmax(-1)
    else:
        probs = logp1.exp().reshape(-1, logp1.shape[-1])
        proposal = torch.multinomial(probs, 1, generator=generator).view(xt.shape)
    if config.corrector_input == "masked_only":
        replace = xt == mask_id
    else:
        replace = loss_mask | (xt == mask_id)
    return torch.where(replace, proposal, xt)


def mdm_loss(
    model: Any,
    x0: torch.Tensor,
    *,
    mask_id: int,
    schedule: Schedule | str | None = None,
    t: torch.Tensor | None = None,
    xt: torch.Tensor | None = None,
    loss_mask: torch.Tensor | None = None,
    noise_mask: torch.Tensor | None = None,
    conditioning: Mapping[str, Any] | None = None,
    generator: torch.Generator | None = None,
    t_min: float = 1e-3,
    antithetic: bool = True,
    backward_fn: Callable[[torch.Tensor], None] | None = None,
) -> LossOutput:
    """The MDLM continuous-time NELBO (SUBS): ``sum_masked w(t) -log p(x0 | xt) / N``.

    Same arguments as :func:`proseco_loss`; equals it with ``sc_weight = 0`` (one pass).
    """
    return proseco_loss(
        model,
        x0,
        mask_id=mask_id,
        schedule=schedule,
        config=LossConfig(sc_weight=0.0, t_min=t_min, antithetic=antithetic),
        t=t,
        xt=xt,
        loss_mask=loss_mask,
        noise_mask=noise_mask,
        conditioning=conditioning,
        generator=generator,
        backward_fn=backward_fn,
    )
