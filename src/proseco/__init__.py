"""proseco: progressive self-correction for masked diffusion models.

Train one network to both unmask and correct (:func:`proseco_loss`), then sample with corrector
loops between unmasking steps (:func:`sample`).
"""

from proseco._version import __version__
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

_TRAINING = ("train", "TrainConfig", "TrainResult", "load_config", "TrainingDivergedError")


def __getattr__(name: str):
    """Training names load lazily (they pull in Accelerate)."""
    if name in _TRAINING:
        import proseco.training

        return getattr(proseco.training, name)
    raise AttributeError(f"module 'proseco' has no attribute {name!r}")


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
