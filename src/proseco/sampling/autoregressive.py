"""Left-to-right sampling of a causal model: the autoregressive (AR) baseline.

The same decoding settings (:class:`~proseco.SamplingConfig`: temperature, top-k, top-p,
float64, classifier-free guidance, conditioning) and the same result object
(:class:`~proseco.SampleOutput`) as :func:`proseco.sample`, so AR and masked diffusion compare on
equal footing::

    x = [prompt]                             # [BOS] when no prompt is given
    for i in range(length):                  # one model evaluation per generated position
        logits = model(x)[:, -1]             # no KV cache: the whole prefix is run again
        x = [x, draw(logits)]                # LogitsProcessor: temperature / top-k / top-p
        rows that drew EOS stop; their later positions are padding (stop_at_eos, default on)

NFE counts network evaluations exactly as :func:`proseco.sample` does: one per generated position
(two with classifier-free guidance at ``gamma`` not in ``{0, 1}``); the loop ends early once every
row has stopped. Without a KV cache each call re-reads the prefix, so wall time grows
quadratically with the length; NFE does not depend on caching.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from proseco.errors import ConfigError
from proseco.sampling.caller import ModelCaller
from proseco.sampling.config import SamplingConfig, resolve_config
from proseco.sampling.front import RunInputs, open_run, sample_output
from proseco.sampling.output import SampleOutput

__all__ = ["sample_autoregressive", "check_autoregressive_args", "is_causal"]


def is_causal(model: Any) -> bool:
    """Whether ``model.config.causal`` is set (a proseco DiT built for the AR baseline)."""
    return bool(getattr(getattr(model, "config", None), "causal", False))


@dataclass
class _Setup:
    """A checked sampling run: the front door's inputs and the model caller."""

    run: RunInputs
    caller: ModelCaller
    stop: bool  # rows stop at their first EOS


def _setup(
    model: Any,
    config: SamplingConfig | None,
    batch_size: int | None,
    length: int | None,
    prompt: Any,
    prompt_attention_mask: torch.Tensor | None,
    generator: torch.Generator | None,
    mask_id: int | None,
    bos_id: int | None,
    overrides: dict[str, Any],
) -> _Setup:
    """Validate every argument of :func:`sample_autoregressive` (no model call)."""
    config = resolve_config(config, overrides)
    if getattr(getattr(model, "config", None), "causal", None) is False:
        raise ConfigError(
            "this model has bidirectional attention (config.causal=False), so it cannot be "
            "sampled left to right; use proseco.sample for a masked diffusion model"
        )
    if config.corrector is not None:
        raise ConfigError(
            "a ProSeCo corrector needs a masked diffusion model; drop the corrector (and any "
            "--corrector-*/--preset flag) for an autoregressive model"
        )
    if config.cache != "none":
        raise ConfigError(
            f"cache={config.cache!r} is the block cache of masked diffusion decoding; sample an "
            "autoregressive model with cache='none' (--cache none)"
        )
    run = open_run(
        model, config, mask_id=mask_id, batch_size=batch_size, length=length, prompt=prompt,
        prompt_attention_mask=prompt_attention_mask, generator=generator, bos_id=bos_id,
        needs_mask=False, starts_with_bos=True,
    )  # fmt: skip
    stop = config.stops_at_eos(True) and run.ids.eos is not None
    return _Setup(run, run.caller(model), stop)


def check_autoregressive_args(
    model: Any,
    config: SamplingConfig | None = None,
    *,
    batch_size: int | None = None,
    length: int | None = None,
    prompt: Any = None,
    prompt_attention_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    mask_id: int | None = None,
    bos_id: int | None = None,
    **overrides: Any,
) -> None:
    """Raise the error :func:`sample_autoregressive` would raise, without calling the model."""
    _setup(
        model, config, batch_size, length, prompt, prompt_attention_mask, generator, mask_id,
        bos_id, overrides,
    )  # fmt: skip


