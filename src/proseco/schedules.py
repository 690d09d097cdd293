"""Noise schedules for absorbing-state (masked) diffusion.

A schedule gives the keep-probability ``alpha(t)`` of a token at time ``t`` in ``[0, 1]``
(``alpha(0) = 1``, ``alpha(1) ~ 0``), its derivative ``alpha'(t)`` and the continuous-time
MDLM ELBO weight ``w(t) = -alpha'(t) / (1 - alpha(t))``.

All functions take and return tensors of any shape (usually ``[B]``) and broadcast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from proseco.registry import Registry

__all__ = [
    "Schedule",
    "LogLinearSchedule",
    "LinearSchedule",
    "CosineSchedule",
    "PolynomialSchedule",
    "get_schedule",
    "SCHEDULES",
]


@dataclass(frozen=True)
class Schedule:
    """Base class: subclasses implement ``alpha`` and ``dalpha``.

    Attributes:
        eps: ``1 - alpha(1)``: the probability that a token survives to ``t = 1``. Keeps
            ``w(t)`` finite at ``t = 1`` and matches MDLM's log-linear schedule.
    """

    eps: float = 1e-3

    def alpha(self, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def dalpha(self, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def mask_prob(self, t: torch.Tensor) -> torch.Tensor:
        """Probability ``1 - alpha(t)`` that a noisable token is masked at time ``t``."""
        return 1.0 - self.alpha(t)

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        """MDLM ELBO weight ``w(t) = -alpha'(t) / (1 - alpha(t))``."""
        return -self.dalpha(t) / (1.0 - self.alpha(t))


@dataclass(frozen=True)
class LogLinearSchedule(Schedule):
    """``alpha(t) = 1 - (1 - eps) t``: MDLM's default. ``w(t) = 1 / t`` exactly."""

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return 1.0 - (1.0 - self.eps) * t

    def dalpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.full_like(t, -(1.0 - self.eps), dtype=torch.result_type(t, 1.0))

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        return 1.0 / t


@dataclass(frozen=True)
class LinearSchedule(Schedule):
    """Linear in the log-survival: ``alpha(t) = exp(-sigma_max t)``; ``alpha(1) = exp(-sigma_max)``.

    ``sigma_max`` defaults to ``-log(eps)`` so that ``alpha(1) = eps``.
    """

    sigma_max: float | None = None

    def _smax(self) -> float:
        return self.sigma_max if self.sigma_max is not None else -math.log(self.eps)

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.exp(-self._smax() * t)

    def dalpha(self, t: torch.Tensor) -> torch.Tensor:
        return -self._smax() * torch.exp(-self._smax() * t)


@dataclass(frozen=True)
class CosineSchedule(Schedule):
    """``alpha(t) = eps + (1 - eps) cos(pi t / 2)``; ``alpha(1) = eps``."""

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return self.eps + (1.0 - self.eps) * torch.cos(0.5 * math.pi * t)

    def dalpha(self, t: torch.Tensor) -> torch.Tensor:
        return -(1.0 - self.eps) * 0.5 * math.pi * torch.sin(0.5 * math.pi * t)


@dataclass(frozen=True)
class PolynomialSchedule(Schedule):
    """``alpha(t) = 1 - (1 - eps) t^power`` (``power = 1`` is log-linear)."""

    power: float = 2.0

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return 1.0 - (1.0 - self.eps) * t**self.power

    def dalpha(self, t: torch.Tensor) -> torch.Tensor:
        return -(1.0 - self.eps) * self.power * t ** (self.power - 1.0)


SCHEDULES: Registry[Schedule] = Registry("noise schedule")
SCHEDULES.register("loglinear")(LogLinearSchedule)
SCHEDULES.register("linear")(LinearSchedule)
SCHEDULES.register("cosine")(CosineSchedule)
SCHEDULES.register("polynomial")(PolynomialSchedule)


def get_schedule(name: str | Schedule | None = None, **kwargs) -> Schedule:
    """Return a schedule by name (``None`` -> log-linear). Unknown names list the valid ones."""
    if name is None:
        return LogLinearSchedule(**kwargs)
    if isinstance(name, Schedule):
        return name
    return SCHEDULES.build(name, **kwargs)
