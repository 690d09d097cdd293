"""Sampling: one loop (:func:`sample`) with pluggable unmasking strategies (MDLM, LLaDA
confidence, Fast-dLLM threshold, ReMDM), ProSeCo corrector loops and classifier-free guidance (the
semantics of ALGORITHMS.md §3-4), all settings in one :class:`SamplingConfig`."""

from proseco.sampling.autoregressive import sample_autoregressive
from proseco.sampling.config import SAMPLING_CONFIG_NAME, SamplingConfig
from proseco.sampling.correctors import (
    CORRECTOR_UPDATES,
    ArgmaxUpdate,
    Corrector,
    CorrectorUpdate,
    SampleUpdate,
    TopKPositions,
    run_corrector,
)
from proseco.sampling.guidance import Guidance
from proseco.sampling.loop import sample
from proseco.sampling.output import CorrectorChanges, SampleOutput, SamplingHistory, StepRecord
from proseco.sampling.prism import Prism
from proseco.sampling.processors import LogitsProcessor
from proseco.sampling.remasking import ReMDM
from proseco.sampling.uniform import sample_uniform
from proseco.sampling.unmasking import (
    UNMASKING,
    Ancestral,
    Confidence,
    Reveal,
    StepInfo,
    Threshold,
    UnmaskingStrategy,
    draw_at,
    get_unmasking,
)

__all__ = [
    "CORRECTOR_UPDATES",
    "SAMPLING_CONFIG_NAME",
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
    "StepRecord",
    "Threshold",
    "TopKPositions",
    "UnmaskingStrategy",
    "draw_at",
    "get_unmasking",
    "run_corrector",
    "sample",
    "sample_autoregressive",
    "sample_uniform",
]
