"""One micro-batch loss (with class-label dropout) and the validation pass.

Every random draw of a micro-batch (time ``t``, the mask pattern, a sampled proposal, dropped
labels) comes from one ``torch.Generator`` seeded by ``(seed, step, micro-batch index)``, so a
resumed or re-sharded run draws the same noise. Dropout uses the global RNG, which Accelerate
saves in every checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from proseco.losses import LossConfig, LossOutput, ar_loss, prism_loss, proseco_loss, udlm_loss
from proseco.schedules import Schedule

__all__ = ["ModelView", "conditioning", "batch_loss", "evaluate"]


class ModelView:
    """A prepared (DDP/FSDP-wrapped) model that still exposes the bare model's ``config``.

    :func:`proseco.models.protocol.call_model` reads ``model.config`` to decide whether to pass
    ``timesteps``; wrappers hide it, this view restores it.
    """

    def __init__(self, wrapped: Any, config: Any) -> None:
        self.wrapped = wrapped
        self.config = config

    def __call__(self, input_ids: torch.Tensor, **kwargs: Any) -> Any:
        return self.wrapped(input_ids, **kwargs)


def conditioning(
    batch: dict[str, torch.Tensor],
    *,
    num_classes: int = 0,
    cond_dropout: float = 0.0,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Model keyword arguments for a batch: ``attention_mask`` and ``class_labels`` if present.

    With ``cond_dropout > 0`` each label is replaced by the null label ``num_classes`` with that
    probability (one draw per example; the same labels then serve both loss passes).
    """
    out: dict[str, torch.Tensor] = {}
    if "attention_mask" in batch:
        out["attention_mask"] = batch["attention_mask"]
    labels = batch.get("labels")
    if labels is not None:
        if cond_dropout > 0:
            u = torch.rand(labels.shape, generator=generator, device=labels.device)
            labels = torch.where(u < cond_dropout, torch.full_like(labels, num_classes), labels)
        out["class_labels"] = labels
    return out


def batch_loss(
    model: Any,
    batch: dict[str, torch.Tensor],
    *,
    mask_id: int,
    schedule: Schedule,
    loss_config: LossConfig,
    step: int | None,
    generator: torch.Generator,
    num_classes: int = 0,
    cond_dropout: float = 0.0,
    backward_fn: Callable[[torch.Tensor], None] | None = None,
    objective: str = "diffusion",
) -> LossOutput:
    """The ProSeCo / MDLM loss of one micro-batch (a thin layer over :func:`proseco_loss`).

    Args:
        model: a model following the protocol (e.g. a :class:`ModelView`).
        batch: ``input_ids``, ``loss_mask``, ``noise_mask`` ``[B, L]`` (+ ``attention_mask``,
            ``labels`` ``[B]``).
        step: the optimizer step (for ``loss_config.start_step``).
        generator: the micro-batch's RNG (labels are dropped first, then ``t`` and ``xt``).
        backward_fn: two-backward memory mode (see :func:`proseco_loss`); the loop passes it
            unless ``loss.two_backward`` is false.
        objective: ``"diffusion"`` (the above), ``"ar"``: the next-token loss
            (:func:`proseco.losses.ar_loss`) of a causal model (no noise is drawn), or
            ``"prism"``: the PRISM quality-head loss (:func:`proseco.losses.prism_loss`), or
            ``"udlm"``: the uniform-noise NELBO (:func:`proseco.losses.udlm_loss`; ``t_min``
            and ``antithetic`` from ``loss_config``).
    """
    cond = conditioning(
        batch, num_classes=num_classes, cond_dropout=cond_dropout, generator=generator
    )
    if objective == "ar":
        return ar_loss(
            model, batch["input_ids"], mask_id=mask_id, loss_mask=batch["loss_mask"],
            conditioning=cond,
        )  # fmt: skip
    if objective == "udlm":
        return udlm_loss(
            model, batch["input_ids"], mask_id=mask_id, schedule=schedule,
            loss_mask=batch["loss_mask"], noise_mask=batch["noise_mask"], conditioning=cond,
            generator=generator, t_min=loss_config.t_min, antithetic=loss_config.antithetic,
        )  # fmt: skip
    if objective == "prism":  # the quality head's BCE on the model's own samples (PRISM)
        return prism_loss(
            model, batch["input_ids"], mask_id=mask_id, schedule=schedule, config=loss_config,
            loss_mask=batch["loss_mask"], noise_mask=batch["noise_mask"], conditioning=cond,
            generator=generator, backward_fn=backward_fn,
        )  # fmt: skip
    return proseco_loss(
        model,
        batch["input_ids"],
        mask_id=mask_id,
        schedule=schedule,
        config=loss_config,
        loss_mask=batch["loss_mask"],
        noise_mask=batch["noise_mask"],
        conditioning=cond,
        step=step,
        generator=generator,
        backward_fn=backward_fn,
    )


