"""``ar``: the autoregressive baseline (a causal model, next-token loss)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from proseco.losses import LossConfig, LossOutput, ar_loss
from proseco.methods.base import METHODS, TrainingMethod, nelbo_metrics
from proseco.sampling.autoregressive import check_autoregressive_args, sample_autoregressive
from proseco.schedules import Schedule

__all__ = ["Autoregressive"]


@METHODS.register("ar")
class Autoregressive(TrainingMethod):
    """The AR baseline: a causal model (``causal=True``) trained with
    :func:`~proseco.losses.ar_loss` (one pass, no noise; the diffusion fields are unused) and
    sampled left to right by :func:`~proseco.sampling.autoregressive.sample_autoregressive`.
    Validation reports the exact next-token NLL as ``nelbo`` and ``nll``."""

    model_flags = {"causal": True}
    model_kind = "causal (an AR model)"
    sampler_kind = "autoregressive"
    passes = 1

    def check_model(self, model: Any, config: Any) -> None:
        """A causal model takes no time input."""
        super().check_model(model, config)
        if config.model.time_conditioning:
            raise ValueError(
                "model.time_conditioning needs the diffusion loss; remove it for loss.objective: ar"
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
        return ar_loss(
            model, batch["input_ids"], mask_id=mask_id, loss_mask=batch["loss_mask"],
            conditioning=conditioning,
        )  # fmt: skip

    def validation_metrics(self, sums: torch.Tensor) -> dict[str, float]:
        tokens = float(sums[1].clamp(min=1))
        metrics = nelbo_metrics(float(sums[0]), tokens)
        return {"nelbo": metrics["nelbo"], "nll": metrics["nelbo"], "ppl": metrics["ppl"],
                "bpd": metrics["bpd"], "tokens": int(sums[1])}  # fmt: skip

    def nelbo(self, model: Any, x0: torch.Tensor, **kwargs: Any) -> LossOutput:
        """A causal model has an exact likelihood, not a diffusion bound."""
        from proseco.errors import ConfigError

        raise ConfigError(
            "a causal (AR) model has an exact next-token NLL, not a diffusion NELBO; its "
            "validation NLL is in the training run's metrics.jsonl"
        )

    def sampler(self) -> tuple[Callable, Callable]:
        return check_autoregressive_args, sample_autoregressive
