"""Which sampler a model takes: one entry point for the command line and the studies.

The model's training method (:func:`proseco.methods.method_for_model`, read from its config)
owns its sampler: a causal model (``config.causal``, the AR baseline) is sampled left to right by
:func:`~proseco.sampling.autoregressive.sample_autoregressive`, a uniform-noise model
(``config.diffusion == "uniform"``, UDLM) by :func:`~proseco.sampling.uniform.sample_uniform`,
every other model by the masked diffusion loop :func:`~proseco.sampling.loop.sample`. Each pair
is ``(check, sample)`` with the same call signature ``(model, config, *, mask_id, batch_size,
length, prompt, generator)``: ``check`` validates every argument without a model call,
``sample`` returns a :class:`~proseco.SampleOutput` whose NFEs are counted the same way (per
sample, per row).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from proseco.methods import method_for_model

__all__ = ["sampler_for", "sampler_kind"]


def sampler_kind(model: Any) -> str:
    """``"autoregressive"`` for a causal model, ``"uniform"`` for a UDLM model, else ``"masked"``
    (the ``sampler_kind`` of the model's training method)."""
    return method_for_model(model).sampler_kind


def sampler_for(model: Any) -> tuple[Callable, Callable]:
    """``(check, sample)`` for ``model`` (see the module docstring). Whether rows stop at EOS
    is ``SamplingConfig.stop_at_eos`` (``None``: each sampler's natural default)."""
    return method_for_model(model).sampler()
