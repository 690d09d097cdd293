"""Left-to-right sampling of a causal model: the autoregressive (AR) baseline.

The same decoding settings (:class:`~proseco.SamplingConfig`: temperature, top-k, top-p,
float64, classifier-free guidance, conditioning) and the same result object
(:class:`~proseco.SampleOutput`) as :func:`proseco.sample`, so AR and masked diffusion compare on
equal footing::

    x = [prompt]                             # [BOS] when no prompt is given
    for i in range(length):                  # one model evaluation per generated position
        logits = model(x)[:, -1]             # no KV cache: the whole prefix is run again
        x = [x, draw(logits)]                # LogitsProcessor: temperature / top-k / top-p
        rows that drew EOS stop; their later positions are padding

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
from proseco.models.protocol import model_vocab_size
from proseco.sampling.config import SamplingConfig, resolve_config
from proseco.sampling.guidance import ModelCaller
from proseco.sampling.inputs import (
    _prompt_tensor,
    check_fits,
    model_device,
    prompt_length_of,
    resolve_length,
)
from proseco.sampling.output import SampleOutput

__all__ = ["sample_autoregressive", "check_autoregressive_args", "is_causal"]


def is_causal(model: Any) -> bool:
    """Whether ``model.config.causal`` is set (a proseco DiT built for the AR baseline)."""
    return bool(getattr(getattr(model, "config", None), "causal", False))


def _config_id(model: Any, name: str) -> int | None:
    value = getattr(getattr(model, "config", None), name, None)
    return int(value) if value is not None else None


def _layout(
    model: Any,
    prompt: Any,
    prompt_attention_mask: torch.Tensor | None,
    batch_size: int | None,
    bos_id: int | None,
    pad_id: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The prompt ``[B, P]`` (left-padded) and its attention mask ``[B, P]`` or ``None``."""
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ConfigError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if prompt is None:
        if prompt_attention_mask is not None:
            raise ConfigError("prompt_attention_mask was given without a prompt")
        if bos_id is None:
            raise ConfigError(
                "autoregressive sampling needs a first token: pass prompt=[[BOS id]] or bos_id=..., "
                "or use a model whose config has bos_token_id"
            )
        batch = 1 if batch_size is None else batch_size
        return torch.full((batch, 1), bos_id, dtype=torch.long, device=device), None
    ids, attention = _prompt_tensor(prompt, prompt_attention_mask, pad_id, device)
    if ids.shape[1] == 0:
        raise ConfigError("the prompt is empty; give at least one token (e.g. BOS)")
    if batch_size is not None and batch_size != ids.shape[0]:
        if ids.shape[0] != 1:
            raise ConfigError(
                f"batch_size {batch_size} does not match the {ids.shape[0]} prompts given; "
                "drop batch_size or pass one prompt to repeat"
            )
        ids = ids.expand(batch_size, -1)
        attention = None if attention is None else attention.expand(batch_size, -1)
    vocab = model_vocab_size(model)
    if vocab is not None and bool(((ids < 0) | (ids >= vocab)).any()):
        raise ConfigError(f"the prompt contains ids outside the model's vocabulary of {vocab}")
    return ids, attention


