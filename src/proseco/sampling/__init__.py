"""Sampling: one loop (:func:`sample`) with pluggable unmasking strategies, ProSeCo corrector
loops, classifier-free guidance and ReMDM remasking (the semantics of ALGORITHMS.md §3-4)."""

from proseco.sampling.correctors import Corrector, run_corrector
from proseco.sampling.guidance import Guidance
from proseco.sampling.loop import sample
from proseco.sampling.output import SampleOutput, SamplingHistory, StepRecord
from proseco.sampling.processors import LogitsProcessor
from proseco.sampling.remasking import ReMDM
from proseco.sampling.unmasking import (
    Ancestral,
    Confidence,
    Reveal,
    StepInfo,
    Threshold,
    UnmaskingStrategy,
    get_unmasking,
)

__all__ = [
    "Ancestral",
    "Confidence",
    "Corrector",
    "Guidance",
    "LogitsProcessor",
    "ReMDM",
    "Reveal",
    "SampleOutput",
    "SamplingHistory",
    "StepInfo",
    "StepRecord",
    "Threshold",
    "UnmaskingStrategy",
    "get_unmasking",
    "run_corrector",
    "sample",
]
