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

from proseco.losses import LossConfig, LossOutput
from proseco.methods import TrainingMethod, get_method
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
    objective: str | TrainingMethod = "diffusion",
) -> LossOutput:
    """The loss of one micro-batch under a training method (:mod:`proseco.methods`).

    Args:
        model: a model following the protocol (e.g. a :class:`ModelView`).
        batch: ``input_ids``, ``loss_mask``, ``noise_mask`` ``[B, L]`` (+ ``attention_mask``,
            ``labels`` ``[B]``).
        step: the optimizer step (for ``loss_config.start_step``).
        generator: the micro-batch's RNG (labels are dropped first, then the method draws its
            noise: ``t`` and ``xt`` for the diffusion methods).
        backward_fn: two-backward memory mode (see :func:`proseco.losses.proseco_loss`); the
            loop passes it unless ``loss.two_backward`` is false.
        objective: the method, by name (``loss.objective``: ``diffusion``, ``ar``, ``udlm``,
            ``prism`` or any registered one) or as an object; it chooses the loss.
    """
    method = get_method(objective)
    cond = conditioning(
        batch, num_classes=num_classes, cond_dropout=cond_dropout, generator=generator
    )
    return method.loss(
        model,
        batch,
        mask_id=mask_id,
        schedule=schedule,
        config=loss_config,
        step=step,
        generator=generator,
        conditioning=cond,
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
    objective: str | TrainingMethod = "diffusion",
) -> dict[str, float]:
    """The method's validation metrics on held-out data (see ``validation_metrics`` of each
    method in :mod:`proseco.methods`).

    The loss runs with the method's own validation options
    (:meth:`~proseco.methods.TrainingMethod.validation_config`: ``t`` from 0.001 for every
    method; ``diffusion`` also runs its corrector pass at weight 1, so ``corrector_nll`` is
    reported for MDLM runs too). The split is cut into fixed micro-batches; process ``r`` of
    ``P`` takes batches ``r, r + P, ...``; batch ``b`` draws its noise from ``seeds(b)``, so
    results do not depend on the number of processes. Sums are reduced over processes.

    Returns:
        ``diffusion``: ``nelbo`` (nats per loss token, MDLM term), ``ppl = exp(nelbo)``,
        ``bpd = nelbo / ln 2``, ``corrector_nll`` (the ``w(t)``-weighted corrector term per
        token), ``proposal_error_rate`` (share of argmax proposals that differ from ``x0``),
        ``tokens``. ``ar``: ``nelbo`` is the exact next-token NLL per target token (also as
        ``nll``), with ``ppl``, ``bpd`` and ``tokens``. ``udlm``: ``nelbo`` is the UDLM
        continuous-time NELBO per loss token, with ``ppl``, ``bpd`` and ``tokens``. ``prism``:
        the MDLM ``nelbo`` / ``ppl`` / ``bpd`` plus the quality head's ``quality_bce`` (mean
        BCE per filled position), ``quality_accuracy`` (sign of the quality logit vs.
        ``y == x0``), ``fill_error_rate`` (share of filled samples that are wrong), ``filled``
        and ``tokens``.
    """
    method = get_method(objective)
    config = method.validation_config(loss_config)
    n_batches = math.ceil(len(dataset) / micro_batch_size)
    if max_batches:
        n_batches = min(n_batches, max_batches)
    device = accelerator.device
    sums = torch.zeros(len(method.validation_sums), dtype=torch.float64, device=device)
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
                objective=method,
            )
        sums += method.validation_values(out).to(device)
    return method.validation_metrics(accelerator.reduce(sums, reduction="sum"))
