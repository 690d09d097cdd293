"""``prism``: PRISM fine-tuning of a masked diffusion model with a per-token quality head."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from proseco.losses import LossConfig, LossOutput, prism_loss
from proseco.methods.base import METHODS, TrainingMethod, nelbo_metrics
from proseco.schedules import Schedule

__all__ = ["PrismMethod"]


@METHODS.register("prism")
class PrismMethod(TrainingMethod):
    """PRISM (Kim et al., 2025): :func:`~proseco.losses.prism_loss` on a model with a quality
    head (a pretrained MDM gets a new one; ``loss.prism_backbone: false`` trains the head
    alone). Sampled by the masked loop (``--unmasking prism`` uses the head). Validation
    reports the MDLM ``nelbo`` and the head's ``quality_bce``, ``quality_accuracy``,
    ``fill_error_rate`` and ``filled``."""

    model_flags = {"quality_head": True}
    model_kind = "a masked diffusion model with a quality head (PRISM)"
    validation_sums = ("nelbo_sum", "tokens", "bce_sum", "agree_sum", "wrong_sum", "filled")

    def prepare_model(self, model: Any, loss: Any) -> Any:
        """The model with a quality head (an MDM without one gets a new, initialised one);
        with ``loss.prism_backbone: false`` only the head's parameters train."""
        if not getattr(getattr(model, "config", None), "quality_head", False):
            add = getattr(model, "add_quality_head", None)
            if add is None:
                raise ValueError(
                    f"loss.objective: prism adds a quality head to the model, which "
                    f"{type(model).__name__} does not support; fine-tune a proseco DiT "
                    "checkpoint (model.pretrained) instead"
                )
            model = add()
        if not loss.prism_backbone:  # train the head alone
            for name, param in model.named_parameters():
                param.requires_grad_(name.startswith("quality_head."))
        return model

    def loss(
        self,
        model: Any,
        batch: Mapping[str, torch.Tensor],
        *,
        mask_id: int,
        schedule: Schedule,
        config: LossConfig,
        step: int | None,
        generator: torch.Generator,
        conditioning: dict[str, torch.Tensor],
        backward_fn: Callable[[torch.Tensor], None] | None,
    ) -> LossOutput:
        return prism_loss(
            model, batch["input_ids"], mask_id=mask_id, schedule=schedule, config=config,
            loss_mask=batch["loss_mask"], noise_mask=batch["noise_mask"],
            conditioning=conditioning, generator=generator, backward_fn=backward_fn,
        )  # fmt: skip

    def validation_values(self, out: LossOutput) -> torch.Tensor:
        n, f = out.num_tokens.double(), out.num_filled.double()
        return torch.stack([
            out.mdm_loss.double() * n, n, out.terms["prism_bce"].double() * f,
            out.quality_accuracy.double() * f, out.proposal_error_rate.double() * f, f,
        ])  # fmt: skip

    def validation_metrics(self, sums: torch.Tensor) -> dict[str, float]:
        tokens, filled = float(sums[1].clamp(min=1)), float(sums[5].clamp(min=1))
        return {
            **nelbo_metrics(float(sums[0]), tokens),
            "quality_bce": float(sums[2]) / filled,
            "quality_accuracy": float(sums[3]) / filled,
            "fill_error_rate": float(sums[4]) / filled,
            "filled": int(sums[5]),
            "tokens": int(sums[1]),
        }