@torch.no_grad()
def evaluate(
    model: Any,
    dataset: Any,
    *,
    accelerator: Any,
    micro_batch_size: int,
    mask_id: int,
    schedule: Schedule,
    loss_config: LossConfig,
    seeds: Callable[[int], int],
    max_batches: int = 0,
    objective: str = "diffusion",
) -> dict[str, float]:
    """Validation NELBO, perplexity, bits per token and corrector NLL on held-out data.

    The split is cut into fixed micro-batches; process ``r`` of ``P`` takes batches
    ``r, r + P, ...``; batch ``b`` draws its noise from ``seeds(b)``, so results do not depend on
    the number of processes. Sums are reduced over processes.

    Returns:
        ``nelbo`` (nats per loss token, MDLM term), ``ppl = exp(nelbo)``, ``bpd = nelbo / ln 2``,
        ``corrector_nll`` (the ``w(t)``-weighted corrector term per token) and
        ``proposal_error_rate`` (share of argmax proposals that differ from ``x0``). With
        ``objective="ar"``: ``nelbo`` is the exact next-token NLL per target token (also as
        ``nll``), with ``ppl``, ``bpd`` and ``tokens``. With ``objective="udlm"``: ``nelbo`` is
        the UDLM continuous-time NELBO per loss token (``t`` on ``[0.001, 1]``), with ``ppl``,
        ``bpd`` and ``tokens``. With ``objective="prism"``: the MDLM ``nelbo`` / ``ppl`` / ``bpd``
        plus the quality head's ``quality_bce`` (mean BCE per filled position),
        ``quality_accuracy`` (sign of the quality logit vs. ``y == x0``), ``fill_error_rate``
        (share of filled samples that are wrong), ``filled`` and ``tokens``.
    """
    config = LossConfig(
        **{**loss_config.__dict__, "mdm_weight": 1.0, "sc_weight": 1.0, "start_step": 0}
    )
    config = LossConfig(**{**config.__dict__, "errors_upweighted": False, "t_min": 1e-3})
    n_batches = math.ceil(len(dataset) / micro_batch_size)
    if max_batches:
        n_batches = min(n_batches, max_batches)
    device = accelerator.device
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    quality_sums = torch.zeros(4, dtype=torch.float64, device=device)  # PRISM head
    for b in range(accelerator.process_index, n_batches, accelerator.num_processes):
        idx = torch.arange(b * micro_batch_size, min((b + 1) * micro_batch_size, len(dataset)))
        batch = dataset.batch(idx, device)
        generator = torch.Generator(device=device).manual_seed(seeds(b))
        with accelerator.autocast():
            out = batch_loss(
                model,
                batch,
                mask_id=mask_id,
                schedule=schedule,
                loss_config=config,
                step=None,
                generator=generator,
                objective=objective,
            )
        n = out.num_tokens.double()
        if out.num_filled is not None:
            f = out.num_filled.double()
            quality_sums += torch.stack([out.corrector_loss.double() * f,
                                         out.quality_accuracy.double() * f,
                                         out.proposal_error_rate.double() * f, f])  # fmt: skip
        err = out.proposal_error_rate
        err = torch.zeros((), device=n.device) if err is None else err
        sums += torch.stack(
            [
                out.mdm_loss.double() * n,
                out.corrector_loss.double() * n,
                n,
                err.double() * n,
            ]
        )
    sums = accelerator.reduce(sums, reduction="sum")
    tokens = float(sums[2].clamp(min=1))
    nelbo = float(sums[0]) / tokens
    if objective == "prism":
        quality_sums = accelerator.reduce(quality_sums, reduction="sum")
        filled = float(quality_sums[3].clamp(min=1))
        return {"nelbo": nelbo, "ppl": math.exp(min(nelbo, 700.0)), "bpd": nelbo / math.log(2.0),
                "quality_bce": float(quality_sums[0]) / filled,
                "quality_accuracy": float(quality_sums[1]) / filled,
                "fill_error_rate": float(quality_sums[2]) / filled,
                "filled": int(quality_sums[3]), "tokens": int(sums[2])}  # fmt: skip
    if objective == "udlm":
        return {"nelbo": nelbo, "ppl": math.exp(min(nelbo, 700.0)),
                "bpd": nelbo / math.log(2.0), "tokens": int(sums[2])}  # fmt: skip
    if objective == "ar":
        ppl = math.exp(min(nelbo, 700.0))
        return {"nelbo": nelbo, "nll": nelbo, "ppl": ppl, "bpd": nelbo / math.log(2.0),
                "tokens": int(sums[2])}  # fmt: skip
    return {
        "nelbo": nelbo,
        "ppl": math.exp(min(nelbo, 700.0)),
        "bpd": nelbo / math.log(2.0),
        "corrector_nll": float(sums[1]) / tokens,
        "proposal_error_rate": float(sums[3]) / tokens,
        "tokens": int(sums[2]),
    }
