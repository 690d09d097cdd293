"""Training methods: what ``loss.objective`` names, in one registry.

A method owns everything that differs between MDLM / ProSeCo, PRISM, UDLM and the AR baseline:

* the **model flags** a fresh model gets (``model_flags``, fields of the DiT config such as
  ``causal=True``), which also tell which method's sampler a saved model takes;
* its **config checks** (:meth:`TrainingMethod.check_section`, :meth:`TrainingMethod.two_backward`)
  and **model checks** (:meth:`TrainingMethod.prepare_model`, :meth:`TrainingMethod.check_model`);
* its **loss** (:meth:`TrainingMethod.loss`, one micro-batch);
* its **validation metric** (:meth:`TrainingMethod.validation_config`,
  :meth:`TrainingMethod.validation_values`, :meth:`TrainingMethod.validation_metrics`) and the
  bound :func:`proseco.eval.likelihood.validation_nelbo` reports (:meth:`TrainingMethod.nelbo`);
* the **sampler** its models dispatch to (:meth:`TrainingMethod.sampler`).

Training, evaluation and :mod:`proseco.sampling.dispatch` look methods up here; no other module
compares objective names. A new method is one module with a subclass plus one
``@METHODS.register("name")`` line (see ``docs/architecture.md``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch

from proseco.errors import ConfigError
from proseco.losses import LossConfig, LossOutput, mdm_loss
from proseco.registry import Registry
from proseco.sampling.loop import check_sample_args, sample
from proseco.schedules import Schedule

__all__ = [
    "METHODS",
    "VALIDATION_T_MIN",
    "TrainingMethod",
    "get_method",
    "method_for_model",
    "nelbo_metrics",
]

METHODS: Registry[TrainingMethod] = Registry("training method")

VALIDATION_T_MIN = 1e-3
"""The smallest time of every validation draw, whatever the run trained with: validation NELBOs
of runs with different ``loss.t_min`` stay comparable."""


def nelbo_metrics(total: float, tokens: float) -> dict[str, float]:
    """``nelbo = total / tokens`` (nats per token) with ``ppl = exp(nelbo)`` and bits per token."""
    nelbo = total / tokens
    return {"nelbo": nelbo, "ppl": math.exp(min(nelbo, 700.0)), "bpd": nelbo / math.log(2.0)}


def _model_config(model: Any) -> Any:
    return getattr(model, "config", None)


class TrainingMethod:
    """One way to train (and then sample) a model. Subclass it and register the subclass.

    Class attributes:
        name: the registered name (``loss.objective``); set by ``METHODS.register``.
        model_flags: DiT config fields a fresh model is built with (``{}``: a plain masked
            diffusion model). A model whose config has all of them belongs to this method
            (:func:`method_for_model`).
        model_kind: what such a model is, for error messages (``"a causal (AR) model"``).
        sampler_kind: ``"masked"``, ``"uniform"`` or ``"autoregressive"``: the sampler family;
            a pretrained model may be trained further by a method of its own family only.
        passes: model calls per training loss; ``loss.two_backward`` only helps with two.
        validation_sums: names of the quantities :meth:`validation_values` adds up.
    """

    name: ClassVar[str] = ""
    model_flags: ClassVar[Mapping[str, Any]] = {}
    model_kind: ClassVar[str] = "a masked diffusion model"
    sampler_kind: ClassVar[str] = "masked"
    passes: ClassVar[int] = 2
    validation_sums: ClassVar[tuple[str, ...]] = ("nelbo_sum", "tokens")

    # ------------------------------------------------------------------ config and model
    def check_section(self, loss: Any) -> None:
        """Check the recipe's ``loss`` section for this method (raise :class:`ConfigError`)."""

    def two_backward(self, requested: bool | None) -> bool:
        """``loss.two_backward`` resolved: on by default for a two-pass loss; a one-pass loss
        has nothing to split, so it is always off there."""
        if self.passes < 2:
            return False
        return True if requested is None else bool(requested)

    def prepare_model(self, model: Any, loss: Any) -> Any:
        """The model to train, from a fresh or pretrained one (PRISM adds its quality head)."""
        return model

    def check_model(self, model: Any, config: Any) -> None:
        """Raise ``ValueError`` if ``model`` cannot be trained by this method under ``config``
        (a :class:`~proseco.training.config.TrainConfig`). The default: the model must be of
        this method's sampler family (a causal model trains only as AR, and so on)."""
        found = method_for_model(model)
        if found.sampler_kind != self.sampler_kind:
            raise ValueError(
                f"model.pretrained is {found.model_kind} but loss.objective is {self.name!r}; "
                f"set loss.objective: {found.name}, or start from scratch (remove "
                "model.pretrained)"
            )

    def describes(self, model: Any) -> bool:
        """Whether ``model``'s config carries every one of :attr:`model_flags`."""
        config = _model_config(model)
        return all(getattr(config, k, None) == v for k, v in self.model_flags.items())

    # ------------------------------------------------------------------ training
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
        """The loss of one micro-batch (``input_ids``, ``loss_mask``, ``noise_mask`` ``[B, L]``).

        ``conditioning`` holds the model keyword arguments (labels already dropped);
        ``backward_fn`` is the two-backward hook (None: the caller backpropagates ``loss``).
        """
        raise NotImplementedError(f"training method {self.name!r} defines no loss")

    def term_stats(self, config: LossConfig) -> bool:
        """Whether the per-term diagnostics of :mod:`proseco.training.term_stats` apply."""
        return False

    # ------------------------------------------------------------------ validation
    def validation_config(self, config: LossConfig) -> LossConfig:
        """The loss options validation runs with: the training ones, with ``t`` drawn from
        :data:`VALIDATION_T_MIN`."""
        return dataclasses.replace(config, t_min=VALIDATION_T_MIN)

    def validation_values(self, out: LossOutput) -> torch.Tensor:
        """One validation batch's contribution to the sums named by :attr:`validation_sums`
        (float64): by default the first term times its tokens, and the tokens."""
        n = out.num_tokens.double()
        return torch.stack([out.mdm_loss.double() * n, n])

    def validation_metrics(self, sums: torch.Tensor) -> dict[str, float]:
        """The validation record from the sums over all batches and processes: by default
        ``nelbo`` (the first term per token), ``ppl``, ``bpd`` and ``tokens``."""
        tokens = float(sums[1].clamp(min=1))
        return {**nelbo_metrics(float(sums[0]), tokens), "tokens": int(sums[1])}

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
        """The held-out likelihood bound of one batch (its ``mdm_terms`` are summed):
        the MDLM NELBO by default."""
        return mdm_loss(
            model, x0, mask_id=mask_id, schedule=schedule, loss_mask=loss_mask,
            conditioning=conditioning, generator=generator, t_min=t_min,
        )  # fmt: skip

    # ------------------------------------------------------------------ sampling
    def sampler(self) -> tuple[Callable, Callable]:
        """``(check, sample)`` for this method's models (see :mod:`proseco.sampling.dispatch`);
        by default the masked diffusion loop. Every setting, ``stop_at_eos`` included, is in
        the :class:`~proseco.SamplingConfig` passed to ``sample``."""
        return check_sample_args, sample


def get_method(method: str | TrainingMethod) -> TrainingMethod:
    """The method registered as ``method`` (a method object passes through).

    Raises:
        ConfigError: an unknown name (the message lists the registered ones).
    """
    if isinstance(method, TrainingMethod):
        return method
    return METHODS.get(method)()


def method_for_model(model: Any) -> TrainingMethod:
    """The method ``model`` was trained by, from its config: among the registered methods whose
    :attr:`~TrainingMethod.model_flags` the config carries, the one with the most flags (the
    first registered on a tie; a model with none of them is a plain masked diffusion model)."""
    best: TrainingMethod | None = None
    for name in METHODS:
        method = get_method(name)
        if method.describes(model) and (
            best is None or len(method.model_flags) > len(best.model_flags)
        ):
            best = method
    if best is None:
        raise ConfigError(f"no registered training method describes {type(model).__name__}")
    return best
