"""The sampling loop: :func:`sample`, MDLM / LLaDA-style decoding with ProSeCo corrector loops.

One loop serves every strategy (paper, Algorithm 2)::

    for each block, for k in steps_per_block:         # one block unless block_length is set
        logits = model(xt)                             # reused (0 NFE) while xt is unchanged and the
                                                       #   model is not time-conditioned
        if the corrector fires at this step:           # Corrector.fires(step number)
            xt, logits = corrector loop (Algorithm 3)  # only unmasked positions rewritten
        xt = unmasking strategy (logits, xt)           # ancestral | confidence | threshold | ReMDM
    leftover masks of the block: one more call, filled # so no mask is ever returned

Time-conditioned models get ``timesteps = t`` of the current step, in corrector calls too (as in
training, where both passes share ``t``); their logits are never reused. Exact NFE accounting,
optional per-step history, per-row EOS stop in block mode.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from tqdm.auto import tqdm

from proseco.sampling.correctors import Corrector, run_corrector
from proseco.sampling.guidance import Guidance, ModelCaller
from proseco.sampling.inputs import Plan, model_device, prepare
from proseco.sampling.output import SampleOutput, SamplingHistory, StepRecord
from proseco.sampling.processors import LogitsProcessor
from proseco.sampling.remasking import ReMDM
from proseco.sampling.unmasking import (
    Ancestral,
    Reveal,
    StepInfo,
    UnmaskingStrategy,
    draw_at,
    get_unmasking,
)
from proseco.schedules import Schedule, get_schedule

__all__ = ["sample"]


class _Run:
    """Mutable state of one sampling run; :func:`sample` drives it block by block."""

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
    ) -> None:
        self.plan, self.caller, self.strategy = plan, caller, strategy
        self.corrector, self.processor, self.generator = corrector, processor, generator
        self.mask_id, self.history = mask_id, history
        self.xt, self.editable = plan.xt, plan.editable
        batch = self.xt.shape[0]
        self.frozen = torch.zeros(batch, dtype=torch.bool, device=self.xt.device)
        self.num_corrected = torch.zeros(batch, dtype=torch.long, device=self.xt.device)
        self.scores = None
        if getattr(strategy, "uses_scores", False):
            self.scores = torch.full(self.xt.shape, float("-inf"), device=self.xt.device)
        self.cache: torch.Tensor | None = None  # denoiser logits of the current xt
        self.corrector_cache: torch.Tensor | None = None  # last corrector logits for this xt
        self.step_number = 0  # 1-based number of the current step, over the whole run

    def invalidate(self) -> None:
        """Forget reusable logits (``xt`` changed)."""
        self.cache = None
        self.corrector_cache = None

    def denoiser_logits(self, t: float) -> torch.Tensor:
        if self.cache is not None:
            return self.cache
        logits = self.caller.denoise(self.xt, t)
        if not self.caller.time_conditioned:
            self.cache = logits
        return logits

    def correct(
        self, logits: torch.Tensor, region: torch.Tensor, t: float
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the corrector; returns its logits and the ``[B, L]`` positions it changed."""
        if self.corrector_cache is not None:  # same xt, deterministic corrector: same result
            return self.corrector_cache, None
        result = run_corrector(
            self.corrector,
            lambda y: self.caller.correct(y, t),
            self.xt,
            self.caller.draft_logits(logits),
            region,
            mask_id=self.mask_id,
            processor=self.processor,
            generator=self.generator,
        )
        self.xt = result.xt
        if self.corrector.deterministic and not self.caller.time_conditioned:
            self.corrector_cache = result.logits
        return result.logits, result.changed

    def step(self, block: int, start: int, end: int, k: int, region: torch.Tensor) -> None:
        """One unmasking step ``k`` of the block ``[start, end)``."""
        self.step_number += 1
        plan = self.plan
        t, s = plan.times[k], plan.times[k + 1]
        logits = self.denoiser_logits(t)
        fired = self.corrector is not None and self.corrector.fires(self.step_number)
        corrected = None
        if fired:
            logits, corrected = self.correct(logits, region, t)
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
        )
        reveal = self.strategy(logits[:, start:end], self.xt[:, start:end], info)
        changed = self.apply(reveal, start, end)
        if corrected is not None and bool(corrected.any()):
            self.num_corrected += corrected.sum(dim=1)
            changed = True
        if changed:
            self.invalidate()
        self.record("step", block, t, reveal, start, end, corrected, fired)

    def apply(self, reveal: Reveal, start: int, end: int) -> bool:
        """Write a :class:`Reveal` into ``xt[:, start:end]``; returns whether anything changed."""
        region = self.xt[:, start:end]  # a view: writes go to xt
        changed = reveal.count > 0
        if changed:
            region[reveal.rows, reveal.cols] = reveal.tokens
        if reveal.remask is not None and bool(reveal.remask.any()):
            region.masked_fill_(reveal.remask, self.mask_id)
            changed = True
        if reveal.scores is not None:
            self.scores[:, start:end] = reveal.scores
        return changed

    def fill(self, block: int, start: int, end: int) -> None:
        """Fill masks left in ``[start, end)`` after the block's steps (one more call at most)."""
        left = self.editable[:, start:end] & (self.xt[:, start:end] == self.mask_id)
        if not bool(left.any()):
            return
        t = self.plan.times[-1]
        logits = self.denoiser_logits(t)
        greedy = getattr(self.strategy, "final_fill", "sample") == "argmax"
        reveal = draw_at(logits[:, start:end], left, self.processor, self.generator, greedy)
        self.apply(reveal, start, end)
        self.invalidate()
        self.record("fill", block, t, reveal, start, end, None, False)

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
        self.invalidate()
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


