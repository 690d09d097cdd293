"""``udlm``: uniform-noise diffusion (Schiff et al., 2025)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from proseco.losses import LossConfig, LossOutput, udlm_loss
from proseco.methods.base import METHODS, TrainingMethod
from proseco.models.protocol import is_time_conditioned
from proseco.sampling.uniform import check_uniform_args, sample_uniform
from proseco.schedules import Schedule

__all__ = ["UniformDiffusion"]


@METHODS.register("udlm")
class UniformDiffusion(TrainingMethod):
    """UDLM: :func:`~proseco.losses.udlm_loss` (one pass) on a time-conditioned model built
    with ``diffusion="uniform"``, sampled by :func:`~proseco.sampling.uniform.sample_uniform`.
    ``t_min``, ``antithetic`` and ``schedule`` apply; the corrector fields do not. Validation
    reports its NELBO as ``nelbo`` (with ``ppl``, ``bpd``, ``tokens``)."""

    model_flags = {"diffusion": "uniform"}
    model_kind = "a uniform-noise (UDLM) model"
    sampler_kind = "uniform"
    passes = 1

    def check_model(self, model: Any, config: Any) -> None:
        """The UDLM denoiser depends on ``t``: the model must be time-conditioned."""
        super().check_model(model, config)
        if not is_time_conditioned(model):
            raise ValueError(
                "loss.objective: udlm needs a time-conditioned model (the UDLM denoiser depends "
                "on t); set model.time_conditioning: true"
            )

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
        return udlm_loss(
            model, batch["input_ids"], mask_id=mask_id, schedule=schedule,
            loss_mask=batch["loss_mask"], noise_mask=batch["noise_mask"],
            conditioning=conditioning, generator=generator, t_min=config.t_min,
            antithetic=config.antithetic,
        )  # fmt: skip

    def nelbo(
        self,
        model: Any,
        x0: torch.Tensor,
        *,
        mask_id: int,
        schedule: Any,
        loss_mask: torch.Tensor | None,
        conditioning: dict[str, Any] | None,
        generator: torch.Generator,
        t_min: float,
    ) -> LossOutput:
        """The UDLM NELBO (its own bound, not MDLM's)."""
        return udlm_loss(
            model, x0, mask_id=mask_id, schedule=schedule, loss_mask=loss_mask,
            conditioning=conditioning, generator=generator, t_min=t_min,
        )  # fmt: skip

    def sampler(self) -> tuple[Callable, Callable]:
        return check_uniform_args, sample_uniform
