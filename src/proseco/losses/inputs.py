"""Argument checks and small pieces every loss shares: token ranges, the mask-free softmax,
the default loss / noise positions and the time draw."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from proseco.models.protocol import model_vocab_size
from proseco.noising import sample_t

__all__ = [
    "check_loss_inputs",
    "check_token_range",
    "log_probs_without_mask",
    "positions_and_times",
]


def check_token_range(ids: torch.Tensor, vocab: int | None, name: str) -> None:
    """Raise if ``ids`` holds negative ids or ids ``>= vocab`` (when ``vocab`` is known)."""
    if ids.numel() == 0:
        return
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or (vocab is not None and hi >= vocab):
        raise ValueError(
            f"{name} holds token ids in [{lo}, {hi}] but the model's vocabulary is "
            f"[0, {vocab}); re-tokenize with the model's tokenizer or resize the model"
        )


def check_loss_inputs(
    model: Any,
    x0: torch.Tensor,
    mask_id: int | None,
    t: torch.Tensor | None,
    xt: torch.Tensor | None,
    loss_mask: torch.Tensor | None,
    noise_mask: torch.Tensor | None,
) -> None:
    """Check the arguments of a diffusion loss before anything is drawn or called.

    ``x0`` is ``[B, L]`` integer ids inside the model's vocabulary without the mask id (``None``:
    a vocabulary without a mask token); masks match ``x0``; ``t`` is ``[B]`` in ``(0, 1]``;
    ``xt`` equals ``x0`` wherever it is not the mask token and comes with its ``t``.
    """
    if not isinstance(x0, torch.Tensor) or x0.dim() != 2:
        shape = tuple(x0.shape) if isinstance(x0, torch.Tensor) else type(x0).__name__
        raise ValueError(f"x0 must be a LongTensor [B, L]; got {shape}. Add a batch dimension.")
    if x0.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"x0 must hold integer token ids, got dtype {x0.dtype}")
    vocab = model_vocab_size(model)
    if mask_id is None:  # a vocabulary without a mask token (uniform noise only)
        check_token_range(x0, vocab, "x0")
        mask_id = -1
    elif not isinstance(mask_id, int) or mask_id < 0 or (vocab is not None and mask_id >= vocab):
        raise ValueError(
            f"mask_id {mask_id} is outside the model's vocabulary of {vocab}; pass the id of the "
            "mask token (e.g. tokenizer.mask_token_id) and make sure the model has a row for it"
        )
    check_token_range(x0, vocab, "x0")
    n_mask = int((x0 == mask_id).sum())
    if n_mask:
        raise ValueError(
            f"x0 contains the mask id {mask_id} at {n_mask} positions; clean data must not contain "
            "the mask token (use a separate pad id for padding)"
        )
    for name, m in (("loss_mask", loss_mask), ("noise_mask", noise_mask)):
        if m is not None and tuple(m.shape) != tuple(x0.shape):
            raise ValueError(
                f"{name} has shape {tuple(m.shape)} but x0 has {tuple(x0.shape)}; they must match"
            )
    if t is not None:
        if t.dim() != 1 or t.shape[0] != x0.shape[0]:
            raise ValueError(f"t must have shape [B] = [{x0.shape[0]}], got {tuple(t.shape)}")
        if not bool(((t > 0) & (t <= 1)).all()):
            raise ValueError(
                f"t must lie in (0, 1], got min {float(t.min()):.4g}, max {float(t.max()):.4g}"
            )
    if xt is not None:
        if tuple(xt.shape) != tuple(x0.shape):
            raise ValueError(f"xt has shape {tuple(xt.shape)} but x0 has {tuple(x0.shape)}")
        bad = (xt != mask_id) & (xt != x0)
        if bool(bad.any()):
            raise ValueError(
                f"xt differs from x0 at {int(bad.sum())} unmasked positions; xt must equal x0 "
                "wherever it is not the mask token"
            )
        if t is None:
            raise ValueError("xt was given without t; pass the t that produced xt")


def log_probs_without_mask(logits: torch.Tensor, mask_id: int) -> torch.Tensor:
    """``log_softmax`` over the vocabulary with the mask token excluded. ``[B, L, V]``."""
    bias = torch.zeros(logits.shape[-1], dtype=logits.dtype, device=logits.device)
    bias[mask_id] = float("-inf")
    return F.log_softmax(logits + bias, dim=-1)


def positions_and_times(
    x0: torch.Tensor,
    loss_mask: torch.Tensor | None,
    noise_mask: torch.Tensor | None,
    t: torch.Tensor | None,
    *,
    t_min: float,
    antithetic: bool,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss_mask, noise_mask, t)`` with the defaults of the diffusion losses: every position
    carries loss, ``noise_mask = loss_mask``, and ``t`` (float32 ``[B]``) is drawn on
    ``[t_min, 1]`` when not given (the first draw of ``generator``)."""
    loss_mask = torch.ones_like(x0, dtype=torch.bool) if loss_mask is None else loss_mask.bool()
    noise_mask = loss_mask if noise_mask is None else noise_mask
    if t is None:
        t = sample_t(x0.shape[0], t_min=t_min, antithetic=antithetic, generator=generator,
                     device=x0.device)  # fmt: skip
    return loss_mask, noise_mask, t.to(device=x0.device, dtype=torch.float32)
