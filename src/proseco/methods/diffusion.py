"""``diffusion``: masked diffusion, MDLM (``sc_weight: 0``) or ProSeCo (``sc_weight > 0``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch

from proseco.losses import LossConfig, LossOutput, proseco_loss
from proseco.methods.base import METHODS, VALIDATION_T_MIN, TrainingMethod, nelbo_metrics
from proseco.schedules import Schedule

__all__ = ["MaskedDiffusion"]


@METHODS.register("diffusion")
class MaskedDiffusion(TrainingMethod):
    """MDLM and ProSeCo: :func:`~proseco.losses.proseco_loss` (its corrector term is off at
    ``sc_weight: 0``, which is MDLM's NELBO). Validation reports the MDLM ``nelbo`` and the
    corrector's ``corrector_nll`` and ``proposal_error_rate``."""

    model_kind = "a bidirectional masked diffusion model"
    validation_sums = ("nelbo_sum", "corrector_sum", "tokens", "error_sum")

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
        return proseco_loss(
            model,
            batch["input_ids"],
            mask_id=mask_id,
            schedule=schedule,
            config=config,
            loss_mask=batch["loss_mask"],
            noise_mask=batch["noise_mask"],
            conditioning=conditioning,
            step=step,
            generator=generator,
            backward_fn=backward_fn,
        )

    def term_stats(self, config: LossConfig) -> bool:
        """The per-term diagnostics describe the corrector term: ProSeCo runs only."""
        return config.sc_weight > 0

    def validation_config(self, config: LossConfig) -> LossConfig:
        """The corrector pass always runs in validation, at weight 1, from step 0, with the
        plain NLL (no ``errors_upweighted``), so ``corrector_nll`` is measured for MDLM runs
        too and is comparable between runs; ``t`` from :data:`VALIDATION_T_MIN`."""
        return dataclasses.replace(
            config, mdm_weight=1.0, sc_weight=1.0, start_step=0, errors_upweighted=False,
            t_min=VALIDATION_T_MIN,
        )  # fmt: skip

    def validation_values(self, out: LossOutput) -> torch.Tensor:
        n = out.num_tokens.double()
        err = out.proposal_error_rate
        err = torch.zeros((), device=n.device) if err is None else err
        return torch.stack(
            [out.mdm_loss.double() * n, out.corrector_loss.double() * n, n, err.double() * n]
        )

    def validation_metrics(self, sums: torch.Tensor) -> dict[str, float]:
        tokens = float(sums[2].clamp(min=1))
        return {
            **nelbo_metrics(float(sums[0]), tokens),
            "corrector_nll": float(sums[1]) / tokens,
            "proposal_error_rate": float(sums[3]) / tokens,
            "tokens": int(sums[2]),
        }
