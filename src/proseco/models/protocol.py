"""The one way the library talks to a network.

Any callable ``model(input_ids: LongTensor[B, L], **conditioning)`` that returns logits
``[B, L, V]`` — as a tensor, as an object with ``.logits`` (Hugging Face outputs) or as a tuple whose
first item is the logits — is a model. The bundled DiT, a hub masked LM and a test dummy all fit.

Time conditioning: if ``model.config.time_conditioning`` (or ``model.time_conditioning``) is true,
:func:`call_model` passes ``timesteps=t`` (``[B]`` floats); otherwise ``t`` is never sent, so models
that take no time input keep working.

Quality scores (PRISM): a model whose output object also has ``quality_logits`` ``[B, L]``
(:class:`proseco.models.dit.ProsecoDiTOutput`) gives them with the logits of the same call;
:func:`call_model_with_quality` returns both.

Window KV cache (``SamplingConfig.cache``): a model with ``supports_window_cache = True`` takes
``use_cache=True`` (return ``past_key_values``, a :class:`~proseco.models.kv_cache.KVCache`) and
``past_key_values=`` with ``position_ids=`` (run a window of the sequence against cached keys
and values); :func:`call_model_cached` makes either call.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = [
    "call_model",
    "call_model_with_quality",
    "has_quality_head",
    "is_time_conditioned",
    "model_vocab_size",
    "model_max_length",
    "supports_window_cache",
    "call_model_cached",
]


def has_quality_head(model: Any) -> bool:
    """Whether the model declares a PRISM quality head (``config.quality_head``)."""
    config = getattr(model, "config", None)
    return bool(getattr(config, "quality_head", False))


def supports_window_cache(model: Any) -> bool:
    """Whether the model follows the window KV-cache protocol (:mod:`proseco.models.kv_cache`)."""
    return bool(getattr(model, "supports_window_cache", False))


def is_time_conditioned(model: Any) -> bool:
    """Whether the model wants the diffusion time as input (``timesteps=t``)."""
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "time_conditioning", False):
        return True
    return bool(getattr(model, "time_conditioning", False))


def model_vocab_size(model: Any) -> int | None:
    """The model's output vocabulary size if it declares one (``config.vocab_size``), else None."""
    config = getattr(model, "config", None)
    size = getattr(config, "vocab_size", None) if config is not None else None
    if size is None:
        size = getattr(model, "vocab_size", None)
    return int(size) if size is not None else None


def model_max_length(model: Any) -> int | None:
    """The longest sequence the model accepts if it declares one, else None."""
    config = getattr(model, "config", None)
    for name in ("max_length", "max_position_embeddings", "model_length", "n_positions"):
        value = getattr(config, name, None) if config is not None else None
        if isinstance(value, int) and value > 0 and name != "max_length":
            return value
    value = getattr(model, "max_length", None)
    return int(value) if isinstance(value, int) else None


def call_model(
    model: Any,
    input_ids: torch.Tensor,
    t: torch.Tensor | None = None,
    **conditioning: Any,
) -> torch.Tensor:
    """Run ``model`` on ``input_ids`` ``[B, L]`` and return float logits ``[B, L, V]``.

    Same arguments as :func:`call_model_with_quality`, which also returns quality logits.
    """
    return call_model_with_quality(model, input_ids, t, **conditioning)[0]


def call_model_with_quality(
    model: Any,
    input_ids: torch.Tensor,
    t: torch.Tensor | None = None,
    **conditioning: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One model call: ``(logits [B, L, V], quality_logits [B, L] or None)``.

    ``quality_logits`` is the output's ``quality_logits`` attribute (a PRISM head), else None.

    Args:
        model: any callable following the protocol above.
        input_ids: token ids ``[B, L]``.
        t: diffusion times ``[B]``; forwarded as ``timesteps`` only to time-conditioned models.
        **conditioning: extra keyword arguments (``class_labels``, ``attention_mask`` …); ``None``
            values are dropped so that models without those inputs are not bothered.
    """
    logits, quality, _ = _call(model, input_ids, t, conditioning)
    return logits, quality


def call_model_cached(
    model: Any,
    input_ids: torch.Tensor,
    t: torch.Tensor | None = None,
    *,
    past_key_values: Any = None,
    position_ids: torch.Tensor | None = None,
    use_cache: bool = False,
    **conditioning: Any,
) -> tuple[torch.Tensor, torch.Tensor | None, Any]:
    """One call of a model with the window cache: ``(logits, quality_logits or None, cache)``.

    ``use_cache=True``: ``cache`` is the output's ``past_key_values`` (every input position).
    ``past_key_values`` with ``position_ids``: ``input_ids`` is a window of the sequence at those
    positions, attending to the cached entries too; ``cache`` is ``None``. Logits cover the
    input's positions only.
    """
    extra: dict[str, Any] = {}
    if use_cache:
        extra["use_cache"] = True
    if past_key_values is not None:
        extra["past_key_values"] = past_key_values
        extra["position_ids"] = position_ids
    logits, quality, out = _call(model, input_ids, t, {**conditioning, **extra})
    cache = getattr(out, "past_key_values", None) if use_cache else None
    if use_cache and cache is None:
        raise TypeError(
            f"{type(model).__name__} returned no past_key_values for use_cache=True; it does not "
            "follow the window cache protocol (proseco.models.kv_cache)"
        )
    return logits, quality, cache


def _call(
    model: Any, input_ids: torch.Tensor, t: torch.Tensor | None, conditioning: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor | None, Any]:
    kwargs = {k: v for k, v in conditioning.items() if v is not None}
    if t is not None and is_time_conditioned(model):
        kwargs["timesteps"] = t
    out = model(input_ids, **kwargs)
    quality = getattr(out, "quality_logits", None)
    if isinstance(out, torch.Tensor):
        logits = out
    elif hasattr(out, "logits"):
        logits = out.logits
    elif isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        logits = out[0]
    else:
        raise TypeError(
            f"model returned {type(out).__name__}; expected logits [B, L, V], an object with "
            "`.logits`, or a tuple whose first item is the logits"
        )
    if logits.dim() != 3 or logits.shape[:2] != input_ids.shape:
        raise ValueError(
            f"model returned logits of shape {tuple(logits.shape)} for input_ids of shape "
            f"{tuple(input_ids.shape)}; expected [B, L, V] = [{input_ids.shape[0]}, "
            f"{input_ids.shape[1]}, V]"
        )
    if quality is not None and tuple(quality.shape) != tuple(input_ids.shape):
        raise ValueError(
            f"model returned quality_logits of shape {tuple(quality.shape)} for input_ids of "
            f"shape {tuple(input_ids.shape)}; expected [B, L]"
        )
    return logits, quality, out
