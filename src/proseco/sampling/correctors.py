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
from typing import Any, Protocol

import torch

from proseco.errors import ConfigError
from proseco.registry import Registry
from proseco.sampling.processors import LogitsProcessor
from proseco.sampling.unmasking import top_indices

__all__ = [
    "CORRECTOR_UPDATES",
    "ArgmaxUpdate",
    "Corrector",
    "CorrectorResult",
    "CorrectorUpdate",
    "SampleUpdate",
    "TopKPositions",
    "run_corrector",
]

CORRECTOR_UPDATES: Registry[CorrectorUpdate] = Registry("corrector update")


class CorrectorUpdate(Protocol):
    """How one corrector call turns its logits into the next draft.

    ``update(logits [B, L, V], y [B, L], region [B, L] bool, processor, generator) -> [B, L]``
    returns proposed tokens (only positions inside ``region`` are used). ``deterministic`` says
    whether the result is a function of the inputs alone (no random draws): only then may the
    loop stop early at a fixed point, which cannot change the output.
    """

    deterministic: bool

    def __call__(
        self,
        logits: torch.Tensor,
        y: torch.Tensor,
        region: torch.Tensor,
        processor: LogitsProcessor,
        generator: torch.Generator | None,
    ) -> torch.Tensor: ...


@CORRECTOR_UPDATES.register("argmax")
@dataclass(frozen=True)
class ArgmaxUpdate:
    """Every position takes the corrector's argmax (the research default)."""

    deterministic = True

    def __call__(self, logits, y, region, processor, generator) -> torch.Tensor:
        return logits.argmax(dim=-1)


@CORRECTOR_UPDATES.register("sample")
@dataclass(frozen=True)
class SampleUpdate:
    """Every position draws from the processed distribution (temperature / top-k / top-p)."""

    deterministic = False

    def __call__(self, logits, y, region, processor, generator) -> torch.Tensor:
        rows, cols = region.nonzero(as_tuple=True)
        proposal = y.clone()
        if rows.numel():
            proposal[rows, cols] = processor.sample(logits[rows, cols], generator)[0]
        return proposal


@CORRECTOR_UPDATES.register("top_k_positions")
@dataclass(frozen=True)
class TopKPositions:
    """Change only the ``positions`` most confident disagreeing positions per row per call.

    Among positions inside ``region`` whose argmax differs from ``y``, the ``positions`` with the
    highest argmax probability take their argmax; all others keep ``y``. (Not to be confused with
    the vocabulary ``top_k`` of :class:`~proseco.SamplingConfig`.)

    Attributes:
        positions: positions changed per row per corrector call (``>= 1``).
    """

    positions: int = 1

    deterministic = True

    def __post_init__(self) -> None:
        if isinstance(self.positions, bool) or not isinstance(self.positions, int):
            raise ConfigError(
                f"TopKPositions.positions must be an int >= 1, got {self.positions!r}"
            )
        if self.positions < 1:
            raise ConfigError(
                f"TopKPositions.positions must be >= 1, got {self.positions}; e.g. positions=4"
            )

    def __call__(self, logits, y, region, processor, generator) -> torch.Tensor:
        best_logit, best = logits.max(dim=-1)
        confidence = torch.exp(best_logit.float() - torch.logsumexp(logits.float(), dim=-1))
        candidate = region & (best != y)
        score = torch.where(candidate, confidence, torch.full_like(confidence, -1.0))
        k = min(self.positions, y.shape[1])
        top = top_indices(score, k)  # [B, k]; ties: the leftmost first, whatever the padding
        take = candidate.gather(1, top)
        proposal = y.clone()
        proposal.scatter_(1, top, torch.where(take, best.gather(1, top), y.gather(1, top)))
        return proposal


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
        update: how each corrector call updates the draft: a :class:`CorrectorUpdate` object or a
            registered name / spec string (``"argmax"``, ``"sample"``,
            ``"top_k_positions:positions=4"``).
        early_exit: for deterministic updates, a row whose draft is a fixed point stops there
            (further calls could change nothing, so outputs are identical); :func:`proseco.sample`
            then calls the model only on the rows still changing.
        final_steps: after each block is fully decoded, run one more corrector loop of up to this
            many calls over it (everything generated so far), so the tokens revealed at the
            block's last step are checked too. ``0`` (default) is the paper's Algorithm 2, whose
            last corrector loop comes before the last unmasking step.
    """

    steps: int = 1
    every: int = 1
    start: int = 0
    update: CorrectorUpdate = ArgmaxUpdate()
    early_exit: bool = True
    final_steps: int = 0

    def __post_init__(self) -> None:
        for name, low in (("steps", 0), ("every", 1), ("start", 0), ("final_steps", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"Corrector {name} must be an int >= {low}, got {value!r}")
        update = CORRECTOR_UPDATES.build(self.update)
        if not callable(update) or not hasattr(update, "deterministic"):
            raise ConfigError(
                f"Corrector update must be one of {CORRECTOR_UPDATES.names()} or an object with "
                f"__call__ and a `deterministic` attribute, got {self.update!r}"
            )
        object.__setattr__(self, "update", update)
        if not isinstance(self.early_exit, bool):
            raise ConfigError(
                f"Corrector early_exit must be True or False, got {self.early_exit!r}"
            )

    def fires(self, step: int) -> bool:
        """Whether the corrector runs at 1-based step number ``step``."""
        return self.steps > 0 and step % self.every == 0 and step >= self.start

    @property
    def deterministic(self) -> bool:
        """Whether a corrector run is a deterministic function of its input (no draws)."""
        return bool(self.update.deterministic)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (the update as ``{"name": ..., **fields}``; ``final_steps`` only
        when set, so configs saved before it existed read back equal)."""
        out = {
            "steps": self.steps,
            "every": self.every,
            "start": self.start,
            "update": CORRECTOR_UPDATES.to_dict(self.update),
            "early_exit": self.early_exit,
        }
        if self.final_steps:
            out["final_steps"] = self.final_steps
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Corrector:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