@dataclass
class _Setup:
    """A checked sampling run: settings, the model caller and the laid-out prompt."""

    config: SamplingConfig
    caller: ModelCaller
    ids: torch.Tensor  # [B, P]
    attention: torch.Tensor | None  # [B, P] or None
    length: int
    eos_id: int | None
    pad_id: int


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
    device = model_device(
        model, generator.device if isinstance(generator, torch.Generator) else None
    )
    mask_id = _config_id(model, "mask_token_id") if mask_id is None else mask_id
    eos_id = config.eos_id if config.eos_id is not None else _config_id(model, "eos_token_id")
    pad_id = config.pad_id if config.pad_id is not None else _config_id(model, "pad_token_id")
    pad_id = pad_id if pad_id is not None else (eos_id if eos_id is not None else 0)
    bos_id = bos_id if bos_id is not None else _config_id(model, "bos_token_id")
    length, max_length = resolve_length(
        model, length, prompt_length_of(prompt if prompt is not None else [0])
    )
    ids, attention = _layout(
        model, prompt, prompt_attention_mask, batch_size, bos_id, pad_id, device
    )
    check_fits(ids.shape[1], length, max_length)
    caller = ModelCaller(
        model,
        mask_id=-1 if mask_id is None else mask_id,
        batch_size=ids.shape[0],
        device=device,
        conditioning=config.conditioning,
        guidance=config.guidance,
    )
    return _Setup(config, caller, ids, attention, length, eos_id, pad_id)


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
    stop_at_eos: bool = True,
    progress: bool = False,
    **overrides: Any,
) -> SampleOutput:
    """Generate left to right with a causal model (the AR baseline).

    Args:
        model: a causal model following :mod:`proseco.models.protocol` (logits at position ``l``
            depend on tokens ``<= l`` only), in eval mode. A proseco DiT must have
            ``config.causal = True``.
        config: decoding settings; only ``temperature``, ``top_k``, ``top_p``, ``float64``,
            ``guidance``, ``conditioning``, ``eos_id`` and ``pad_id`` are used (``steps``,
            ``corrector``, ``block_length`` and the unmasking strategy are diffusion settings).
        batch_size: ``B`` without a prompt (default 1); with one prompt, repeats it ``B`` times.
        length: tokens to generate (default: the model's maximum length minus the prompt).
        prompt: ``[B, P]`` / ``[P]`` ids or a list of id lists (left-padded with the pad id).
            Default ``[BOS]`` (``bos_id``, else ``model.config.bos_token_id``).
        prompt_attention_mask: ``[B, P]`` 1 = token, 0 = left padding, for a padded tensor.
        generator: ``torch.Generator`` for every draw (same seed, same tokens).
        mask_id: a column never drawn (default ``model.config.mask_token_id``; ``None`` = none).
        bos_id: the first token when no prompt is given.
        stop_at_eos: a row stops at its first EOS (``config.eos_id``, else the model's
            ``eos_token_id``); its later positions become the pad id (``config.pad_id``, else
            the model's ``pad_token_id``, else EOS). ``False`` generates all ``length`` tokens.
        progress: show a tqdm bar over positions.
        **overrides: fields of :class:`~proseco.SamplingConfig` (``temperature``, ``top_p`` ...).

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
    run = _setup(
        model, config, batch_size, length, prompt, prompt_attention_mask, generator, mask_id,
        bos_id, overrides,
    )  # fmt: skip
    config, caller, ids, attention = run.config, run.caller, run.ids, run.attention
    eos_id, pad_id, length, device = run.eos_id, run.pad_id, run.length, ids.device
    batch, prompt_length = ids.shape
    processor = config.processor()
    tokens = torch.full((batch, prompt_length + length), pad_id, dtype=torch.long, device=device)
    tokens[:, :prompt_length] = ids
    if attention is not None:
        attention = torch.cat([attention, attention.new_ones(batch, length)], dim=1)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    stop = stop_at_eos and eos_id is not None
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
        if stop:
            if rows is None:
                done |= drawn == eos_id
            else:
                done[rows] |= drawn == eos_id
            if bool(done.all()):
                break
    bar.close()
    if tokens.is_cuda:
        torch.cuda.synchronize(tokens.device)
    return SampleOutput(
        tokens=tokens,
        nfe=float(caller.denoiser_rows.double().mean()),
        denoiser_nfe=float(caller.denoiser_rows.double().mean()),
        corrector_nfe=0.0,
        wall_time=time.perf_counter() - started,
        prompt_length=prompt_length,
        num_steps=steps,
        num_corrected=torch.zeros(batch, dtype=torch.long, device=device),
        model_calls=caller.nfe,
        nfe_per_row=caller.denoiser_rows.cpu(),
        corrector_nfe_per_row=torch.zeros(batch, dtype=torch.long),
    )
