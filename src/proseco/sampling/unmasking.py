"""Unmasking strategies: which masked positions one sampling step reveals, and into what.

Every strategy is a small frozen object called as ``strategy(logits, xt, step) -> Reveal`` where
``logits`` ``[B, Lb, V]`` and ``xt`` ``[B, Lb]`` cover the region the step works on (the current
block, or the whole generated part) and :class:`StepInfo` carries the loop state (step index, times,
``alpha``, which positions may be edited, the logits processor and the generator). Strategies hold no
state of their own; the loop writes ``Reveal.tokens`` at ``(Reveal.rows, Reveal.cols)``.

* :class:`Ancestral` — the MDLM posterior: each masked position unmasks with probability
  ``(alpha_s - alpha_t) / (1 - alpha_t)`` into a token drawn from the processed distribution.
  (Drawing "unmask or not" first and the token second is the same distribution as one draw over
  ``V + 1`` outcomes, and only the revealed rows need a softmax.)
* :class:`Confidence` — LLaDA's ``low_confidence`` remasking: draw a candidate token at every masked
  position, reveal the ``k`` most confident ones.
* :class:`Threshold` — Fast-dLLM: reveal every candidate whose confidence is at least
  ``threshold`` (at least one per row; everything left on the block's last step).
* :class:`~proseco.sampling.remasking.ReMDM` (its own module) — MDLM with remasking.
* :class:`~proseco.sampling.prism.Prism` (its own module) — PRISM: remask what a learned quality
  head scores lowest.

Write your own: a frozen dataclass with the three class attributes of :class:`UnmaskingStrategy`
and ``__call__(logits, xt, step) -> Reveal``, registered with ``@UNMASKING.register("name")``;
its name then works in :class:`~proseco.SamplingConfig`, JSON files and ``proseco sample
--unmasking name:field=value``.

The mask column of ``logits`` is ``-inf`` already (the sampler's model wrapper removes it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import torch

from proseco.errors import ConfigError
from proseco.registry import Registry
from proseco.sampling.processors import LogitsProcessor

__all__ = [
    "UNMASKING",
    "StepInfo",
    "Reveal",
    "UnmaskingStrategy",
    "Ancestral",
    "Confidence",
    "Threshold",
    "get_unmasking",
    "draw_at",
    "top_indices",
]


UNMASKING: Registry[UnmaskingStrategy] = Registry("unmasking strategy")


@dataclass(frozen=True)
class StepInfo:
    """What a strategy may know about the current step.

    Attributes:
        index: step within the current block, 0-based.
        num_steps: steps planned for the block.
        t: current time; the step goes from ``t`` to ``s < t``.
        s: next time.
        alpha_t: ``alpha(t)`` of the sampling schedule.
        alpha_s: ``alpha(s)``.
        active: ``[B, Lb]`` bool, positions this step may edit (generated, not frozen).
        mask_id: the mask token id.
        processor: temperature / top-k / top-p and the categorical draw.
        generator: random generator for every draw (``None`` = global RNG).
        scores: ``[B, Lb]`` per-position scores kept by the loop for strategies that ask for them
            (ReMDM-conf), else ``None``.
        quality: ``[B, Lb]`` quality logits of the model call that gave ``logits`` (PRISM), for
            strategies with ``uses_quality = True``; else ``None``.
    """

    index: int
    num_steps: int
    t: float
    s: float
    alpha_t: float
    alpha_s: float
    active: torch.Tensor
    mask_id: int
    processor: LogitsProcessor
    generator: torch.Generator | None = None
    scores: torch.Tensor | None = None
    quality: torch.Tensor | None = None

    @property
    def is_last(self) -> bool:
        """Whether this is the block's last planned step."""
        return self.index == self.num_steps - 1


@dataclass
class Reveal:
    """What a step does: tokens written at ``(rows, cols)``, optionally positions re-masked.

    Attributes:
        rows: ``[N]`` row indices of revealed positions.
        cols: ``[N]`` column indices (relative to the region).
        tokens: ``[N]`` token ids written there.
        probs: ``[N]`` probability of each token under the processed distribution.
        remask: ``[B, Lb]`` bool positions turned back into masks (ReMDM), or ``None``.
        scores: updated ``[B, Lb]`` scores (strategies with ``uses_scores``), or ``None``.
    """

    rows: torch.Tensor
    cols: torch.Tensor
    tokens: torch.Tensor
    probs: torch.Tensor
    remask: torch.Tensor | None = None
    scores: torch.Tensor | None = None

    @property
    def count(self) -> int:
        """Number of revealed positions."""
        return int(self.rows.numel())


