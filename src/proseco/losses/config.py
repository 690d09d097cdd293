"""``LossConfig``: the options of the masked-diffusion losses (ProSeCo, MDLM, PRISM)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Literal

from proseco.errors import ConfigError

__all__ = ["LossConfig", "with_options"]

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
        prism_fill: PRISM only (:func:`~proseco.losses.prism_loss`): masked positions per
            example filled with the model's own samples and scored by the quality head (the
            public code's ``num_demasking_tokens_per_step``: 8 of 1024 on OpenWebText).
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


def with_options(config: LossConfig | None, options: dict[str, Any]) -> LossConfig:
    """``config`` (default ``LossConfig()``) with keyword ``options`` overriding its fields."""
    if config is None:
        return LossConfig(**options)
    return LossConfig(**{**config.__dict__, **options}) if options else config