@dataclass
class CorrectorResult:
    """Output of :func:`run_corrector` (``B`` = rows given to it).

    Attributes:
        xt: ``[B, L]`` tokens after the overwrite (same masks as the input).
        logits: ``[B, L, V]`` logits of each row's last corrector call.
        changed: ``[B, L]`` bool, positions whose token the corrector changed.
        calls: number of times ``call`` ran (on all rows or, after rows settled, on fewer).
        row_calls: ``[B]`` corrector calls each row took part in.
    """

    xt: torch.Tensor
    logits: torch.Tensor
    changed: torch.Tensor
    calls: int
    row_calls: torch.Tensor | None = None


def run_corrector(
    corrector: Corrector,
    call: Callable[..., torch.Tensor],
    xt: torch.Tensor,
    logits: torch.Tensor,
    region: torch.Tensor,
    *,
    mask_id: int,
    processor: LogitsProcessor,
    generator: torch.Generator | None = None,
    per_row: bool = False,
) -> CorrectorResult:
    """Run one corrector loop (Algorithm 3).

    Early exit (deterministic updates with ``corrector.early_exit``): a draft that a call leaves
    unchanged is a fixed point, since the next call would see the same input and propose the same
    tokens. Without ``per_row`` the loop stops once every row is at a fixed point (one unsettled
    row keeps all of them running); with ``per_row`` a settled row leaves the loop at once and
    later calls run on the rows still changing only. Either way the result equals running all
    ``S`` calls, as long as the model's output for a row does not depend on the other rows.

    Args:
        corrector: the settings (``steps >= 1`` here).
        call: ``call(y [B, L]) -> logits [B, L, V]`` with the mask column at ``-inf``; one model
            evaluation (counted by the caller). With ``per_row``, once some rows have settled it
            is called as ``call(y[rows], rows)`` with ``rows`` ``[n]`` the indices still changing.
        xt: ``[B, L]`` current tokens, with masks.
        logits: ``[B, L, V]`` denoiser logits for ``xt`` (mask column at ``-inf``); their argmax
            initialises the draft.
        region: ``[B, L]`` bool, positions the corrector may rewrite.
        mask_id: the mask token id.
        processor: used by random updates (:class:`SampleUpdate`).
        generator: random generator for random updates.
        per_row: let settled rows leave the loop one by one (gather, call, scatter).
    """
    masked = xt == mask_id
    y = torch.where(masked, logits.argmax(dim=-1), xt)
    last = logits
    calls = 0
    row_calls = torch.zeros(xt.shape[0], dtype=torch.long, device=xt.device)
    exit_early = corrector.deterministic and corrector.early_exit
    rows: torch.Tensor | None = None  # rows still changing; None = every row
    for _ in range(corrector.steps):
        if rows is None:
            y_in, reg = y, region
            out = call(y)
            last = out
            row_calls += 1
        else:
            y_in, reg = y[rows], region[rows]
            out = call(y_in, rows)
            last[rows] = out
            row_calls[rows] += 1
        calls += 1
        proposal = corrector.update(out, y_in, reg, processor, generator)
        y_new = torch.where(reg, proposal, y_in)
        if not exit_early:
            y = y_new
            continue
        moving = (y_new != y_in).any(dim=1)  # [n]
        if not per_row:
            if not bool(moving.any()):
                break
            y = y_new
            continue
        if rows is None:
            y = y_new
            if bool(moving.all()):
                continue
            rows = moving.nonzero(as_tuple=True)[0]
        else:
            y[rows] = y_new
            rows = rows[moving]
        if rows.numel() == 0:
            break
    write = region & ~masked
    new_xt = torch.where(write, y, xt)
    return CorrectorResult(new_xt, last, write & (new_xt != xt), calls, row_calls)