def _resolve_strategy(unmasking: Any, remasking: ReMDM | None) -> UnmaskingStrategy:
    strategy = get_unmasking(unmasking)
    if remasking is None:
        return strategy
    if not isinstance(remasking, ReMDM):
        raise ValueError(f"remasking must be a proseco.ReMDM, got {type(remasking).__name__}")
    if not isinstance(strategy, Ancestral):
        raise ValueError(
            "ReMDM remasking runs on the ancestral (MDLM) posterior; use unmasking='ancestral' "
            "with remasking=ReMDM(...)"
        )
    return remasking


@torch.no_grad()
def sample(
    model: Any,
    *,
    mask_id: int,
    batch_size: int | None = None,
    length: int,
    steps: int,
    corrector: Corrector | None = None,
    prompt: Any = None,
    prompt_attention_mask: torch.Tensor | None = None,
    block_length: int | None = None,
    unmasking: str | UnmaskingStrategy = "ancestral",
    guidance: Guidance | None = None,
    remasking: ReMDM | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    float64: bool = False,
    schedule: Schedule | str | None = None,
    eps: float = 1e-5,
    eos_id: int | None = None,
    stop_at_eos: bool = False,
    pad_id: int | None = None,
    conditioning: dict[str, Any] | None = None,
    return_history: bool = False,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> SampleOutput:
    """Generate with a masked diffusion model, optionally with ProSeCo corrector loops.

    Args:
        model: any model following :mod:`proseco.models.protocol` (put it in eval mode first).
        mask_id: the mask token id.
        batch_size: ``B`` without a prompt (default 1); with one prompt, repeats it ``B`` times.
        length: tokens to generate (after the prompt).
        steps: unmasking steps ``T`` in total (split evenly across blocks).
        corrector: :class:`~proseco.Corrector` settings; ``None`` (or ``steps=0``) is plain MDLM.
            It fires at 1-based step ``n`` iff ``n % every == 0 and n >= start``, counting steps
            over the whole run.
        prompt: ``[B, P]`` / ``[P]`` token ids, or a list of id lists of different lengths (left-
            padded with ``pad_id``). Never changed.
        prompt_attention_mask: ``[B, P]`` 1 = token, 0 = left padding, for a padded prompt tensor.
        block_length: semi-autoregressive blocks (LLaDA); must divide ``length``. The corrector
            then rewrites every generated token up to the end of the current block, with later
            blocks' masks filled by draft argmax tokens as context.
        unmasking: ``"ancestral"`` (MDLM), ``"confidence"`` (LLaDA top-k), ``"threshold"``
            (Fast-dLLM) or a strategy object (:mod:`proseco.sampling.unmasking`).
        guidance: :class:`~proseco.Guidance` for classifier-free guidance (2 NFEs per guided call).
        remasking: :class:`~proseco.ReMDM` to remask decoded tokens (ancestral unmasking only).
        temperature: softmax temperature (``0`` = greedy).
        top_p: nucleus mass (``1`` = off), applied once per distribution.
        top_k: keep the ``top_k`` most likely tokens (``0`` = off).
        float64: float64 softmax and Gumbel noise.
        schedule: noise schedule (object or name); default log-linear.
        eps: last time of the grid ``t_k = linspace(1, eps, steps_per_block + 1)``.
        eos_id: end-of-sequence id (for ``stop_at_eos``; also the default ``pad_id``).
        stop_at_eos: in block mode, a row whose block ends with ``eos_id`` stops: its remaining
            positions become ``eos_id`` and it is never edited again; sampling ends when all rows
            have stopped.
        pad_id: id used to left-pad list prompts (default ``eos_id``, else 0).
        conditioning: extra keyword arguments for every model call (e.g. ``class_labels``).
        return_history: record every step in ``SampleOutput.history``.
        generator: ``torch.Generator`` for every random draw (same seed, same tokens).
        progress: show a tqdm progress bar over steps.

    Returns:
        :class:`~proseco.SampleOutput` with ``tokens`` ``[B, P + length]`` (no mask left) and exact
        NFE counts.

    Raises:
        ValueError: on invalid settings (``steps < 1``, a block length that does not divide
            ``length``, a sequence longer than the model accepts, guidance without a null label...).
    """
    started = time.perf_counter()
    processor = LogitsProcessor(temperature, top_k, top_p, float64)
    strategy = _resolve_strategy(unmasking, remasking)
    if corrector is not None and not isinstance(corrector, Corrector):
        raise ValueError(f"corrector must be a proseco.Corrector, got {type(corrector).__name__}")
    if stop_at_eos and eos_id is None:
        raise ValueError("stop_at_eos=True needs eos_id")
    if conditioning is not None and not isinstance(conditioning, dict):
        raise ValueError("conditioning must be a dict of extra model keyword arguments")
    device = model_device(model, generator.device if generator is not None else None)
    if generator is not None and generator.device.type != device.type:
        raise ValueError(
            f"the generator is on {generator.device} but the model is on {device}; create it with "
            f"torch.Generator(device={str(device)!r})"
        )
    plan = prepare(
        model,
        mask_id=mask_id,
        batch_size=batch_size,
        length=length,
        steps=steps,
        prompt=prompt,
        prompt_attention_mask=prompt_attention_mask,
        block_length=block_length,
        schedule=get_schedule(schedule),
        eps=eps,
        pad_id=pad_id,
        eos_id=eos_id,
        device=device,
    )
    caller = ModelCaller(
        model,
        mask_id=mask_id,
        batch_size=plan.xt.shape[0],
        device=device,
        conditioning=conditioning,
        attention_mask=plan.attention_mask,
        guidance=guidance,
    )
    history = None
    if return_history:
        history = SamplingHistory(plan.xt.cpu().clone(), mask_id, plan.prompt_length)
    run = _Run(plan, caller, strategy, corrector, processor, generator, mask_id, history)
    total_steps = plan.steps_per_block * len(plan.blocks)
    bar = tqdm(total=total_steps, disable=not progress, desc="sampling", leave=False)
    for b, (start, end) in enumerate(plan.blocks):
        region = run.editable.clone()
        region[:, end:] = False
        run.corrector_cache = None  # the corrector's region changed
        for k in range(plan.steps_per_block):
            run.step(b, start, end, k, region)
            bar.update(1)
            if strategy.stop_when_done and not bool(
                (run.editable[:, start:end] & (run.xt[:, start:end] == mask_id)).any()
            ):
                break
        run.fill(b, start, end)
        if stop_at_eos:
            run.stop_rows_at_eos(b, end, eos_id)
            if bool(run.frozen.all()):
                break
    bar.close()
    if run.xt.is_cuda:
        torch.cuda.synchronize(run.xt.device)
    return SampleOutput(
        tokens=run.xt,
        nfe=caller.nfe,
        denoiser_nfe=caller.denoiser_nfe,
        corrector_nfe=caller.corrector_nfe,
        wall_time=time.perf_counter() - started,
        prompt_length=plan.prompt_length,
        num_steps=run.step_number,
        num_corrected=run.num_corrected,
        history=history,
    )
