"""Training losses: the MDLM NELBO, the ProSeCo self-correction loss (Algorithm 1), the UDLM
NELBO (uniform-noise diffusion) and the AR next-token loss.

Both losses take any model that follows :mod:`proseco.models.protocol` and a batch of clean
tokens ``x0`` ``[B, L]``. ``t`` and ``xt`` are optional so that a caller (and a test) can
reproduce a loss exactly; when omitted they are drawn from the forward process.

ProSeCo (paper, Algorithm 1)::

    logits1 = model(xt)                       # SUBS: mask logit -inf, unmasked positions carry over
    L_mdm   = sum_l [xt_l == m] w(t) -log p1(x0_l)
    y       = stop_grad(argmax p1)            # == xt at unmasked positions (SUBS), argmax at masked
    logits2 = model(y)                        # mask logit -inf, no carry-over
    L_sc    = sum_l w(t) -log p2(x0_l)        # at every loss position
    loss    = (mdm_weight L_mdm + sc_weight L_sc) / (number of loss positions)

PRISM (Kim et al., 2025; :func:`prism_loss`) fine-tunes a model with a quality head::

    logits1 = model(xt)                       # pass 1: MDLM term as above
    F       = prism_fill random masked positions per row
    y       = xt with y_F ~ p1 (stop_grad)     # the model's own samples
    q       = model(y).quality_logits         # pass 2: the head scores every position
    L_q     = mean_{i in F} BCE(q_i, 1[y_i == x0_i])
    loss    = L_q + mdm_weight L_mdm / (number of loss positions)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F

from proseco.errors import ConfigError
from proseco.models.protocol import call_model, call_model_with_quality, model_vocab_size
from proseco.noising import mask_tokens, sample_t, uniform_noise_tokens
from proseco.schedules import Schedule, get_schedule

__all__ = [
    "LossConfig",
    "LossOutput",
    "ar_loss",
    "mdm_loss",
    "prism_loss",
    "proseco_loss",
    "udlm_loss",
    "udlm_terms",
]

_PROPOSALS = ("argmax", "sample")
_CORRECTOR_INPUTS = ("masked_only", "all_positions")


@dataclass(frozen=True)
class LossConfig:
    """Options of the ProSeCo loss. Defaults follow the paper (Algorithm 1).

    Attributes:
        proposal: how the corrector input ``y`` is drawn from pass 1: ``"argmax"`` (paper) or
            ``"sample"`` (a categorical draw).
        corrector_input: ``"masked_only"`` (paper: ``y`` copies ``xt`` at unmasked positions, as
            SUBS implies) or ``"all_positions"`` (the research scripts: the raw network argmax at
            every loss position, no carry-over; non-loss positions such as a prompt keep ``xt``).
        errors_upweighted: at positions where ``y == x0`` use ``-p2(x0)`` instead of
            ``-log p2(x0)`` (the research code's OWT variant).
        weighted: multiply the corrector term by ``w(t)`` (default True).
        mdm_weight: weight of the MDLM term.
        sc_weight: weight of the self-correction term (0 gives exactly MDLM).
        start_step: the corrector term is used only when ``step >= start_step``.
        t_min: smallest training time when ``t`` is drawn (the paper's scripts use 0.1).
        antithetic: stratified time draws over the batch.
        prism_fill: PRISM only (:func:`prism_loss`): masked positions per example filled with
            the model's own samples and scored by the quality head (the public code's
            ``num_demasking_tokens_per_step``: 8 of 1024 on OpenWebText).
    """

    proposal: Literal["argmax", "sample"] = "argmax"
    corrector_input: Literal["masked_only", "all_positions"] = "masked_only"
    errors_upweighted: bool = False
    weighted: bool = True
    mdm_weight: float = 1.0
    sc_weight: float = 1.0
    start_step: int = 0
    t_min: float = 1e-3
    antithetic: bool = True
    prism_fill: int = 8

    def __post_init__(self) -> None:
        if self.proposal not in _PROPOSALS:
            raise ValueError(f"proposal must be one of {_PROPOSALS}, got {self.proposal!r}")
        if self.corrector_input not in _CORRECTOR_INPUTS:
            raise ValueError(
                f"corrector_input must be one of {_CORRECTOR_INPUTS}, got {self.corrector_input!r}"
            )
        for name in ("mdm_weight", "sc_weight"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(
                    f"loss.{name} must be a finite number >= 0, got {value}; e.g. {name}=1.0"
                )
        if not 0.0 <= self.t_min < 1.0:  # (False for NaN too)
            raise ValueError(f"t_min must lie in [0, 1), got {self.t_min}")
        fill = self.prism_fill
        if isinstance(fill, bool) or not isinstance(fill, int) or fill < 1:
            raise ConfigError(f"loss.prism_fill must be an int >= 1, got {self.prism_fill!r}")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass
class LossOutput:
    """What a loss call returns.

    Attributes:
        loss: the scalar to minimise (detached if the loss already ran its backward passes).
        mdm_loss: MDLM NELBO per loss token (``sum w(t) -log p1(x0) over masked / N``), detached.
        corrector_loss: ``sum w(t) -log p2(x0) / N`` (0 if the corrector term is off), detached.
        mdm_terms: per-token MDLM terms ``[B, L]`` (0 at unmasked / non-loss positions), detached.
        corrector_terms: per-token corrector terms ``[B, L]`` or None, detached.
        num_tokens: ``N``, the number of loss positions.
        num_masked: masked loss positions.
        t: the times used ``[B]``; xt: the noised input ``[B, L]``; y: the corrector input or None.
        proposal_error_rate: fraction of loss positions where ``y != x0`` (None without pass 2);
            PRISM: fraction of the filled positions whose sample differs from ``x0``.
        quality_accuracy: PRISM: share of filled positions where ``quality_logit > 0`` agrees
            with the target ``y == x0``; None otherwise.
        num_filled: PRISM: number of filled (scored) positions; None otherwise.

    PRISM (:func:`prism_loss`) reuses the corrector fields: ``corrector_loss`` is the head's mean
    BCE over the filled positions, ``corrector_terms`` its per-position terms, ``y`` the filled
    input.
    """

    loss: torch.Tensor
    mdm_loss: torch.Tensor
    corrector_loss: torch.Tensor
    mdm_terms: torch.Tensor
    corrector_terms: torch.Tensor | None
    num_tokens: torch.Tensor
    num_masked: torch.Tensor
    t: torch.Tensor
    xt: torch.Tensor
    y: torch.Tensor | None
    proposal_error_rate: torch.Tensor | None
    quality_accuracy: torch.Tensor | None = None
    num_filled: torch.Tensor | None = None


def _check_inputs(
    model: Any,
    x0: torch.Tensor,
    mask_id: int | None,
    t: torch.Tensor | None,
    xt: torch.Tensor | None,
    loss_mask: torch.Tensor | None,
    noise_mask: torch.Tensor | None,
) -> None:
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


def _log_probs_without_mask(logits: torch.Tensor, mask_id: int) -> torch.Tensor:
    """``log_softmax`` over the vocabulary with the mask token excluded. ``[B, L, V]``."""
    bias = torch.zeros(logits.shape[-1], dtype=logits.dtype, device=logits.device)
    bias[mask_id] = float("-inf")
    return F.log_softmax(logits + bias, dim=-1)


def _loss_config(config: LossConfig | None, options: dict[str, Any]) -> LossConfig:
    """``config`` (default ``LossConfig()``) with keyword ``options`` overriding its fields."""
    if config is None:
        return LossConfig(**options)
    return LossConfig(**{**config.__dict__, **options}) if options else config


def _masked_inputs(
    x0: torch.Tensor,
    mask_id: int,
    schedule: Schedule,
    config: LossConfig,
    t: torch.Tensor | None,
    xt: torch.Tensor | None,
    loss_mask: torch.Tensor | None,
    noise_mask: torch.Tensor | None,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss_mask, noise_mask, t, xt)`` with the defaults of the masked losses: all positions
    carry loss, ``noise_mask = loss_mask``, ``t`` drawn first on ``[t_min, 1]``, then ``xt`` from
    ``q(xt | x0)`` (the order fixes what one ``generator`` seed gives)."""
    loss_mask = torch.ones_like(x0, dtype=torch.bool) if loss_mask is None else loss_mask.bool()
    if noise_mask is None:
        noise_mask = loss_mask
    if t is None:
        t = sample_t(x0.shape[0], t_min=config.t_min, antithetic=config.antithetic,
                     generator=generator, device=x0.device)  # fmt: skip
    t = t.to(device=x0.device, dtype=torch.float32)
    if xt is None:
        xt = mask_tokens(
            x0, t, mask_id=mask_id, schedule=schedule, noise_mask=noise_mask, generator=generator
        )
    return loss_mask, noise_mask, t, xt


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
        :class:`LossOutput`.
    """
    config = _loss_config(config, options)
    schedule = get_schedule(schedule)
    _check_inputs(model, x0, mask_id, t, xt, loss_mask, noise_mask)
    conditioning = dict(conditioning or {})
    loss_mask, noise_mask, t, xt = _masked_inputs(
        x0, mask_id, schedule, config, t, xt, loss_mask, noise_mask, generator
    )
    weight = schedule.weight(t).view(-1, 1)  # [B, 1]
    num_tokens = loss_mask.sum().clamp(min=1)
    target = x0.long().unsqueeze(-1)

    # Pass 1: denoiser, SUBS parameterisation (only masked positions carry loss).
    logits1 = call_model(model, xt, t, **conditioning).float()
    check_token_range(x0, logits1.shape[-1], "x0")
    if mask_id >= logits1.shape[-1]:
        raise ValueError(
            f"mask_id {mask_id} is outside the model's vocabulary of {logits1.shape[-1]}"
        )
    logp1 = _log_probs_without_mask(logits1, mask_id)
    masked = (xt == mask_id) & loss_mask
    mdm_terms = torch.where(masked, -logp1.gather(-1, target).squeeze(-1) * weight, 0.0)
    mdm_sum = mdm_terms.sum()

    use_corrector = config.sc_weight > 0 and (step is None or step >= config.start_step)
    y = None
    if use_corrector:
        with torch.no_grad():
            y = _corrector_input(logp1.detach(), xt, mask_id, loss_mask, config, generator)
    if backward_fn is not None:
        backward_fn(config.mdm_weight * mdm_sum / num_tokens)
        mdm_sum = mdm_sum.detach()
        mdm_terms = mdm_terms.detach()
    del logits1, logp1

    corrector_terms = None
    corrector_sum = torch.zeros((), device=x0.device)
    error_rate = None
    if use_corrector:
        # Pass 2: corrector on the model's own proposal; mask logit excluded, no carry-over.
        logits2 = call_model(model, y, t, **conditioning).float()
        logp2 = _log_probs_without_mask(logits2, mask_id)
        nll2 = -logp2.gather(-1, target).squeeze(-1)
        if config.errors_upweighted:
            nll2 = torch.where(y == x0, -torch.exp(-nll2), nll2)
        corrector_weight = weight if config.weighted else 1.0
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
        num_masked=masked.sum(),
        t=t,
        xt=xt,
        y=y,
        proposal_error_rate=error_rate,
    )


def _corrector_input(
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

    Same arguments as :func:`proseco_loss`; equals it with ``sc_weight = 0``.
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
    ``loss_mask[:, l]`` set. Same result object as :func:`proseco_loss`: ``mdm_loss`` holds the
    next-token NLL per target, ``corrector_loss`` is 0, ``t`` is 1, ``xt`` is ``x0``.

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
        logp = _log_probs_without_mask(logits, mask_id)
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
    )


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
    of loss positions as in :func:`mdm_loss`.

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
        ``xt = zt``, ``corrector_loss = 0``.
    """
    schedule = get_schedule(schedule)
    _check_inputs(model, x0, mask_id, t, None, loss_mask, noise_mask)
    if zt is not None and t is None:
        raise ValueError("zt was given without t; pass the t that produced zt")
    conditioning = dict(conditioning or {})
    loss_mask = torch.ones_like(x0, dtype=torch.bool) if loss_mask is None else loss_mask.bool()
    noise_mask = loss_mask if noise_mask is None else noise_mask.bool()
    if t is None:
        t = sample_t(
            x0.shape[0], t_min=t_min, antithetic=antithetic, generator=generator, device=x0.device
        )
    t = t.to(device=x0.device, dtype=torch.float32)
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
        backward_fn: as in :func:`proseco_loss` (``backward_fn`` receives the MDLM part after
            pass 1 and the head part after pass 2).
        config: :class:`LossConfig` (``mdm_weight``, ``prism_fill``, ``t_min``, ``antithetic``);
            ``**options`` override its fields.
        fill: ``[B, L]`` bool, the positions to fill (must be masked in ``xt``); drawn when
            omitted.

    Returns:
        :class:`LossOutput` with ``loss = L_q + mdm_weight * mdm_loss``; ``corrector_loss`` =
        ``L_q`` (mean BCE per filled position), ``y`` = the filled input,
        ``proposal_error_rate`` = share of filled tokens that are wrong, ``quality_accuracy``
        and ``num_filled``.

    Raises:
        ConfigError: if the model returns no ``quality_logits``.
    """
    config = _loss_config(config, options)
    schedule = get_schedule(schedule)
    _check_inputs(model, x0, mask_id, t, xt, loss_mask, noise_mask)
    conditioning = dict(conditioning or {})
    loss_mask, noise_mask, t, xt = _masked_inputs(
        x0, mask_id, schedule, config, t, xt, loss_mask, noise_mask, generator
    )
    weight = schedule.weight(t).view(-1, 1)
    num_tokens = loss_mask.sum().clamp(min=1)
    target = x0.long().unsqueeze(-1)

    logits1, quality1 = call_model_with_quality(model, xt, t, **conditioning)
    if quality1 is None:
        raise ConfigError(
            "loss.objective: prism needs a model with a quality head (its output has "
            "quality_logits); build the DiT with quality_head=True or call "
            "model.add_quality_head() (the trainer does this for loss.objective: prism)"
        )
    logp1 = _log_probs_without_mask(logits1.float(), mask_id)
    masked = (xt == mask_id) & loss_mask
    mdm_terms = torch.where(masked, -logp1.gather(-1, target).squeeze(-1) * weight, 0.0)
    mdm_sum = mdm_terms.sum()
    with torch.no_grad():
        if fill is None:
            fill = fill_positions(masked, config.prism_fill, generator)
        elif bool((fill.bool() & (xt != mask_id)).any()):
            raise ValueError("fill marks positions that are not masked in xt; fill masks only")
        fill = fill.bool()
        probs = logp1.detach().exp()[fill]  # [N, V]
        y = xt.clone()
        if len(probs):
            y[fill] = torch.multinomial(probs, 1, generator=generator).squeeze(-1).to(y.dtype)
    mdm_part = config.mdm_weight * mdm_sum / num_tokens
    if backward_fn is not None:
        if mdm_part.requires_grad:  # (not when only the head trains)
            backward_fn(mdm_part)
        mdm_part, mdm_sum, mdm_terms = mdm_part.detach(), mdm_sum.detach(), mdm_terms.detach()
    del logits1, logp1, quality1

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
    )