class UnmaskingStrategy(Protocol):
    """``strategy(logits [B, Lb, V], xt [B, Lb], step) -> Reveal``.

    Class attributes read by the loop: ``stop_when_done`` (end a block as soon as it has no masks
    left), ``final_fill`` (``"sample"`` or ``"argmax"``: how leftover masks are filled),
    ``uses_scores`` (keep :attr:`StepInfo.scores` between steps) and, optionally,
    ``masked_logits_only`` (``True``: the strategy reads ``logits`` at masked positions only, so
    rows without a mask need no model call; default ``False``) and ``uses_quality`` (``True``:
    the strategy reads :attr:`StepInfo.quality`, the model's quality logits from the same call;
    default ``False``).
    """

    stop_when_done: bool
    final_fill: str
    uses_scores: bool

    def __call__(self, logits: torch.Tensor, xt: torch.Tensor, step: StepInfo) -> Reveal: ...


def draw_at(
    logits: torch.Tensor,
    where: torch.Tensor,
    processor: LogitsProcessor,
    generator: torch.Generator | None,
    greedy: bool = False,
) -> Reveal:
    """Draw tokens at the ``True`` positions of ``where`` ``[B, Lb]`` from ``logits`` ``[B, Lb, V]``.

    Only the selected rows are processed (one softmax each). ``greedy`` takes the argmax instead.
    """
    rows, cols = where.nonzero(as_tuple=True)
    if rows.numel() == 0:
        empty = rows.new_empty(0)
        return Reveal(rows, cols, empty, logits.new_empty(0, dtype=torch.float32))
    selected = logits[rows, cols]  # [N, V], a copy
    if greedy:
        log_probs = torch.log_softmax(selected.float(), dim=-1)
        tokens = log_probs.argmax(dim=-1)
        probs = log_probs.gather(-1, tokens[:, None]).squeeze(-1).exp()
    else:
        tokens, probs = processor.sample(selected, generator)
    return Reveal(rows, cols, tokens, probs)


