"""PRISM: remask the tokens a quality head scores lowest (Kim et al., 2025), as an unmasking strategy.

Use it with a model fine-tuned by ``loss.objective: prism`` (a DiT with ``quality_head``):
``sample(model, unmasking=Prism())`` or ``proseco sample MODEL --unmasking prism:eta=0.02``.
The quality logits come from the same forward pass as the denoiser logits, so a step costs what
any other step costs (one evaluation, two with classifier-free guidance).

One step ``k`` of ``T`` on a region with ``N`` editable positions, ``D`` of them decoded (the
public code's ``topk_static`` update with its ``prism`` sampler):

1. target: ``ceil(N (k + 1) / T)`` decoded positions after the step (the last step: all ``N``);
2. remask count ``r``: only on steps ``step_on * T <= k < step_off * T`` (the public text setting:
   the second half). With ``eta > 0``, ``r ~ Binomial(D, sigma)``, ``sigma = min(eta, (1 - a_s) /
   a_t)`` with ``a_t = D / N`` and ``a_s = min(1, (N / T + D) / N)``; with ``eta = 0`` a fixed
   ``num_remask``. No remasking unless ``D > r`` and ``D < N - r``; ``r`` is lowered so that the
   remasked positions never have to be revealed again in the same step;
3. the ``r`` decoded positions with the lowest quality logits become masks (ties: lowest index);
   masked and prompt positions are never chosen;
4. ``target - (D - r)`` masked positions are revealed with tokens drawn from the processed
   denoiser distribution; which ones: uniformly at random (``order="random"``, the public code)
   or the most confident draws (``order="confidence"``).

Defaults follow the public OpenWebText scripts: ``eta = 0.01``, ``num_remask = 0``,
``step_on = 0.5``, ``step_off = 1.0``, random order (use ``top_p=0.9`` in the
:class:`~proseco.SamplingConfig` for their nucleus). With ``eta = 0`` and ``num_remask = 0``
PRISM is random-order top-k decoding (MaskGIT-style) with the same number of model calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from proseco.errors import ConfigError
from proseco.sampling.unmasking import UNMASKING, Reveal, StepInfo, _candidates, _keep

__all__ = ["Prism"]


@UNMASKING.register("prism")
@dataclass(frozen=True)
class Prism:
    """PRISM remasking by learned per-token quality; an unmasking strategy.

    Attributes:
        eta: remasking rate cap (``r ~ Binomial(decoded, min(eta, (1 - a_s) / a_t))``); 0 uses
            ``num_remask``.
        num_remask: fixed number of tokens remasked per step when ``eta = 0``.
        step_on: first step (as a fraction of the block's steps) on which remasking happens.
        step_off: remasking stops at this fraction of the steps (``1.0``: to the end).
        order: which masked positions a step reveals: ``"random"`` (public code) or
            ``"confidence"`` (highest probability of the drawn token).
    """

    eta: float = 0.01
    num_remask: int = 0
    step_on: float = 0.5
    step_off: float = 1.0
    order: Literal["random", "confidence"] = "random"

    stop_when_done = True
    final_fill = "sample"
    uses_scores = False
    uses_quality = True  # the loop passes the quality logits of the same model call
    masked_logits_only = True  # rows without masks never remask (needs D < N - r)

    def __post_init__(self) -> None:
        for name in ("eta", "step_on", "step_off"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise ConfigError(f"Prism {name} must be a number, got {value!r}")
        if not 0.0 <= self.eta <= 1.0:
            raise ConfigError(f"Prism eta must be in [0, 1], got {self.eta}; e.g. prism:eta=0.01")
        count = self.num_remask
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ConfigError(f"Prism num_remask must be an int >= 0, got {self.num_remask!r}")
        if not 0.0 <= self.step_on <= self.step_off <= 1.0:
            raise ConfigError(
                f"Prism needs 0 <= step_on <= step_off <= 1 (fractions of the steps), got "
                f"step_on={self.step_on}, step_off={self.step_off}"
            )
        if self.order not in ("random", "confidence"):
            raise ConfigError(f"Prism order must be 'random' or 'confidence', got {self.order!r}")

    def remasking_on(self, step: StepInfo) -> bool:
        """Whether step ``step.index`` of ``step.num_steps`` lies in ``[step_on, step_off)``."""
        return self.step_on * step.num_steps <= step.index < self.step_off * step.num_steps

    def num_to_remask(
        self, decoded: torch.Tensor, total: torch.Tensor, step: StepInfo
    ) -> torch.Tensor:
        """``r`` per row ``[B]`` before the caps of the step (decoded ``[B, Lb]`` bool, total
        ``[B]`` editable positions)."""
        count = decoded.sum(dim=1)
        if not self.remasking_on(step):
            return torch.zeros_like(count)
        if self.eta == 0:
            return torch.full_like(count, self.num_remask)
        n = total.double().clamp(min=1)
        alpha_t = count.double() / n
        alpha_s = ((n / step.num_steps + count.double()) / n).clamp(max=1.0)
        limit = torch.where(alpha_t > 0, (1.0 - alpha_s) / alpha_t.clamp(min=1e-12), 1.0)
        sigma = limit.clamp(max=self.eta)
        u = torch.rand(decoded.shape, generator=step.generator, device=decoded.device)
        return (decoded & (u < sigma[:, None].to(u.dtype))).sum(dim=1)

    def __call__(self, logits: torch.Tensor, xt: torch.Tensor, step: StepInfo) -> Reveal:
        if step.quality is None:
            raise ConfigError(
                "the prism unmasking strategy needs the quality scores of a PRISM model; the "
                "sampler got none (use a model fine-tuned with loss.objective: prism)"
            )
        masked = step.active & (xt == step.mask_id)
        decoded = step.active & ~masked
        total = step.active.sum(dim=1)
        num_masked, num_decoded = masked.sum(dim=1), decoded.sum(dim=1)
        target = (total * (step.index + 1) + step.num_steps - 1) // step.num_steps
        target = torch.minimum(target, total)
        if step.is_last:
            target = total
        r = self.num_to_remask(decoded, total, step)
        allowed = (r > 0) & (num_decoded > r) & (num_decoded < total - r)
        r = torch.where(allowed, r, torch.zeros_like(r))
        new = (target - num_decoded).clamp(min=0)
        r = torch.minimum(r, (num_masked - new).clamp(min=0))
        reveal_count = torch.minimum(new + r, num_masked)

        remask = lowest(step.quality, decoded, r)
        cand, conf = _candidates(
            logits, xt, step, "random" if self.order == "random" else "probability"
        )
        out = _keep(cand, top_per_row(conf, reveal_count))
        out.remask = remask if bool(remask.any()) else None
        return out


def lowest(scores: torch.Tensor, where: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` bool: the ``count[b]`` positions of row ``b`` with the lowest ``scores`` among
    ``where`` (ties: the lower index first)."""
    return top_per_row(-scores.float(), count, where)


def top_per_row(
    scores: torch.Tensor, count: torch.Tensor, where: torch.Tensor | None = None
) -> torch.Tensor:
    """``[B, L]`` bool: the ``count[b]`` highest ``scores`` of row ``b`` (only ``where`` and
    finite scores; ties: the lower index first)."""
    if where is not None:
        scores = scores.masked_fill(~where, float("-inf"))
    chosen = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    k_max = int(count.max()) if count.numel() else 0
    if k_max == 0:
        return chosen
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k_max]
    keep = torch.arange(k_max, device=scores.device)[None, :] < count[:, None]
    chosen.scatter_(1, order, keep)
    return chosen & torch.isfinite(scores)