@torch.no_grad()
def sample_autoregressive(
    model: Any,
    config: SamplingConfig | None = None,
    *,
    batch_size: int | None = None,
    length: int | None = None,
    prompt: Any = None,
    prompt_attention_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    mask_id: int | None = None,
    bos_id: int | None = None,
    progress: bool = False,
    **overrides: Any,
) -> SampleOutput:
    """Generate left to right with a causal model (the AR baseline).

    Args:
        model: a causal model following :mod:`proseco.models.protocol` (logits at position ``l``
            depend on tokens ``<= l`` only), in eval mode. A proseco DiT must have
            ``config.causal = True``.
        config: decoding settings; only ``temperature``, ``top_k``, ``top_p``, ``float64``,
            ``guidance``, ``conditioning``, ``eos_id``, ``stop_at_eos`` and ``pad_id`` are used
            (``steps``, ``corrector``, ``block_length`` and the unmasking strategy are diffusion
            settings). ``stop_at_eos`` (default ``None``: stop) makes a row stop at its first
            EOS (``eos_id``, else the model's ``eos_token_id``); its later positions become the
            pad id (``pad_id``, else the model's ``pad_token_id``, else EOS). ``False``
            generates all ``length`` tokens.
        batch_size: ``B`` without a prompt (default 1); with one prompt, repeats it ``B`` times.
        length: tokens to generate (default: the model's maximum length minus the prompt).
        prompt: ``[B, P]`` / ``[P]`` ids or a list of id lists (left-padded with the pad id).
            Default ``[BOS]`` (``bos_id``, else ``model.config.bos_token_id``).
        prompt_attention_mask: ``[B, P]`` 1 = token, 0 = left padding, for a padded tensor.
        generator: ``torch.Generator`` for every draw (same seed, same tokens).
        mask_id: a column never drawn (default ``model.config.mask_token_id``; ``None`` = none).
        bos_id: the first token when no prompt is given.
        progress: show a tqdm bar over positions.
        **overrides: fields of :class:`~proseco.SamplingConfig` (``temperature``, ``top_p``,
            ``stop_at_eos`` ...).

    Returns:
        :class:`~proseco.SampleOutput`: ``tokens`` ``[B, P + length]``, ``prompt_length = P``,
        ``nfe = denoiser_nfe`` (model evaluations per sample, mean over the batch: a row stopped
        at EOS leaves the batch, so it costs one evaluation per token it generated, two when
        guided), ``model_calls`` (network calls, the sequential cost), ``nfe_per_row`` ``[B]``,
        ``corrector_nfe = 0``, ``num_steps`` = positions generated, ``num_corrected`` zeros.

    Raises:
        proseco.errors.ConfigError: a non-causal DiT, bad lengths, prompts or settings.
    """
    started = time.perf_counter()
    setup = _setup(
        model, config, batch_size, length, prompt, prompt_attention_mask, generator, mask_id,
        bos_id, overrides,
    )  # fmt: skip
    run, caller = setup.run, setup.caller
    eos_id, length, device = run.ids.eos, run.length, run.device
    batch, prompt_length = run.batch, run.prompt_length
    processor = run.config.processor()
    tokens = torch.full(
        (batch, prompt_length + length), run.pad_id, dtype=torch.long, device=device
    )
    tokens[:, :prompt_length] = run.prompt
    attention = run.attention_mask()
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    steps = 0
    bar = tqdm(total=length, disable=not progress, desc="sampling", leave=False)
    for pos in range(prompt_length, prompt_length + length):
        if attention is not None:
            caller.kwargs["attention_mask"] = attention[:, :pos]
        # Rows that stopped at EOS leave the batch: a row costs one evaluation per token it
        # generates (two when guided), as in the diffusion sampler's per-row accounting.
        rows = None if not bool(done.any()) else (~done).nonzero(as_tuple=True)[0]
        x = tokens[:, :pos] if rows is None else tokens[rows, :pos]
        logits = caller.denoise(x, 1.0, rows)[:, -1]  # [n, V]
        drawn, _ = processor.sample(logits.clone(), generator)
        if rows is None:
            tokens[:, pos] = drawn
        else:
            tokens[rows, pos] = drawn
        steps += 1
        bar.update(1)
        if setup.stop:
            if rows is None:
                done |= drawn == eos_id
            else:
                done[rows] |= drawn == eos_id
            if bool(done.all()):
                break
    bar.close()
    return sample_output(
        caller, tokens, started=started, prompt_length=prompt_length, num_steps=steps
    )