def top_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Column indices ``[B, k]`` of the ``k`` highest ``scores`` ``[B, L]`` per row; equal scores
    are taken leftmost first.

    ``torch.topk`` breaks ties in an order that depends on the row's width, so a left-padded row
    in a batch would pick other positions than the same row alone; a stable descending sort
    keeps the order of equal scores, which left padding (a shift of every column) does not
    change.
    """
    return torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]


@UNMASKING.register("ancestral")
@dataclass(frozen=True)
class Ancestral:
    """MDLM ancestral step (the paper's ``sample_posterior``)."""

    stop_when_done = False
    final_fill = "sample"
    uses_scores = False
    masked_logits_only = True

    def __call__(self, logits: torch.Tensor, xt: torch.Tensor, step: StepInfo) -> Reveal:
        p_unmask = (step.alpha_s - step.alpha_t) / (1.0 - step.alpha_t)
        u = torch.rand(xt.shape, generator=step.generator, device=xt.device)
        reveal = step.active & (xt == step.mask_id) & (u < p_unmask)
        return draw_at(logits, reveal, step.processor, step.generator)


def _candidates(
    logits: torch.Tensor, xt: torch.Tensor, step: StepInfo, score: str
) -> tuple[Reveal, torch.Tensor]:
    """Candidate tokens at every eligible masked position and their confidence ``[B, Lb]``.

    Confidence is the probability of the drawn token under the unprocessed softmax (as LLaDA),
    or ``U[0, 1)`` for ``score="random"``; ``-inf`` where not eligible.
    """
    eligible = step.active & (xt == step.mask_id)
    cand = draw_at(logits, eligible, step.processor, step.generator)
    conf = torch.full(xt.shape, float("-inf"), device=xt.device)
    if cand.count == 0:
        return cand, conf
    if score == "random":
        values = torch.rand(cand.count, generator=step.generator, device=xt.device)
    else:
        selected = logits[cand.rows, cand.cols].float()
        chosen = selected.gather(-1, cand.tokens[:, None]).squeeze(-1)
        values = torch.exp(chosen - torch.logsumexp(selected, dim=-1))
    conf[cand.rows, cand.cols] = values
    return cand, conf


def _keep(cand: Reveal, reveal: torch.Tensor) -> Reveal:
    keep = reveal[cand.rows, cand.cols]
    return Reveal(cand.rows[keep], cand.cols[keep], cand.tokens[keep], cand.probs[keep])


@UNMASKING.register("confidence")
@dataclass(frozen=True)
class Confidence:
    """Reveal the ``k`` most confident candidates per row (LLaDA ``low_confidence``).

    Attributes:
        counts: how ``k`` is chosen. ``"even"``: ``k = ceil(masks_left / steps_left)``, which is
            exactly LLaDA's split (``masks // steps`` per step, the remainder on the first steps);
            ``"schedule"``: reveal so that at most a fraction ``(1 - alpha_s) / (1 - alpha_t)`` of
            the masks remains (rounded down, with a 1e-4 tolerance for the ``eps`` of the time
            grid), following the sampling schedule; for the log-linear schedule this is "even".
        score: ``"probability"`` (LLaDA ``low_confidence``) or ``"random"`` (LLaDA ``random``).
    """

    counts: Literal["even", "schedule"] = "even"
    score: Literal["probability", "random"] = "probability"

    stop_when_done = True
    final_fill = "sample"
    uses_scores = False
    masked_logits_only = True

    def __post_init__(self) -> None:
        if self.counts not in ("even", "schedule"):
            raise ConfigError(
                f"Confidence counts must be 'even' or 'schedule', got {self.counts!r}"
            )
        if self.score not in ("probability", "random"):
            raise ConfigError(
                f"Confidence score must be 'probability' or 'random', got {self.score!r}"
            )

    def num_to_reveal(self, masks_left: torch.Tensor, step: StepInfo) -> torch.Tensor:
        """``k`` per row ``[B]`` given the eligible masks left per row ``[B]``."""
        steps_left = step.num_steps - step.index
        if steps_left <= 1:
            return masks_left
        if self.counts == "even":
            return (masks_left + steps_left - 1) // steps_left
        stay = (1.0 - step.alpha_s) / (1.0 - step.alpha_t)
        return masks_left - torch.floor(masks_left * stay + 1e-4).long()

    def __call__(self, logits: torch.Tensor, xt: torch.Tensor, step: StepInfo) -> Reveal:
        cand, conf = _candidates(logits, xt, step, self.score)
        if cand.count == 0:
            return cand
        masks_left = torch.isfinite(conf).sum(dim=1)
        k = self.num_to_reveal(masks_left, step)  # [B]
        k_max = int(k.max())
        if k_max == 0:
            return _keep(cand, torch.zeros_like(conf, dtype=torch.bool))
        top = top_indices(conf, k_max)  # [B, k_max]
        chosen = torch.arange(k_max, device=conf.device)[None, :] < k[:, None]
        reveal = torch.zeros_like(conf, dtype=torch.bool).scatter_(1, top, chosen)
        return _keep(cand, reveal)


@UNMASKING.register("threshold")
@dataclass(frozen=True)
class Threshold:
    """Reveal every candidate with confidence ``>= threshold`` (Fast-dLLM), at least one per row.

    On the block's last planned step every remaining candidate is revealed, so a block never ends
    with masks; with ``steps = length`` (one step per token) the step budget never binds and this
    is Fast-dLLM's rule exactly. Blocks end as soon as they are full.
    """

    threshold: float = 0.9

    stop_when_done = True
    final_fill = "sample"
    uses_scores = False
    masked_logits_only = True

    def __post_init__(self) -> None:
        if not isinstance(self.threshold, (int, float)) or not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(
                f"Threshold threshold must be a probability in [0, 1], got {self.threshold!r}; "
                "e.g. Threshold(0.9)"
            )

    def __call__(self, logits: torch.Tensor, xt: torch.Tensor, step: StepInfo) -> Reveal:
        cand, conf = _candidates(logits, xt, step, "probability")
        if cand.count == 0 or step.is_last:
            return cand
        reveal = conf >= self.threshold
        best = conf.argmax(dim=1, keepdim=True)  # [B, 1]
        has_any = torch.isfinite(conf).any(dim=1, keepdim=True)
        reveal.scatter_(1, best, has_any | reveal.gather(1, best))
        return _keep(cand, reveal)


def get_unmasking(strategy: str | dict | UnmaskingStrategy) -> UnmaskingStrategy:
    """Resolve a registered name, a spec string (``"threshold:threshold=0.8"``), a dict
    ``{"name": ..., **fields}`` or a strategy object (passed through)."""
    strategy = UNMASKING.build(strategy)
    if not callable(strategy):
        raise ConfigError(
            f"unmasking must be one of {UNMASKING.names()} or a callable strategy, got {strategy!r}"
        )
    return strategy
