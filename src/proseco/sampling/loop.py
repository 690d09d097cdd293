"""The sampling loop: :func:`sample`, MDLM / LLaDA-style decoding with ProSeCo corrector loops.

One loop serves every strategy (paper, Algorithm 2)::

    for each block, for k in steps_per_block:         # one block unless block_length is set
        logits = model(xt)                             # reused (0 NFE) while xt is unchanged and the
                                                       #   model is not time-conditioned
        if the corrector fires at this step:           # Corrector.fires(step number)
            xt, logits = corrector loop (Algorithm 3)  # only unmasked positions rewritten
        xt = unmasking strategy (logits, xt)           # ancestral | confidence | threshold | remdm
    leftover masks of the block: one more call, filled # so no mask is ever returned

Time-conditioned models get ``timesteps = t`` of the current step, in corrector calls too (as in
training, where both passes share ``t``); their logits are never reused. Exact NFE accounting,
optional per-step history, per-row EOS stop in block mode.

With a window cache (``SamplingConfig.cache`` ``"prefix"`` / ``"dual"``) each block works on a
window of columns, ``[start, L)`` or ``[start, end)``: the block's first model call runs the whole
sequence and keeps the keys and values outside the window, the later ones run the window only
(:class:`~proseco.sampling.caller.ModelCaller`); logits buffers cover the window, and the
corrector rewrites the current block only (earlier blocks are committed, as they are cached).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from tqdm.auto import tqdm

from proseco.errors import ConfigError
from proseco.sampling.caller import ModelCaller
from proseco.sampling.config import SamplingConfig, resolve_config
from proseco.sampling.correctors import Corrector, run_corrector
from proseco.sampling.front import open_run, sample_output
from proseco.sampling.output import CorrectorChanges, SampleOutput, SamplingHistory, StepRecord
from proseco.sampling.plan import Plan, make_plan
from proseco.sampling.processors import LogitsProcessor, exclude_token
from proseco.sampling.unmasking import Reveal, StepInfo, UnmaskingStrategy, draw_at

__all__ = ["sample", "check_sample_args"]


class _Run:
    """Mutable state of one sampling run; :func:`sample` drives it block by block.

    Logits are kept per row: a row's denoiser (and corrector) logits stay valid while its tokens
    do not change, and a model call covers only the rows that need new logits (``shrink``):
    rows with no mask left (whose denoiser logits nothing reads), rows stopped at EOS, rows whose
    tokens have not changed since their logits were computed. Without ``shrink`` every call
    covers the whole batch whenever any row needs it (the earlier behaviour).
    """

    def __init__(
        self,
        plan: Plan,
        caller: ModelCaller,
        strategy: UnmaskingStrategy,
        corrector: Corrector | None,
        processor: LogitsProcessor,
        generator: torch.Generator | None,
        mask_id: int,
        history: SamplingHistory | None,
        shrink: bool = True,
        cache: str = "none",
    ) -> None:
        self.plan, self.caller, self.strategy = plan, caller, strategy
        self.corrector, self.processor, self.generator = corrector, processor, generator
        self.mask_id, self.history, self.shrink = mask_id, history, shrink
        self.xt, self.editable = plan.xt, plan.editable
        batch = self.xt.shape[0]
        self.cache = cache
        self.ws, self.we = 0, self.xt.shape[1]  # columns of the logits buffers (the window)
        device = self.xt.device
        self.frozen = torch.zeros(batch, dtype=torch.bool, device=device)
        self.num_corrected = torch.zeros(batch, dtype=torch.long, device=device)
        self.changes: list[tuple[torch.Tensor, ...]] = []  # (rows, positions, old, new) [E] each
        self.scores = None
        if getattr(strategy, "uses_scores", False):
            self.scores = torch.full(self.xt.shape, float("-inf"), device=device)
        # Strategies that read logits at masked positions only need none for rows without masks.
        self.masked_only = bool(getattr(strategy, "masked_logits_only", False))
        self.reusable = not caller.time_conditioned  # logits depend on xt alone
        self.logits: torch.Tensor | None = None  # [B, L, V] denoiser logits
        self.conditional: torch.Tensor | None = None  # [B, L, V] drafts with in_corrector=False
        self.fresh = torch.zeros(batch, dtype=torch.bool, device=device)  # rows of self.logits
        self.corrector_logits: torch.Tensor | None = None  # [B, L, V] last corrector logits
        self.corrector_fresh = torch.zeros(batch, dtype=torch.bool, device=device)
        # PRISM: quality logits [B, L] from the same calls as self.logits
        self.uses_quality = bool(getattr(strategy, "uses_quality", False))
        self.quality: torch.Tensor | None = None
        self.step_number = 0  # 1-based number of the current step, over the whole run

    def begin_block(self, start: int, end: int) -> None:
        """With a cache: move the window to the block ``[start, end)`` and drop every buffer
        of the previous window (a no-op without a cache)."""
        if self.cache == "none":
            return
        self.ws, self.we = self.caller.begin_block(start, end, self.xt.shape[1])
        self.logits = self.conditional = self.corrector_logits = self.quality = None
        self.invalidate()

    def has_mask(self) -> torch.Tensor:
        """``[B]`` rows with a mask in the window (everywhere without a cache)."""
        if self.cache == "none":
            return (self.xt == self.mask_id).any(dim=1)
        return (self.xt[:, self.ws : self.we] == self.mask_id).any(dim=1)

    def invalidate(self, rows: torch.Tensor | None = None) -> None:
        """Forget reusable logits of ``rows`` ``[B]`` bool (all rows for ``None``)."""
        if rows is None:
            self.fresh.zero_()
            self.corrector_fresh.zero_()
        else:
            self.fresh &= ~rows
            self.corrector_fresh &= ~rows

    def _rows(self, need: torch.Tensor) -> tuple[bool, torch.Tensor | None]:
        """``(any row to compute, their indices or None for every row)`` for ``need`` ``[B]``."""
        if not bool(need.any()):
            return False, None
        if not self.shrink or bool(need.all()):
            return True, None
        return True, need.nonzero(as_tuple=True)[0]

    def denoiser_logits(self, t: float, need: torch.Tensor) -> torch.Tensor:
        """``[B, L, V]`` denoiser logits, computed where ``need`` ``[B]`` and not fresh."""
        if not self.shrink:
            need = torch.ones_like(need)
        todo, rows = self._rows(need & ~self.fresh)
        if not todo:
            return self.logits
        if rows is None:
            self.logits = self.caller.denoise(self.xt, t)
            self.conditional = self.caller.last_conditional
            self._keep_quality(None)
            self.fresh.fill_(self.reusable)
            return self.logits
        logits = self.caller.denoise(self.xt[rows], t, rows)
        self._keep_quality(rows)
        self.logits = _scatter(self.logits, rows, logits, self.xt.shape[0], self.mask_id)
        if self.caller.last_conditional is not None:
            self.conditional = _scatter(
                self.conditional, rows, self.caller.last_conditional, self.xt.shape[0],
                self.mask_id,
            )  # fmt: skip
        if self.reusable:
            self.fresh[rows] = True
        return self.logits

    def _keep_quality(self, rows: torch.Tensor | None) -> None:
        """Store the last denoiser call's quality logits (for ``rows``, or all) if asked for."""
        if not self.uses_quality:
            return
        quality = self.caller.last_quality
        if quality is None:
            raise ConfigError(
                "the unmasking strategy reads quality scores (PRISM) but the model returned no "
                "quality_logits; sample a model fine-tuned with loss.objective: prism"
            )
        if rows is None:
            self.quality = quality.float()
            return
        if self.quality is None:
            shape = (self.xt.shape[0], quality.shape[1])
            self.quality = quality.new_zeros(shape, dtype=torch.float32)
        self.quality[rows] = quality.float()

    def correct(
        self, region: torch.Tensor, t: float, has_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the corrector; returns its logits ``[B, L, V]`` and the positions it changed."""
        corrector = self.corrector
        cacheable = corrector.deterministic and self.reusable
        run = region.any(dim=1)  # rows stopped at EOS have nothing to correct
        if cacheable:  # same xt, same region, deterministic corrector: same result
            run &= ~self.corrector_fresh
        if not self.shrink:
            run = torch.ones_like(run) if bool(run.any()) else run
        todo, rows = self._rows(run)
        if not todo:
            return self.corrector_logits, None
        logits = self.denoiser_logits(t, run & has_mask)  # drafts read masked positions only
        if self.caller.drafts_from_conditional and self.conditional is not None:
            logits = self.conditional
        ws, we = self.ws, self.we
        windowed = self.cache != "none"
        current = self.xt[:, ws:we] if windowed else self.xt
        if windowed:
            region = region[:, ws:we]
        if rows is None:
            xt, draft, reg = current, logits, region
        else:
            xt, draft, reg = current[rows], logits[rows], region[rows]

        def whole(y: torch.Tensor, batch_rows: torch.Tensor | None) -> torch.Tensor:
            """The draft ``y`` of the window inside the rows' whole sequences."""
            if not windowed:
                return y
            full = (self.xt if batch_rows is None else self.xt[batch_rows]).clone()
            full[:, ws:we] = y
            return full

        def call(y: torch.Tensor, sub: torch.Tensor | None = None) -> torch.Tensor:
            if sub is None:
                return self.caller.correct(whole(y, rows), t, rows)
            batch_rows = sub if rows is None else rows[sub]
            return self.caller.correct(whole(y, batch_rows), t, batch_rows)

        result = run_corrector(
            corrector,
            call,
            xt,
            draft,
            reg,
            mask_id=self.mask_id,
            processor=self.processor,
            generator=self.generator,
            per_row=self.shrink,
        )
        if rows is None:
            if windowed:
                self.xt[:, ws:we] = result.xt
            else:
                self.xt = result.xt
            self.corrector_logits = result.logits
            changed = result.changed
            self.corrector_fresh.fill_(cacheable)
        else:
            if windowed:
                self.xt[rows, ws:we] = result.xt
            else:
                self.xt[rows] = result.xt
            self.corrector_logits = _scatter(
                self.corrector_logits, rows, result.logits, self.xt.shape[0], self.mask_id
            )
            changed = torch.zeros_like(region)
            changed[rows] = result.changed
            if cacheable:
                self.corrector_fresh[rows] = True
        if windowed:  # positions of the whole sequence
            whole_changed = torch.zeros_like(self.xt, dtype=torch.bool)
            whole_changed[:, ws:we] = changed
            changed = whole_changed
        return self.corrector_logits, changed

    def step(self, block: int, start: int, end: int, k: int, region: torch.Tensor) -> None:
        """One unmasking step ``k`` of the block ``[start, end)``."""
        self.step_number += 1
        plan = self.plan
        t, s = plan.times[k], plan.times[k + 1]
        if not self.reusable:
            self.invalidate()  # a new time: no logits carry over
        has_mask = self.has_mask()  # [B]
        fired = self.corrector is not None and self.corrector.fires(self.step_number)
        corrected = None
        if fired:
            before = self.xt.clone()
            logits, corrected = self.correct(region, t, has_mask)
            if corrected is not None:
                self.keep_changes(before, corrected)
        else:
            logits = self.denoiser_logits(t, has_mask if self.masked_only else ~self.frozen)
        info = StepInfo(
            index=k,
            num_steps=plan.steps_per_block,
            t=t,
            s=s,
            alpha_t=plan.alphas[k],
            alpha_s=plan.alphas[k + 1],
            active=self.editable[:, start:end],
            mask_id=self.mask_id,
            processor=self.processor,
            generator=self.generator,
            scores=None if self.scores is None else self.scores[:, start:end],
            quality=self.quality[:, start - self.ws : end - self.ws] if self.uses_quality else None,
        )
        here = logits[:, start - self.ws : end - self.ws]
        reveal = self.strategy(here, self.xt[:, start:end], info)
        changed = self.apply(reveal, start, end)
        if corrected is not None:
            rows = corrected.any(dim=1)
            if bool(rows.any()):
                self.num_corrected += corrected.sum(dim=1)
                changed |= rows
        if bool(changed.any()):
            self.invalidate(changed)
        self.record("step", block, t, reveal, start, end, corrected, fired)

    def polish(self, block: int, start: int, end: int, region: torch.Tensor) -> None:
        """``Corrector.final_steps``: one more corrector loop over the finished block's ``region``."""
        saved = self.corrector
        self.corrector = replace(saved, steps=saved.final_steps)
        t = self.plan.times[-1]
        if not self.reusable:
            self.invalidate()
        has_mask = self.has_mask()
        before = self.xt.clone()
        try:
            _, corrected = self.correct(region, t, has_mask)
        finally:
            self.corrector = saved
        if corrected is None:
            return
        self.keep_changes(before, corrected)
        rows = corrected.any(dim=1)
        self.num_corrected += corrected.sum(dim=1)
        self.invalidate(rows)
        none = torch.zeros(0, dtype=torch.long, device=self.xt.device)
        reveal = Reveal(none, none, none, none.float())
        self.record("polish", block, t, reveal, start, end, corrected, True)

    def keep_changes(self, before: torch.Tensor, corrected: torch.Tensor) -> None:
        """Log the corrector's writes: ``before`` ``[B, L]`` tokens, ``corrected`` ``[B, L]``."""
        rows, cols = corrected.nonzero(as_tuple=True)
        if rows.numel():
            old, new = before[rows, cols], self.xt[rows, cols]
            self.changes.append(tuple(x.cpu() for x in (rows, cols, old, new)))

    def corrector_changes(self) -> CorrectorChanges:
        """Everything :meth:`keep_changes` logged, as one :class:`CorrectorChanges`."""
        if not self.changes:
            return CorrectorChanges.empty()
        return CorrectorChanges(*(torch.cat(part) for part in zip(*self.changes)))

    def apply(self, reveal: Reveal, start: int, end: int) -> torch.Tensor:
        """Write a :class:`Reveal` into ``xt[:, start:end]``; returns the rows changed ``[B]``."""
        region = self.xt[:, start:end]  # a view: writes go to xt
        changed = torch.zeros(self.xt.shape[0], dtype=torch.bool, device=self.xt.device)
        if reveal.count > 0:
            region[reveal.rows, reveal.cols] = reveal.tokens
            changed[reveal.rows] = True
        if reveal.remask is not None and bool(reveal.remask.any()):
            region.masked_fill_(reveal.remask, self.mask_id)
            changed |= reveal.remask.any(dim=1)
        if reveal.scores is not None:
            self.scores[:, start:end] = reveal.scores
        return changed

    def fill(self, block: int, start: int, end: int) -> None:
        """Fill masks left in ``[start, end)`` after the block's steps (one more call at most)."""
        left = self.editable[:, start:end] & (self.xt[:, start:end] == self.mask_id)
        rows = left.any(dim=1)
        if not bool(rows.any()):
            return
        t = self.plan.times[-1]
        if not self.reusable:
            self.invalidate()
        logits = self.denoiser_logits(t, rows)
        greedy = getattr(self.strategy, "final_fill", "sample") == "argmax"
        reveal = draw_at(
            logits[:, start - self.ws : end - self.ws], left, self.processor, self.generator, greedy
        )
        self.apply(reveal, start, end)
        self.invalidate(rows)
        self.record("fill", block, t, reveal, start, end, None, False)

    def stop_rows(self, rows: torch.Tensor | None, end: int, fill_id: int) -> None:
        """Freeze ``rows`` ``[B]`` bool after a block on the caller's request (``on_block``):
        no later model call includes them; their positions after ``end`` become ``fill_id``."""
        if rows is None:
            return
        rows = torch.as_tensor(rows, dtype=torch.bool, device=self.frozen.device) & ~self.frozen
        if not bool(rows.any()):
            return
        self.xt[rows, end:] = fill_id
        self.editable[rows] = False
        self.frozen |= rows
        self.invalidate(rows)

    def stop_rows_at_eos(self, block: int, end: int, eos_id: int) -> None:
        """Freeze rows whose block ended with EOS; their later positions become EOS."""
        if end >= self.xt.shape[1]:
            return
        ended = ~self.frozen & (self.xt[:, end - 1] == eos_id)
        if not bool(ended.any()):
            return
        rows = ended.nonzero(as_tuple=True)[0]
        before = self.xt.clone() if self.history is not None else None
        self.xt[rows, end:] = eos_id
        self.editable[rows] = False
        self.frozen |= ended
        self.invalidate(ended)
        if self.history is not None:
            filled = (self.xt != before).cpu()
            self._append("eos", block, self.plan.times[-1], filled, None, None, False)

    def record(
        self,
        kind: str,
        block: int,
        t: float,
        reveal: Reveal,
        start: int,
        end: int,
        corrected: torch.Tensor | None,
        fired: bool,
    ) -> None:
        if self.history is None:
            return
        unmasked = torch.zeros(self.xt.shape, dtype=torch.bool)
        unmasked[reveal.rows.cpu(), reveal.cols.cpu() + start] = True
        remasked = None
        if reveal.remask is not None:
            remasked = torch.zeros(self.xt.shape, dtype=torch.bool)
            remasked[:, start:end] = reveal.remask.cpu()
        self._append(kind, block, t, unmasked, corrected, remasked, fired)

    def _append(self, kind, block, t, unmasked, corrected, remasked, fired) -> None:
        empty = torch.zeros(self.xt.shape, dtype=torch.bool)
        self.history.records.append(
            StepRecord(
                step=self.step_number,
                block=block,
                t=float(t),
                kind=kind,
                tokens=self.xt.cpu().clone(),
                unmasked=unmasked,
                corrected=empty if corrected is None else corrected.cpu(),
                remasked=empty if remasked is None else remasked,
                corrector_fired=fired,
                nfe=self.caller.nfe,
            )
        )


def _scatter(
    buffer: torch.Tensor | None, rows: torch.Tensor, values: torch.Tensor, batch: int, mask_id: int
) -> torch.Tensor:
    """Write ``values`` ``[n, L, V]`` into ``buffer[rows]`` (a new ``[B, L, V]`` buffer if None).

    Rows of a new buffer that were never computed hold zeros (mask column ``-inf``); nothing reads
    them (they belong to rows without masks or stopped rows).
    """
    if buffer is None:
        buffer = values.new_zeros((batch, *values.shape[1:]))
        exclude_token(buffer, mask_id)
    buffer[rows] = values
    return buffer


def _check_quality(model: Any, config: SamplingConfig) -> None:
    """A strategy that reads quality scores (PRISM) needs a model with a quality head, and no
    corrector (its rewrites would make the scores of the step's model call stale)."""
    from proseco.models.protocol import has_quality_head

    strategy = config.unmasking
    if not getattr(strategy, "uses_quality", False):
        return
    name = type(strategy).__name__
    if config.corrector is not None:
        raise ConfigError(
            f"unmasking {name} remasks by quality scores of the step's denoiser call, which a "
            "corrector's rewrites would make stale; sample PRISM without a corrector"
        )
    if not has_quality_head(model):
        raise ConfigError(
            f"unmasking {name} remasks by the scores of a PRISM quality head, and this model has "
            "none (config.quality_head is false); fine-tune it first with loss.objective: prism "
            "(e.g. `proseco train qm9-prism-cpu`) or choose another unmasking strategy"
        )


def _check_cache(model: Any, config: SamplingConfig) -> None:
    """``cache`` other than ``"none"`` needs a model with the window cache."""
    from proseco.models.protocol import supports_window_cache

    if config.cache != "none" and not supports_window_cache(model):
        raise ConfigError(
            f"cache={config.cache!r} needs a model that takes past_key_values (the window cache "
            f"of proseco.models.kv_cache, as the bundled DiT does) and {type(model).__name__} "
            "does not; sample it with cache='none' (--cache none)"
        )


def _setup(
    model: Any,
    config: SamplingConfig | None,
    mask_id: int | None,
    batch_size: int | None,
    length: int | None,
    prompt: Any,
    prompt_attention_mask: torch.Tensor | None,
    generator: torch.Generator | None,
    overrides: dict[str, Any],
) -> tuple[SamplingConfig, int, Plan, ModelCaller]:
    """Validate every argument of :func:`sample` and lay out the run (no model call)."""
    config = resolve_config(config, overrides)
    _check_quality(model, config)
    _check_cache(model, config)
    run = open_run(
        model, config, mask_id=mask_id, batch_size=batch_size, length=length, prompt=prompt,
        prompt_attention_mask=prompt_attention_mask, generator=generator,
    )  # fmt: skip
    mask_id = run.ids.mask
    plan = make_plan(
        run.prompt, run.prompt_mask, mask_id=mask_id, length=run.length,
        steps=config.steps if config.steps is not None else run.length,
        block_length=config.block_length, schedule=config.schedule_object(), eps=config.eps,
    )  # fmt: skip
    caller = run.caller(model, attention_mask=plan.attention_mask, cache=config.cache)
    return config, mask_id, plan, caller


def check_sample_args(
    model: Any,
    config: SamplingConfig | None = None,
    *,
    mask_id: int | None = None,
    batch_size: int | None = None,
    length: int | None = None,
    prompt: Any = None,
    prompt_attention_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    **overrides: Any,
) -> None:
    """Raise the error :func:`sample` would raise for these arguments, without calling the model.

    Commands call it before they open output files, so that bad settings never touch them.
    """
    _setup(
        model, config, mask_id, batch_size, length, prompt, prompt_attention_mask, generator,
        overrides,
    )  # fmt: skip


@torch.no_grad()
def sample(
    model: Any,
    config: SamplingConfig | None = None,
    *,
    mask_id: int | None = None,
    batch_size: int | None = None,
    length: int | None = None,
    prompt: Any = None,
    prompt_attention_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    return_history: bool = False,
    progress: bool = False,
    shrink_batch: bool = True,
    on_block: Callable[..., Any] | None = None,
    **overrides: Any,
) -> SampleOutput:
    """Generate with a masked diffusion model, optionally with ProSeCo corrector loops.

    Every decoding setting lives in :class:`~proseco.SamplingConfig`; keyword ``overrides`` replace
    fields of ``config`` (so ``sample(model, steps=8, corrector=Corrector(2))`` works without one).

    Args:
        model: any model following :mod:`proseco.models.protocol` (put it in eval mode first).
        config: decoding settings (default ``SamplingConfig()``: MDLM, one step per token).
        mask_id: the mask token id (default ``model.config.mask_token_id``).
        batch_size: ``B`` without a prompt (default 1); with one prompt, repeats it ``B`` times.
        length: tokens to generate after the prompt (default: the model's maximum length minus
            the prompt).
        prompt: ``[B, P]`` / ``[P]`` token ids, or a list of id lists of different lengths (left-
            padded with ``config.pad_id``). Never changed.
        prompt_attention_mask: ``[B, P]`` 1 = token, 0 = left padding, for a padded prompt tensor.
        generator: ``torch.Generator`` for every random draw (same seed, same tokens).
        return_history: record every step in ``SampleOutput.history``.
        progress: show a tqdm progress bar over steps.
        shrink_batch: send each model call only the rows whose logits can still matter: a row
            leaves a corrector loop once its draft is a fixed point (deterministic updates),
            rows without masks get no denoiser call, rows stopped at EOS none at all, and
            logits of unchanged rows are reused. The tokens are the same either way (for models
            whose output for a row does not depend on the other rows); ``False`` sends the
            whole batch to every call (the earlier behaviour, for comparisons).
        on_block: called after each block (its fill and EOS stops) as
            ``on_block(block_index, end, tokens, history)``: ``end`` the block's last column + 1,
            ``tokens`` ``[B, P + length]`` the current tokens (read only), ``history`` the
            :class:`SamplingHistory` so far or ``None``. For streaming (``proseco generate``,
            ``proseco serve``). It may return ``[B]`` bool rows to stop (e.g. their client left):
            no later model call includes them and their later positions become EOS (else
            ``pad_id``, else 0).
        **overrides: fields of :class:`~proseco.SamplingConfig` (``steps``, ``corrector``,
            ``unmasking``, ``guidance``, ``temperature``, ``top_p``, ``block_length`` ...).

    Returns:
        :class:`~proseco.SampleOutput` with ``tokens`` ``[B, P + length]`` (no mask left) and exact
        NFE counts: per sample (means and ``nfe_per_row``) and per call (``model_calls``).

    Raises:
        proseco.errors.ConfigError: (a ``ValueError``) on invalid settings, naming the setting
            and the fix.
    """
    started = time.perf_counter()
    config, mask_id, plan, caller = _setup(
        model, config, mask_id, batch_size, length, prompt, prompt_attention_mask, generator,
        overrides,
    )  # fmt: skip
    history = None
    if return_history:
        history = SamplingHistory(plan.xt.cpu().clone(), mask_id, plan.prompt_length)
    strategy = config.unmasking
    run = _Run(
        plan, caller, strategy, config.corrector, config.processor(), generator, mask_id, history,
        shrink=shrink_batch, cache=config.cache,
    )  # fmt: skip
    total_steps = plan.steps_per_block * len(plan.blocks)
    bar = tqdm(total=total_steps, disable=not progress, desc="sampling", leave=False)
    for b, (start, end) in enumerate(plan.blocks):
        run.begin_block(start, end)
        region = run.editable.clone()
        region[:, end:] = False
        if config.cache != "none":
            region[:, :start] = False  # earlier blocks are committed (and cached)
        run.corrector_fresh.zero_()  # the corrector's region changed
        for k in range(plan.steps_per_block):
            run.step(b, start, end, k, region)
            bar.update(1)
            if strategy.stop_when_done and not bool(
                (run.editable[:, start:end] & (run.xt[:, start:end] == mask_id)).any()
            ):
                break
        run.fill(b, start, end)
        if config.corrector is not None and config.corrector.final_steps:
            run.polish(b, start, end, region)
        if config.stops_at_eos(False):
            run.stop_rows_at_eos(b, end, config.eos_id)
            if bool(run.frozen.all()):
                break
        if on_block is not None:
            fill_id = next((i for i in (config.eos_id, config.pad_id) if i is not None), 0)
            run.stop_rows(on_block(b, end, run.xt, history), end, fill_id)
            if bool(run.frozen.all()):
                break
    bar.close()
    return sample_output(
        caller, run.xt, started=started, prompt_length=plan.prompt_length,
        num_steps=run.step_number, num_corrected=run.num_corrected,
        corrector_changes=run.corrector_changes(), history=history,
    )  # fmt: skip
