"""The ProSeCo corrector loop (paper, Algorithm 3).

When the corrector fires, the denoiser's logits are turned into a fully unmasked draft
``y = argmax(logits)`` (already-unmasked positions keep their token, as SUBS would), and the model
is called on ``y`` up to ``S`` times, each call's output updating ``y``. Afterwards only positions
of ``xt`` that were already unmasked take ``y``'s tokens (masks stay masks: the corrector never
unmasks nor re-masks), and the last corrector logits drive the next unmasking step.

Which positions may change: the ``region`` the sampler passes — every generated position up to the
end of the current block, never the prompt. Positions outside it (the prompt, later blocks) keep
their draft token in ``y`` and serve as context only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from proseco.sampling.processors import LogitsProcessor

__all__ = ["Corrector", "CorrectorResult", "run_corrector"]

UPDATES = ("argmax", "sample", "top_k")


@dataclass(frozen=True)
class Corrector:
    """ProSeCo corrector settings.

    The corrector fires at step ``n`` (1-based, counted over the whole run, across blocks) iff
    ``steps > 0``, ``n % every == 0`` and ``n >= start``: this is the paper's
    ``(T - i + 1) mod omega == 0`` (Algorithm 2, whose first step is ``i = T``) and the research
    code's ``(i + 1) % every == 0`` with 0-based ``i``. ``every=1`` fires at every step, including
    the first one, where nothing is unmasked yet: its logits then drive the first unmasking.

    Attributes:
        steps: ``S``, the most corrector calls per firing (``0`` = plain MDLM).
        every: ``omega``, fire every ``every`` steps.
        start: do not fire before step ``start`` (1-based; ``0`` and ``1`` mean from the start).
        update: how each corrector call updates ``y``: ``"argmax"`` (greedy, the research default),
            ``"sample"`` (a draw from the processed distribution at every position) or ``"top_k"``
            (among positions whose argmax differs from ``y``, change only the ``top_k`` most
            confident per row).
        top_k: positions changed per call for ``update="top_k"``.
        early_exit: for the deterministic updates (``argmax``, ``top_k``) stop as soon as ``y`` is
            a fixed point; further calls could change nothing, so outputs are identical.
    """

    steps: int = 1
    every: int = 1
    start: int = 0
    update: Literal["argmax", "sample", "top_k"] = "argmax"
    top_k: int = 0
    early_exit: bool = True

    def __post_init__(self) -> None:
        for name, low in (("steps", 0), ("every", 1), ("start", 0), ("top_k", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"Corrector {name} must be an int >= {low}, got {value!r}")
        if self.update not in UPDATES:
            raise ValueError(
                f"unknown corrector update {self.update!r}; choose one of {list(UPDATES)}"
            )
        if self.update == "top_k" and self.top_k < 1:
            raise ValueError("Corrector(update='top_k') needs top_k >= 1, e.g. top_k=4")

    def fires(self, step: int) -> bool:
        """Whether the corrector runs at 1-based step number ``step``."""
        return self.steps > 0 and step % self.every == 0 and step >= self.start

    @property
    def deterministic(self) -> bool:
        """Whether a corrector run is a deterministic function of its input (no draws)."""
        return self.update != "sample"


@dataclass
class CorrectorResult:
    """Output of :func:`run_corrector`.

    Attributes:
        xt: ``[B, L]`` tokens after the overwrite (same masks as the input).
        logits: ``[B, L, V]`` logits of the last corrector call.
        changed: ``[B, L]`` bool, positions whose token the corrector changed.
        calls: number of corrector calls made.
    """

    xt: torch.Tensor
    logits: torch.Tensor
    changed: torch.Tensor
    calls: int


def run_corrector(
    corrector: Corrector,
    call: Callable[[torch.Tensor], torch.Tensor],
    xt: torch.Tensor,
    logits: torch.Tensor,
    region: torch.Tensor,
    *,
    mask_id: int,
    processor: LogitsProcessor,
    generator: torch.Generator | None = None,
) -> CorrectorResult:
    """Run one corrector loop (Algorithm 3).

    Args:
        corrector: the settings (``steps >= 1`` here).
        call: ``call(y [B, L]) -> logits [B, L, V]`` with the mask column at ``-inf``; one model
            evaluation (counted by the caller).
        xt: ``[B, L]`` current tokens, with masks.
        logits: ``[B, L, V]`` denoiser logits for ``xt`` (mask column at ``-inf``); their argmax
            initialises the draft.
        region: ``[B, L]`` bool, positions the corrector may rewrite.
        mask_id: the mask token id.
        processor: used by ``update="sample"``.
        generator: random generator for ``update="sample"``.
    """
    masked = xt == mask_id
    y = torch.where(masked, logits.argmax(dim=-1), xt)
    corrector_logits = logits
    calls = 0
    for _ in range(corrector.steps):
        corrector_logits = call(y)
        calls += 1
        proposal = _propose(corrector, corrector_logits, y, region, processor, generator)
        y_new = torch.where(region, proposal, y)
        if corrector.deterministic and corrector.early_exit and torch.equal(y_new, y):
            break
        y = y_new
    write = region & ~masked
    new_xt = torch.where(write, y, xt)
    return CorrectorResult(new_xt, corrector_logits, write & (new_xt != xt), calls)


def _propose(
    corrector: Corrector,
    logits: torch.Tensor,
    y: torch.Tensor,
    region: torch.Tensor,
    processor: LogitsProcessor,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """New tokens ``[B, L]`` from corrector ``logits`` ``[B, L, V]`` (valid inside ``region``)."""
    if corrector.update == "argmax":
        return logits.argmax(dim=-1)
    if corrector.update == "sample":
        rows, cols = region.nonzero(as_tuple=True)
        proposal = y.clone()
        if rows.numel():
            proposal[rows, cols] = processor.sample(logits[rows, cols], generator)[0]
        return proposal
    # top_k: the k most confident positions whose argmax disagrees with y
    best_logit, best = logits.max(dim=-1)
    confidence = torch.exp(best_logit.float() - torch.logsumexp(logits.float(), dim=-1))
    candidate = region & (best != y)
    score = torch.where(candidate, confidence, torch.full_like(confidence, -1.0))
    k = min(corrector.top_k, y.shape[1])
    top = torch.topk(score, k, dim=1).indices  # [B, k]
    take = candidate.gather(1, top)
    proposal = y.clone()
    proposal.scatter_(1, top, torch.where(take, best.gather(1, top), y.gather(1, top)))
    return proposal
