"""ReMDM: remasking samplers for masked diffusion (Wang et al., 2025), a training-free baseline.

Use it as an unmasking strategy: ``sample(model, unmasking=ReMDM("loop"))`` (or the spec string
``"remdm:mode=loop,eta=0.02"``).

One ReMDM step from ``t`` to ``s`` with remasking probability ``sigma`` (``p`` is the processed
clean-token distribution, mask excluded):

* a decoded position keeps its token with probability ``1 - sigma`` and becomes a mask with
  probability ``sigma``;
* a masked position becomes token ``v`` with probability
  ``p(v) (alpha_s - (1 - sigma) alpha_t) / (1 - alpha_t)`` and stays masked otherwise.

``sigma_max = min(1, (1 - alpha_s) / alpha_t)`` keeps these valid. Schedules for ``sigma``:
``cap``: ``min(eta, (1 - alpha_s) / alpha_t)``; ``rescale``: ``eta * sigma_max``; ``conf``:
``sigma_max * softmax(score)`` over decoded positions, a token's score being minus the probability it
had when decoded; ``loop``: MDLM on a schedule rescaled to reach ``alpha_on`` at ``t_on``, then
constant ``alpha = alpha_on`` with ``sigma = eta`` for ``t_off < t <= t_on``, then MDLM from
``alpha_on`` to 1. The ``loop`` times follow the public code, including its piecewise-linear
``alpha`` (which ignores the sampler's schedule)::

    alpha(t) = alpha_on * (1 - t) / (1 - t_on)          t >= t_on
             = alpha_on                                  t_off <= t <= t_on
             = 1 - (1 - alpha_on) * t / t_off            t <= t_off

This ``alpha`` is continuous, and every step uses it at both of its ends, so a step that crosses
``t_on`` (or ``t_off``, or both, on a coarse grid) stops exactly at ``alpha_on`` (or goes on into the
last phase) instead of overshooting: the masked fraction when the grid first reaches ``t <= t_on``
is ``1 - alpha_on`` for every number of steps. Remasking (``sigma = eta``) happens only on steps
that lie wholly inside the hold phase ``[t_off, t_on]``. (The public code, and this library before
0.2, evaluated the crossing step with the first phase's formula at both ends, so at ``T <= 16``
every mask was revealed at that step and the hold phase's remasks were then filled by one greedy
call.)

The other modes use the sampler's schedule (the public code's ``alpha(t) = 1 - t`` is
``LogLinearSchedule(eps=0.0)``); the other modes use the sampler's schedule (the
public code's ``alpha(t) = 1 - t`` is ``LogLinearSchedule(eps=0.0)``). ``sigma = 0`` is MDLM: same
draws, same tokens.

Draws, per step: one uniform per position decides reveal / remask / keep; revealed positions then
draw their token — the same stream as :class:`~proseco.sampling.unmasking.Ancestral`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from proseco.errors import ConfigError
from proseco.sampling.unmasking import UNMASKING, Reveal, StepInfo, draw_at

__all__ = ["ReMDM", "REMDM_MODES"]

REMDM_MODES = ("cap", "rescale", "conf", "loop")


@UNMASKING.register("remdm")
@dataclass(frozen=True)
class ReMDM:
    """ReMDM: the MDLM posterior with remasking; an unmasking strategy (``unmasking=ReMDM(...)``).

    Attributes:
        mode: how ``sigma`` is scheduled: ``"cap" | "rescale" | "conf" | "loop"``.
        eta: remasking strength (unused by ``conf``). Public OWT settings: cap 0.008, rescale
            0.015, loop 0.02.
        t_on: ``loop``: time at which the remasking phase starts.
        t_off: ``loop``: time at which it ends.
        alpha_on: ``loop``: ``alpha`` held during the remasking phase.
    """

    mode: Literal["cap", "rescale", "conf", "loop"] = "cap"
    eta: float = 0.02
    t_on: float = 0.55
    t_off: float = 0.05
    alpha_on: float = 0.9

    stop_when_done = False
    final_fill = "argmax"
    masked_logits_only = True  # remasking reads no logits

    def __post_init__(self) -> None:
        if self.mode not in REMDM_MODES:
            raise ConfigError(
                f"unknown ReMDM mode {self.mode!r}; choose one of {list(REMDM_MODES)}"
            )
        for name in ("eta", "t_on", "t_off", "alpha_on"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise ConfigError(f"ReMDM {name} must be a number, got {value!r}")
        if not 0.0 <= self.eta <= 1.0:
            raise ConfigError(f"ReMDM eta must be in [0, 1], got {self.eta}")
        if self.mode == "loop":
            if not 0.0 < self.t_off < self.t_on < 1.0:
                raise ConfigError(
                    f"ReMDM loop needs 0 < t_off < t_on < 1, got t_off={self.t_off}, "
                    f"t_on={self.t_on}"
                )
            if not 0.0 < self.alpha_on < 1.0:
                raise ConfigError(f"ReMDM alpha_on must be in (0, 1), got {self.alpha_on}")
            limit = (1.0 - self.alpha_on) / self.alpha_on
            if self.eta > limit:
                raise ConfigError(
                    f"ReMDM loop needs eta <= (1 - alpha_on) / alpha_on = {limit:.4g} so that the "
                    f"step probabilities stay valid, got eta={self.eta}"
                )

    @property
    def uses_scores(self) -> bool:
        """``conf`` keeps per-position confidence scores between steps."""
        return self.mode == "conf"

    def loop_alpha(self, t: float) -> float:
        """``loop``: the piecewise-linear ``alpha(t)`` of the module docstring (continuous)."""
        if t >= self.t_on:
            return self.alpha_on * (1.0 - t) / (1.0 - self.t_on)
        if t >= self.t_off:
            return self.alpha_on
        return 1.0 - (1.0 - self.alpha_on) * t / self.t_off

    def alphas(self, step: StepInfo) -> tuple[float, float, bool]:
        """``(alpha_t, alpha_s, remasking_on)`` for the step from ``t`` to ``s``."""
        if self.mode != "loop":
            return step.alpha_t, step.alpha_s, True
        hold = step.t <= self.t_on and step.s >= self.t_off
        return self.loop_alpha(step.t), self.loop_alpha(step.s), hold

    def sigma(
        self, alpha_t: float, alpha_s: float, decoded: torch.Tensor, scores: torch.Tensor | None
    ) -> float | torch.Tensor:
        """Remasking probability: a float, or ``[B, Lb]`` for ``conf``."""
        if self.mode == "loop":
            return self.eta
        ratio = (1.0 - alpha_s) / alpha_t if alpha_t > 0 else float("inf")
        if self.mode == "cap":
            return min(self.eta, ratio)
        sigma_max = min(1.0, ratio)
        if self.mode == "rescale":
            return self.eta * sigma_max
        masked_scores = scores.masked_fill(~decoded, float("-inf"))
        weights = torch.softmax(masked_scores.float(), dim=-1).nan_to_num_(0.0)
        return weights * sigma_max

    def __call__(self, logits: torch.Tensor, xt: torch.Tensor, step: StepInfo) -> Reveal:
        alpha_t, alpha_s, on = self.alphas(step)
        masked = xt == step.mask_id
        decoded = step.active & ~masked
        u = torch.rand(xt.shape, generator=step.generator, device=xt.device)
        sigma = self.sigma(alpha_t, alpha_s, decoded, step.scores) if on else 0.0
        p_unmask = (alpha_s - (1.0 - sigma) * alpha_t) / (1.0 - alpha_t)
        reveal_at = step.active & masked & (u < p_unmask)
        out = draw_at(logits, reveal_at, step.processor, step.generator)
        if isinstance(sigma, torch.Tensor) or sigma > 0:
            out.remask = decoded & (u < sigma)
        if self.uses_scores:
            scores = step.scores.clone()
            scores[out.rows, out.cols] = -out.probs.to(scores.dtype)
            if out.remask is not None:
                scores.masked_fill_(out.remask, float("-inf"))
            out.scores = scores
        return out
