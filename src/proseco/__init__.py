"""proseco: progressive self-correction for masked diffusion models.

Train one network to both unmask and correct (:func:`proseco_loss`), then sample with corrector
loops between unmasking steps (:func:`sample`).

Every public name loads on first use (PEP 562), so ``import proseco`` and the command line's
start-up do not pay for torch and transformers until something needs them.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from proseco._version import __version__

if TYPE_CHECKING:  # what the names are, for type checkers and editors
    from proseco.losses import (
        LossConfig,
        LossOutput,
        ar_loss,
        mdm_loss,
        prism_loss,
        proseco_loss,
        udlm_loss,
    )
    from proseco.models.dit import ProsecoDiT, ProsecoDiTConfig
    from proseco.models.protocol import call_model
    from proseco.noising import mask_tokens, sample_t, uniform_noise_tokens
    from proseco.pretrained import Pretrained, load_pretrained, shipped_checkpoints
    from proseco.sampling import (
        CORRECTOR_UPDATES,
        UNMASKING,
        Ancestral,
        ArgmaxUpdate,
        Confidence,
        Corrector,
        CorrectorChanges,
        CorrectorUpdate,
        Guidance,
        LogitsProcessor,
        Prism,
        ReMDM,
        Reveal,
        SampleOutput,
        SampleUpdate,
        SamplingConfig,
        SamplingHistory,
        StepInfo,
        Threshold,
        TopKPositions,
        UnmaskingStrategy,
        draw_at,
        sample,
        sample_autoregressive,
        sample_uniform,
    )
    from proseco.sampling.dispatch import sampler_for
    from proseco.sampling.presets import PRESETS, preset
    from proseco.schedules import (
        CosineSchedule,
        LinearSchedule,
        LogLinearSchedule,
        PolynomialSchedule,
        Schedule,
        get_schedule,
    )

# public name -> the module that defines it
_LAZY: dict[str, str] = {
    "LossConfig": "proseco.losses",
    "LossOutput": "proseco.losses",
    "ar_loss": "proseco.losses",
    "mdm_loss": "proseco.losses",
    "prism_loss": "proseco.losses",
    "proseco_loss": "proseco.losses",
    "udlm_loss": "proseco.losses",
    "ProsecoDiT": "proseco.models.dit",
    "ProsecoDiTConfig": "proseco.models.dit",
    "call_model": "proseco.models.protocol",
    "mask_tokens": "proseco.noising",
    "sample_t": "proseco.noising",
    "uniform_noise_tokens": "proseco.noising",
    "Pretrained": "proseco.pretrained",
    "load_pretrained": "proseco.pretrained",
    "shipped_checkpoints": "proseco.pretrained",
    "CORRECTOR_UPDATES": "proseco.sampling",
    "UNMASKING": "proseco.sampling",
    "Ancestral": "proseco.sampling",
    "ArgmaxUpdate": "proseco.sampling",
    "Confidence": "proseco.sampling",
    "Corrector": "proseco.sampling",
    "CorrectorChanges": "proseco.sampling",
    "CorrectorUpdate": "proseco.sampling",
    "Guidance": "proseco.sampling",
    "LogitsProcessor": "proseco.sampling",
    "Prism": "proseco.sampling",
    "ReMDM": "proseco.sampling",
    "Reveal": "proseco.sampling",
    "SampleOutput": "proseco.sampling",
    "SampleUpdate": "proseco.sampling",
    "SamplingConfig": "proseco.sampling",
    "SamplingHistory": "proseco.sampling",
    "StepInfo": "proseco.sampling",
    "Threshold": "proseco.sampling",
    "TopKPositions": "proseco.sampling",
    "UnmaskingStrategy": "proseco.sampling",
    "draw_at": "proseco.sampling",
    "sample": "proseco.sampling",
    "sample_autoregressive": "proseco.sampling",
    "sample_uniform": "proseco.sampling",
    "sampler_for": "proseco.sampling.dispatch",
    "PRESETS": "proseco.sampling.presets",
    "preset": "proseco.sampling.presets",
    "CosineSchedule": "proseco.schedules",
    "LinearSchedule": "proseco.schedules",
    "LogLinearSchedule": "proseco.schedules",
    "PolynomialSchedule": "proseco.schedules",
    "Schedule": "proseco.schedules",
    "get_schedule": "proseco.schedules",
}
_TRAINING = (
    "train", "TrainConfig", "TrainResult", "load_config", "TrainingDivergedError",
    "TrainingInterrupted",
)  # fmt: skip


def __getattr__(name: str) -> Any:
    """Load a public name from its module on first use (training names pull in Accelerate)."""
    module = _LAZY.get(name) or ("proseco.training" if name in _TRAINING else None)
    if module is None:
        if not name.startswith("_") and importlib.util.find_spec(f"proseco.{name}") is not None:
            return importlib.import_module(f"proseco.{name}")  # a subpackage: proseco.sampling
        raise AttributeError(f"module 'proseco' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "__version__",
    "CORRECTOR_UPDATES",
    "UNMASKING",
    "Ancestral",
    "ArgmaxUpdate",
    "Confidence",
    "Corrector",
    "CorrectorUpdate",
    "Guidance",
    "LogitsProcessor",
    "Prism",
    "ReMDM",
    "Reveal",
    "CorrectorChanges",
    "SampleOutput",
    "SampleUpdate",
    "SamplingConfig",
    "SamplingHistory",
    "StepInfo",
    "Threshold",
    "TopKPositions",
    "UnmaskingStrategy",
    "draw_at",
    "TrainConfig",
    "TrainResult",
    "TrainingDivergedError",
    "TrainingInterrupted",
    "load_config",
    "sample",
    "sample_autoregressive",
    "sample_uniform",
    "sampler_for",
    "train",
    "CosineSchedule",
    "LinearSchedule",
    "LogLinearSchedule",
    "LossConfig",
    "Pretrained",
    "load_pretrained",
    "shipped_checkpoints",
    "PRESETS",
    "preset",
    "LossOutput",
    "PolynomialSchedule",
    "ProsecoDiT",
    "ProsecoDiTConfig",
    "Schedule",
    "call_model",
    "get_schedule",
    "mask_tokens",
    "uniform_noise_tokens",
    "ar_loss",
    "mdm_loss",
    "prism_loss",
    "udlm_loss",
    "proseco_loss",
    "sample_t",
]
