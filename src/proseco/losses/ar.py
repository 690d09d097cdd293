"""The autoregressive baseline: the next-token loss of a causal model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from proseco.losses.inputs import check_token_range, log_probs_without_mask
from proseco.losses.output import LossOutput
from proseco.models.protocol import call_model, model_vocab_size

__all__ = ["ar_loss"]


def ar_loss(
    model: Any,
    x0: torch.Tensor,
    *,
    mask_id: int | None = None,
    loss_mask: torch.Tensor | None = None,
    conditioning: Mapping[str, Any] | None = None,
) -> LossOutput:
    """Next-token loss of a causal (autoregressive) model: ``sum_l -log p(x_l | x_<l) / N``.

    One forward pass on ``x0``; the logits at position ``l - 1`` predict ``x0[:, l]``, so position
    0 (BOS in the wrapped layout) is never a target. ``N`` counts the targets ``l >= 1`` with
    ``loss_mask[:, l]`` set. Same result object as the diffusion losses: its one term is named
    ``ar_nll`` (the next-token NLL per target, in the ``mdm_loss`` slot), ``corrector_loss`` is
    0, ``t`` is 1, ``xt`` is ``x0``.

    Args:
        model: a causal model following the protocol (``model(input_ids, **conditioning)``);
            logits ``[B, L, V]`` at position ``l`` may only depend on tokens ``<= l``.
        x0: tokens ``[B, L]``, ``L >= 2``.
        mask_id: a token the model never predicts (the diffusion mask of a shared vocabulary);
            its column is removed from the softmax. ``None`` keeps every column.
        loss_mask: ``[B, L]`` bool, positions that are targets (default all; position 0 never).
        conditioning: extra model kwargs (``class_labels``, ``attention_mask``).

    Returns:
        :class:`LossOutput`; ``mdm_terms`` ``[B, L]`` holds ``-log p(x_l | x_<l)`` at the
        targets and 0 elsewhere.
    """
    if not isinstance(x0, torch.Tensor) or x0.dim() != 2 or x0.shape[1] < 2:
        shape = tuple(x0.shape) if isinstance(x0, torch.Tensor) else type(x0).__name__
        raise ValueError(f"x0 must be a LongTensor [B, L] with L >= 2; got {shape}")
    if loss_mask is not None and tuple(loss_mask.shape) != tuple(x0.shape):
        raise ValueError(
            f"loss_mask has shape {tuple(loss_mask.shape)} but x0 has {tuple(x0.shape)}"
        )
    check_token_range(x0, model_vocab_size(model), "x0")
    logits = call_model(model, x0, None, **dict(conditioning or {})).float()
    if mask_id is None or not 0 <= mask_id < logits.shape[-1]:
        logp = F.log_softmax(logits, dim=-1)
    else:
        logp = log_probs_without_mask(logits, mask_id)
    target = x0[:, 1:].long().unsqueeze(-1)
    nll = -logp[:, :-1].gather(-1, target).squeeze(-1)  # [B, L-1]
    targets = torch.ones_like(x0, dtype=torch.bool)
    if loss_mask is not None:
        targets = targets & loss_mask.bool()
    targets[:, 0] = False
    terms = torch.zeros_like(logits[..., 0])
    terms[:, 1:] = torch.where(targets[:, 1:], nll, 0.0)
    num_tokens = targets.sum().clamp(min=1)
    loss = terms.sum() / num_tokens
    return LossOutput(
        loss=loss,
        mdm_loss=loss.detach(),
        corrector_loss=torch.zeros((), device=x0.device),
        mdm_terms=terms.detach(),
        corrector_terms=None,
        num_tokens=num_tokens,
        num_masked=targets.sum(),
        t=torch.ones(x0.shape[0], device=x0.device),
        xt=x0,
        y=None,
        proposal_error_rate=None,
        term_names=("ar_nll", None),
    )
