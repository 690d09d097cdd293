"""The samplers' front door: what :func:`proseco.sample`, :func:`sample_autoregressive` and
:func:`sample_uniform` share before and after their loops.

Each sampler resolves its settings (:func:`~proseco.sampling.config.resolve_config`), checks
what only it cares about, then calls :func:`open_run`, which in one order for all three

1. finds the device (the model's, else the generator's) and checks the generator;
2. resolves the special ids with :func:`proseco.special_tokens.resolve_special_ids` (explicit
   ``mask_id`` / ``bos_id`` and ``SamplingConfig.eos_id`` / ``pad_id`` first, then the model
   config) and checks the mask id against the vocabulary;
3. sets the length (default: the model's maximum minus the prompt) and lays out the prompt
   (:func:`proseco.sampling.inputs.layout_prompt`: left padding, batch size, vocabulary);
4. refuses a prompt plus length past the model's maximum.

Its :class:`RunInputs` builds the run's :class:`~proseco.sampling.caller.ModelCaller`; after the
loop, :func:`sample_output` turns the caller's counts into the :class:`~proseco.SampleOutput`
(NFEs per sample and per row, model calls, wall time), the same way for every sampler.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from proseco.errors import ConfigError
from proseco.models.protocol import model_max_length, model_vocab_size
from proseco.sampling.caller import ModelCaller
from proseco.sampling.config import SamplingConfig
from proseco.sampling.inputs import (
    check_fits,
    check_generator,
    check_positive_int,
    default_length,
    layout_prompt,
    model_device,
    prompt_length_of,
)
from proseco.sampling.output import CorrectorChanges, SampleOutput, SamplingHistory
from proseco.special_tokens import SpecialIds, resolve_special_ids

__all__ = ["RunInputs", "open_run", "sample_output"]


@dataclass
class RunInputs:
    """A checked sampler call, before its loop.

    Attributes:
        config: the decoding settings (keyword overrides applied).
        device: where the tokens live.
        ids: the special ids (``mask`` is ``None`` only for samplers that need none).
        pad_id: the id written before shorter prompts (``config.pad_id``, else
            :meth:`~proseco.special_tokens.SpecialIds.padding`).
        prompt: ``[B, P]`` the laid-out prompts.
        prompt_mask: ``[B, P]`` 1 = token, 0 = left padding, or ``None`` when nothing is padded.
        length: tokens to generate after the prompt.
        vocab: the model's vocabulary size, or ``None``.
    """

    config: SamplingConfig
    device: torch.device
    ids: SpecialIds
    pad_id: int
    prompt: torch.Tensor
    prompt_mask: torch.Tensor | None
    length: int
    vocab: int | None

    @property
    def batch(self) -> int:
        """``B``."""
        return int(self.prompt.shape[0])

    @property
    def prompt_length(self) -> int:
        """``P``."""
        return int(self.prompt.shape[1])

    def attention_mask(self) -> torch.Tensor | None:
        """``[B, P + length]`` padding mask of the whole sequence, or ``None`` without padding."""
        if self.prompt_mask is None:
            return None
        ones = self.prompt_mask.new_ones(self.batch, self.length)
        return torch.cat([self.prompt_mask, ones], dim=1)

    def caller(
        self, model: Any, *, attention_mask: torch.Tensor | None = None, cache: str = "none"
    ) -> ModelCaller:
        """The run's :class:`~proseco.sampling.caller.ModelCaller` (the config's conditioning and
        guidance; a run without a mask id removes no column)."""
        return ModelCaller(
            model,
            mask_id=-1 if self.ids.mask is None else self.ids.mask,
            batch_size=self.batch,
            device=self.device,
            conditioning=self.config.conditioning,
            attention_mask=attention_mask,
            guidance=self.config.guidance,
            cache=cache,
        )


def _check_mask(mask_id: Any, vocab: int | None, required: bool) -> None:
    if mask_id is None:
        if required:
            raise ConfigError(
                "no mask id: pass mask_id=<the mask token id>, or use a model whose config "
                "defines mask_token_id"
            )
        return
    if isinstance(mask_id, bool) or not isinstance(mask_id, int) or mask_id < 0:
        raise ConfigError(f"mask_id must be a token id (an int >= 0), got {mask_id!r}")
    if vocab is not None and mask_id >= vocab:
        raise ConfigError(
            f"mask_id {mask_id} is outside the model's vocabulary of {vocab}; pass the mask id "
            "the model was trained with"
        )


def open_run(
    model: Any,
    config: SamplingConfig,
    *,
    mask_id: int | None,
    batch_size: int | None,
    length: int | None,
    prompt: Any,
    prompt_attention_mask: torch.Tensor | None,
    generator: torch.Generator | None,
    bos_id: int | None = None,
    needs_mask: bool = True,
    starts_with_bos: bool = False,
) -> RunInputs:
    """Check a sampler's arguments and lay out its prompt (no model call).

    Args:
        model, config: the model and the resolved settings.
        mask_id, bos_id: explicit ids (``None``: the model config's).
        batch_size, length, prompt, prompt_attention_mask, generator: as the samplers take them.
        needs_mask: refuse a run without a mask id (masked diffusion).
        starts_with_bos: without a prompt every row starts with BOS, and a prompt may not be
            empty (left-to-right sampling needs a first token).
    """
    device = model_device(
        model, generator.device if isinstance(generator, torch.Generator) else None
    )
    check_generator(generator, device)
    ids = resolve_special_ids(model, mask=mask_id, pad=config.pad_id, bos=bos_id, eos=config.eos_id)
    vocab = model_vocab_size(model)
    _check_mask(ids.mask, vocab, needs_mask)
    pad_id = config.pad_id if config.pad_id is not None else ids.padding()
    empty = None
    if starts_with_bos and prompt is None:
        if ids.bos is None:
            raise ConfigError(
                "autoregressive sampling needs a first token: pass prompt=[[BOS id]] or bos_id=..., "
                "or use a model whose config has bos_token_id"
            )
        empty = torch.tensor([[ids.bos]], dtype=torch.long)
    if length is None:
        width = prompt_length_of(prompt) if prompt is not None else int(empty is not None)
        length = default_length(model, width)
    check_positive_int("length", length)
    ids_, mask_ = layout_prompt(
        prompt, prompt_attention_mask, batch_size=batch_size, pad_id=pad_id, vocab=vocab,
        device=device, empty=empty,
    )  # fmt: skip
    if starts_with_bos and ids_.shape[1] == 0:
        raise ConfigError("the prompt is empty; give at least one token (e.g. BOS)")
    check_fits(ids_.shape[1], length, model_max_length(model))
    return RunInputs(config, device, ids, pad_id, ids_, mask_, length, vocab)


def sample_output(
    caller: ModelCaller,
    tokens: torch.Tensor,
    *,
    started: float,
    prompt_length: int,
    num_steps: int,
    num_corrected: torch.Tensor | None = None,
    corrector_changes: CorrectorChanges | None = None,
    history: SamplingHistory | None = None,
) -> SampleOutput:
    """The :class:`~proseco.SampleOutput` of a finished run: ``tokens`` ``[B, L]`` and the
    caller's exact counts (per-sample means, per-row counts, network calls); ``wall_time`` from
    ``started`` (``time.perf_counter()``) until the device has finished."""
    if tokens.is_cuda:
        torch.cuda.synchronize(tokens.device)
    denoiser, corrector = caller.denoiser_rows, caller.corrector_rows
    rows = denoiser + corrector
    if num_corrected is None:
        num_corrected = torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)
    return SampleOutput(
        tokens=tokens,
        nfe=float(rows.double().mean()),
        denoiser_nfe=float(denoiser.double().mean()),
        corrector_nfe=float(corrector.double().mean()),
        wall_time=time.perf_counter() - started,
        model_calls=caller.nfe,
        nfe_per_row=rows.cpu(),
        corrector_nfe_per_row=corrector.cpu(),
        prompt_length=prompt_length,
        num_steps=num_steps,
        num_corrected=num_corrected,
        corrector_changes=CorrectorChanges.empty()
        if corrector_changes is None
        else corrector_changes,
        history=history,
    )
