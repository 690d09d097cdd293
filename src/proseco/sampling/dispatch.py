"""Which sampler a model takes: one entry point for the command line and the studies.

A causal model (``config.causal``, the AR baseline) is sampled left to right by
:func:`~proseco.sampling.autoregressive.sample_autoregressive`; every other model by the masked
diffusion loop :func:`~proseco.sampling.loop.sample`, except a uniform-noise model
(``config.diffusion == "uniform"``, UDLM), sampled by
:func:`~proseco.sampling.uniform.sample_uniform`. Each pair is ``(check, sample)`` with the
same call signature ``(model, config, *, mask_id, batch_size, length, prompt, generator)``:
``check`` validates every argument without a model call, ``sample`` returns a
:class:`~proseco.SampleOutput` whose NFEs are counted the same way (per sample, per row).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from proseco.sampling.autoregressive import (
    check_autoregressive_args,
    is_causal,
    sample_autoregressive,
)
from proseco.sampling.loop import check_sample_args, sample
from proseco.sampling.uniform import check_uniform_args, is_uniform, sample_uniform

__all__ = ["sampler_for", "sampler_kind"]


def sampler_kind(model: Any) -> str:
    """``"autoregressive"`` for a causal model, ``"uniform"`` for a UDLM model, else ``"masked"``."""
    if is_causal(model):
        return "autoregressive"
    if is_uniform(model):
        return "uniform"
    return "masked"


def sampler_for(model: Any, *, stop_at_eos: bool = True) -> tuple[Callable, Callable]:
    """``(check, sample)`` for ``model`` (see the module docstring).

    ``stop_at_eos``: for the AR sampler, whether a row stops at its first EOS (the masked loop
    reads ``SamplingConfig.stop_at_eos`` instead).
    """
    kind = sampler_kind(model)
    if kind == "autoregressive":
        return check_autoregressive_args, functools.partial(
            sample_autoregressive, stop_at_eos=stop_at_eos
        )
    if kind == "uniform":
        return check_uniform_args, sample_uniform
    return check_sample_args, sample
