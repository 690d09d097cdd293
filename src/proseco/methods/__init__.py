"""Training methods (``loss.objective``): one registry, :data:`METHODS`, one module each.

=============  ===========================================  ==========================
name           loss                                          sampler
=============  ===========================================  ==========================
``diffusion``  MDLM (``sc_weight: 0``) / ProSeCo              masked loop
``ar``         next-token NLL of a causal model              left to right
``udlm``       uniform-noise NELBO                           uniform posterior steps
``prism``      quality-head BCE (+ MDLM term)                masked loop
=============  ===========================================  ==========================

Look a method up with :func:`get_method` (by name) or :func:`method_for_model` (from a model's
config). Adding one: subclass :class:`TrainingMethod` in a new module, decorate it with
``@METHODS.register("name")`` and import that module (here, for a shipped method).
"""

from proseco.methods.ar import Autoregressive
from proseco.methods.base import (
    METHODS,
    VALIDATION_T_MIN,
    TrainingMethod,
    get_method,
    method_for_model,
    nelbo_metrics,
)
from proseco.methods.diffusion import MaskedDiffusion
from proseco.methods.prism import PrismMethod
from proseco.methods.udlm import UniformDiffusion

__all__ = [
    "METHODS",
    "VALIDATION_T_MIN",
    "Autoregressive",
    "MaskedDiffusion",
    "PrismMethod",
    "TrainingMethod",
    "UniformDiffusion",
    "get_method",
    "method_for_model",
    "nelbo_metrics",
]
