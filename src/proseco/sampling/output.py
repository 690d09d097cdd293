"""What :func:`proseco.sample` returns: tokens, exact NFE counts, timing and an optional history.

The history records, for every step, which positions were unmasked, which the corrector changed
and which were re-masked, so that users can see what self-correction did;
:meth:`SamplingHistory.render` prints it as text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

__all__ = ["CorrectorChanges", "SampleOutput", "SamplingHistory", "StepRecord"]

_GREEN, _YELLOW, _RED, _DIM, _RESET = "\033[32m", "\033[33m", "\033[31m", "\033[2m", "\033[0m"


@dataclass
class StepRecord:
    """One step of a sampling run (tensors on the CPU).

    Attributes:
        step: 1-based step number over the whole run (final fills and EOS stops repeat the number
            of the step before them).
        block: 0-based block index.
        t: time at the start of the step.
        kind: ``"step"``, ``"fill"`` (leftover masks filled after a block), ``"polish"``
            (``Corrector.final_steps``: the corrector loop over a finished block) or ``"eos"`` (rows
            stopped at EOS and were padded).
        tokens: ``[B, L]`` tokens after the step.
        unmasked: ``[B, L]`` bool, positions revealed in this step.
        corrected: ``[B, L]`` bool, positions the corrector changed in this step.
        remasked: ``[B, L]`` bool, positions turned back into masks (ReMDM).
        corrector_fired: whether the corrector ran in this step.
        nfe: model calls so far, including this step (see ``SampleOutput.model_calls``).
    """

    step: int
    block: int
    t: float
    kind: str
    tokens: torch.Tensor
    unmasked: torch.Tensor
    corrected: torch.Tensor
    remasked: torch.Tensor
    corrector_fired: bool
    nfe: int


@dataclass
class SamplingHistory:
    """Per-step records of one sampling run.

    Attributes:
        initial: ``[B, L]`` tokens before the first step (prompt and masks).
        mask_id: the mask token id.
        prompt_length: number of prompt positions at the start of each row (padding included).
        records: one :class:`StepRecord` per step, fill and EOS stop.
    """

    initial: torch.Tensor
    mask_id: int
    prompt_length: int = 0
    records: list[StepRecord] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[StepRecord]:
        return iter(self.records)

    def __getitem__(self, index: int) -> StepRecord:
        return self.records[index]

    def corrections(self) -> torch.Tensor:
        """``[B, L]`` number of times the corrector changed each position."""
        total = torch.zeros(self.initial.shape, dtype=torch.long)
        for record in self.records:
            total += record.corrected.long()
        return total

    def render(
        self,
        decode_fn: Callable[[Sequence[int]], str] | None = None,
        *,
        row: int = 0,
        color: bool = False,
        sep: str | None = None,
        mask_text: str = "_",
        only_changes: bool = False,
    ) -> str:
        """Text view of how row ``row`` evolved, one line per step.

        Newly unmasked tokens are shown as ``[tok]`` (green with ``color``), tokens the corrector
        changed as ``{old>new}`` (yellow), re-masked positions as ``<old>`` (red), masks as
        ``mask_text``; the prompt is dimmed with ``color``.

        Args:
            decode_fn: maps a list of token ids to text (e.g. ``tokenizer.decode``); called with one
                id at a time. ``None`` prints the ids.
            row: which sequence of the batch to show.
            color: use ANSI colours instead of brackets.
            sep: text between tokens; default ``" "`` for ids, ``""`` with ``decode_fn``.
            mask_text: how a mask is shown.
            only_changes: skip steps in which nothing happened to this row.
        """
        if sep is None:
            sep = " " if decode_fn is None else ""

        def text(token: int) -> str:
            if token == self.mask_id:
                return mask_text
            return decode_fn([token]) if decode_fn is not None else str(token)

        lines = []
        previous = self.initial[row].tolist()
        for record in self.records:
            current = record.tokens[row].tolist()
            unmasked = record.unmasked[row].tolist()
            corrected = record.corrected[row].tolist()
            remasked = record.remasked[row].tolist()
            if only_changes and not (any(unmasked) or any(corrected) or any(remasked)):
                previous = current
                continue
            pieces = []
            for pos, token in enumerate(current):
                piece = text(token)
                if remasked[pos]:
                    old = text(previous[pos])
                    piece = f"{_RED}{old}{_RESET}" if color else f"<{old}>"
                elif corrected[pos]:
                    old = text(previous[pos])
                    piece = f"{_YELLOW}{piece}{_RESET}" if color else f"{{{old}>{piece}}}"
                elif unmasked[pos]:
                    piece = f"{_GREEN}{piece}{_RESET}" if color else f"[{piece}]"
                elif color and pos < self.prompt_length:
                    piece = f"{_DIM}{piece}{_RESET}"
                pieces.append(piece)
            mark = "C" if record.corrector_fired else " "
            head = (
                f"{record.kind:>4} {record.step:4d} {mark} t={record.t:.3f} nfe={record.nfe:4d} | "
            )
            lines.append(head + sep.join(pieces))
            previous = current
        return "\n".join(lines)


@dataclass
class CorrectorChanges:
    """Every token the corrector wrote during one sampling run, in order (CPU tensors ``[E]``).

    One entry per (position, corrector firing) whose token changed: ``rows[e]``, ``positions[e]``
    (column in ``tokens``, prompt included), ``old[e]`` -> ``new[e]``. A position changed at two
    firings has two entries; tokens the corrector proposed at still-masked positions are not
    written, so they are not here.
    """

    rows: torch.Tensor
    positions: torch.Tensor
    old: torch.Tensor
    new: torch.Tensor

    @classmethod
    def empty(cls) -> CorrectorChanges:
        none = torch.zeros(0, dtype=torch.long)
        return cls(none, none.clone(), none.clone(), none.clone())

    @classmethod
    def concat(cls, parts: Sequence[tuple[CorrectorChanges, int]]) -> CorrectorChanges:
        """Changes of several runs ``(changes, batch size)`` in order, as of one stacked batch."""
        fields: dict[str, list[torch.Tensor]] = {"rows": [], "positions": [], "old": [], "new": []}
        offset = 0
        for part, size in parts:
            fields["rows"].append(part.rows + offset)
            for name in ("positions", "old", "new"):
                fields[name].append(getattr(part, name))
            offset += size
        if not parts:
            return cls.empty()
        return cls(**{k: torch.cat(v) for k, v in fields.items()})

    def __len__(self) -> int:
        return int(self.rows.numel())

    def counts(
        self,
        reference: torch.Tensor | None = None,
        is_right: Callable[[int, int, int], bool] | None = None,
    ) -> dict[str, int]:
        """``{"changed", "fixed", "broken"}``: writes, wrong -> right and right -> wrong ones.

        Args:
            reference: ``[B, L]`` the right token at every position (negative = unknown: the
                change counts as changed only).
            is_right: instead of ``reference``, ``is_right(row, position, token)`` for answers
                with more than one right token (e.g. any valid sudoku completion).

        Without either, ``fixed`` and ``broken`` are 0.
        """
        changed = len(self)
        if reference is None and is_right is None:
            return {"changed": changed, "fixed": 0, "broken": 0}
        if reference is not None:
            want = reference.cpu()[self.rows, self.positions]
            known = want >= 0
            was = (self.old == want) & known
            now = (self.new == want) & known
            fixed, broken = int((~was & now & known).sum()), int((was & ~now).sum())
            return {"changed": changed, "fixed": fixed, "broken": broken}
        fixed = broken = 0
        for r, p, o, n in zip(
            *(x.tolist() for x in (self.rows, self.positions, self.old, self.new))
        ):
            was, now = is_right(r, p, o), is_right(r, p, n)
            fixed += int(now and not was)
            broken += int(was and not now)
        return {"changed": changed, "fixed": fixed, "broken": broken}


@dataclass
class SampleOutput:
    """Result of :func:`proseco.sample`.

    NFEs are counted per sample: a model call on ``n`` rows adds one evaluation (two when guided)
    to each of those rows, and ``nfe`` is the mean over the batch, i.e. what one sample cost (as on
    the paper's NFE axis). With ``sample(shrink_batch=True)`` (the default) rows leave calls whose
    result cannot change them, so rows differ and the means can be fractional.

    Attributes:
        tokens: ``[B, L]`` final tokens (prompt included, no mask token).
        nfe: model evaluations per sample, mean over the batch (``denoiser_nfe + corrector_nfe``).
        denoiser_nfe: evaluations on partially masked inputs (unmasking steps, final fills), per
            sample (mean).
        corrector_nfe: evaluations inside corrector loops, per sample (mean).
        wall_time: seconds spent in :func:`proseco.sample`.
        prompt_length: ``P``, positions before the generated part (left padding included).
        num_steps: unmasking steps run (fewer than planned when blocks finish early or rows stop).
        num_corrected: ``[B]`` tokens changed by the corrector per row (a position changed twice
            counts twice).
        history: per-step records when ``return_history=True``.
        model_calls: network evaluations, whatever the number of rows in each (the sequential
            cost; equals ``nfe`` when every call covers the whole batch).
        nfe_per_row: ``[B]`` evaluations each row took part in (CPU, int64).
        corrector_nfe_per_row: ``[B]`` corrector evaluations each row took part in.
        corrector_changes: every token the corrector wrote (:class:`CorrectorChanges`); with a
            known answer, ``corrector_changes.counts(reference)`` gives the tokens it fixed
            (wrong -> right) and broke (right -> wrong).
    """

    tokens: torch.Tensor
    nfe: float
    denoiser_nfe: float
    corrector_nfe: float
    wall_time: float
    prompt_length: int = 0
    num_steps: int = 0
    num_corrected: torch.Tensor | None = None
    history: SamplingHistory | None = None
    model_calls: int = 0
    nfe_per_row: torch.Tensor | None = None
    corrector_nfe_per_row: torch.Tensor | None = None
    corrector_changes: CorrectorChanges = field(default_factory=CorrectorChanges.empty)

    @property
    def row_forwards(self) -> int:
        """Rows actually run through the network, over all calls (``nfe_per_row.sum()``)."""
        return int(self.nfe_per_row.sum()) if self.nfe_per_row is not None else 0

    @property
    def corrector_row_forwards(self) -> int:
        """Rows actually run through the network by corrector calls."""
        rows = self.corrector_nfe_per_row
        return int(rows.sum()) if rows is not None else 0

    @property
    def generated(self) -> torch.Tensor:
        """``[B, L - P]`` the generated part of :attr:`tokens`."""
        return self.tokens[:, self.prompt_length :]
