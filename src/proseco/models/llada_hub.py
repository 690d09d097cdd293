"""LLaDA checkpoints through the native model first, through their own code as the fallback.

``load_pretrained`` (``adapter="llada"``, detected from ``model_type: llada`` /
``LLaDAModelLM``) loads a LLaDA directory or hub name with :func:`load_llada`
(:func:`proseco.models.hub.load_hub_model` is the remote-code path alone):

1. **Native** (:class:`~proseco.models.llada.LLaDAModelLM`, no ``trust_remote_code`` needed) when
   the checkpoint is LLaDA's architecture as the native model implements it: its ``config.json``
   sets no key unknown to LLaDA's config (:func:`~proseco.models.llada_config.unknown_keys`), asks
   for nothing the native model lacks (:func:`~proseco.models.llada_config.native_problems`: ALiBi,
   QK-norm, the fused ``sequential`` block ...), and its weights are exactly the native model's
   parameters (no missing, no extra tensors). It comes wrapped in :class:`NativeLLaDAAdapter`:
   attention masks (``padding="mask"``, one call per step for ragged prompts) and the window KV
   cache (``SamplingConfig(cache="prefix" | "dual")``).
2. **Remote code** (:class:`~proseco.models.hub.LLaDAAdapter`, ``padding="crop"``, no cache)
   otherwise, when ``trust_remote_code=True``; a warning says why the native model was not used.
   Without ``trust_remote_code`` the error gives that reason and names the flag.

The environment variable ``PROSECO_LLADA`` overrides the choice: ``native`` (the native model or an
error, never remote code), ``remote`` (LLaDA's own code, as before the native model existed; needs
``trust_remote_code``), ``auto`` (the default, as above).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from proseco.errors import ConfigError, ModelLoadError
from proseco.models.hub import LLADA_MASK_ID, LLaDAAdapter, load_hub_model, read_config_json
from proseco.models.llada import LLaDAModelLM, LLaDAOutput
from proseco.models.llada_config import LLaDAConfig, native_problems, unknown_keys
from proseco.special_tokens import resolve_special_ids

__all__ = [
    "LLADA_ENV",
    "LLADA_MODES",
    "NativeLLaDAAdapter",
    "NotNative",
    "load_llada",
    "load_native",
]

LLADA_ENV = "PROSECO_LLADA"
"""Environment variable choosing how LLaDA checkpoints load: one of :data:`LLADA_MODES`."""

LLADA_MODES = ("auto", "native", "remote")


class NotNative(Exception):
    """A checkpoint the native LLaDA model cannot load; the message says why."""


class NativeLLaDAAdapter(LLaDAAdapter):
    """The adapter of a native :class:`~proseco.models.llada.LLaDAModelLM` (``adapter="llada"``).

    Unlike the remote-code adapter it passes attention masks (``padding="mask"``, the default;
    ``"crop"`` still works) and follows the window cache protocol: ``use_cache=True`` and
    ``past_key_values=`` with ``position_ids=`` go to the network, and the output carries
    ``past_key_values``. Logits are float32 ``[B, L, E]`` with ``E = embedding_size``; ids the
    tokenizer does not have (``>= vocab_size``) get ``-inf``.
    """

    default_padding = "mask"
    padding_modes = ("mask", "crop")
    supports_window_cache = True
    _no_split_modules = ["LLaDALlamaBlock"]  # FSDP's transformer-based wrap finds the blocks

    def __init__(self, model: nn.Module, *, mask_token_id: int, padding: str | None = None,
                 **kwargs: Any) -> None:  # fmt: skip
        config = model.config
        kwargs.setdefault("vocab_size", config.num_embeddings)
        kwargs.setdefault("num_tokens", config.vocab_size)
        kwargs.setdefault("max_length", config.max_sequence_length)
        super().__init__(model, mask_token_id=mask_token_id, padding=padding, **kwargs)

    def _padding_note(self) -> str:
        return ""

    def _call(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        return self._logits(self.model(input_ids=input_ids, attention_mask=attention_mask))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        position_ids: torch.Tensor | None = None,
        past_key_values: Any = None,
        use_cache: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Float32 logits ``[B, L, V]`` as every adapter; with ``use_cache`` or
        ``past_key_values`` (+ ``position_ids``) an :class:`~proseco.models.llada.LLaDAOutput`
        with ``logits`` and ``past_key_values`` (see :meth:`LLaDAModelLM.forward`)."""
        if position_ids is None and past_key_values is None and not use_cache:
            return super().forward(input_ids, attention_mask, **kwargs)
        extra = sorted(k for k, v in kwargs.items() if v is not None)
        if extra:
            raise ConfigError(
                f"llada models take only input_ids and attention_mask, got {extra}; drop those "
                "sampling settings (conditioning, guidance)"
            )
        out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                         position_ids=position_ids, past_key_values=past_key_values,
                         use_cache=use_cache)  # fmt: skip
        logits = self._logits(out).float()
        if self.num_tokens < logits.shape[-1]:
            logits = logits.clone()
            logits[..., self.num_tokens :] = float("-inf")
        cache = getattr(out, "past_key_values", None) if use_cache else None
        return LLaDAOutput(logits=logits, past_key_values=cache)


def llada_mode() -> str:
    """``PROSECO_LLADA`` (``auto`` when unset)."""
    mode = os.environ.get(LLADA_ENV, "").strip().lower() or "auto"
    if mode not in LLADA_MODES:
        raise ConfigError(f"{LLADA_ENV}={mode!r} is not a choice; use one of {list(LLADA_MODES)}")
    return mode


def load_llada(
    location: str,
    *,
    tokenizer: Any = None,
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
    mask_token_id: int | None = None,
    padding: str | None = None,
) -> LLaDAAdapter:
    """A LLaDA checkpoint (directory or hub name), native if it can be (see the module docs).

    Raises:
        proseco.errors.ModelLoadError: neither way loads it (the message says why and what to
            pass).
    """
    mode = llada_mode()
    reason = f"{LLADA_ENV}=remote"
    if mode != "remote":
        try:
            model = load_native(location, dtype=dtype)
        except NotNative as e:
            if mode == "native":
                raise ModelLoadError(
                    f"cannot load the llada model {location} natively: {e}; unset "
                    f"{LLADA_ENV}=native to run the modelling code it ships (trust_remote_code=True)"
                ) from None
            reason = str(e)
        else:
            mask = resolve_special_ids(model, tokenizer, mask=mask_token_id).mask
            mask = LLADA_MASK_ID if mask is None else mask
            return NativeLLaDAAdapter(model, mask_token_id=mask, padding=padding)
    if not trust_remote_code:
        how = "" if mode == "remote" else " with proseco's native LLaDA"
        raise ModelLoadError(
            f"cannot load the llada model {location}{how}: {reason}; pass trust_remote_code=True "
            "to run the modelling code it ships"
        )
    if mode != "remote":
        warnings.warn(
            f"{location}: {reason}, so it runs on the modelling code it ships (no attention mask, "
            "no KV cache) instead of proseco's native LLaDA",
            stacklevel=2,
        )
    return load_hub_model(location, "llada", tokenizer=tokenizer, dtype=dtype,  # type: ignore[return-value]
                          trust_remote_code=True, mask_token_id=mask_token_id, padding=padding)  # fmt: skip


def load_native(location: str, *, dtype: torch.dtype | None = None) -> LLaDAModelLM:
    """The native :class:`~proseco.models.llada.LLaDAModelLM` of ``location`` (eval mode).

    Raises:
        NotNative: the config sets unknown keys or features the native model lacks, the weights
            are not the native model's parameters, or transformers cannot load them.
        proseco.errors.ModelLoadError: ``config.json`` cannot be read.
    """
    data = read_config_json(location)
    unknown = unknown_keys(data)
    if unknown:
        raise NotNative(f"its config.json sets {unknown}, which LLaDA's config does not define")
    try:
        config = LLaDAConfig.from_pretrained(location)
    except Exception as e:  # a malformed value (transformers raises many types)
        raise NotNative(f"its config.json does not read as LLaDA's ({_first_line(e)})") from None
    problems = native_problems(config)
    if problems:
        raise NotNative(f"it uses {'; '.join(problems)}")
    _check_weight_names(location, config)
    kwargs: dict[str, Any] = {"config": config, "output_loading_info": True}
    if dtype is not None:
        kwargs["dtype"] = dtype
    try:
        model, info = LLaDAModelLM.from_pretrained(location, **kwargs)
    except Exception as e:  # shape mismatches, unreadable weights
        raise NotNative(
            f"its weights do not load into the native model ({_first_line(e)})"
        ) from None
    wrong = {
        k: sorted(info.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")
    }
    if any(wrong.values()):
        raise NotNative(f"its weights are not the native model's parameters ({_describe(wrong)})")
    return model.eval()


def _check_weight_names(location: str, config: LLaDAConfig) -> None:
    """For a local directory of safetensors: the tensor names must be the native model's
    parameter names (checked from the file headers, before any weight is read)."""
    directory = Path(location)
    files = sorted(directory.glob("*.safetensors")) if directory.is_dir() else []
    if not files:
        return  # a hub name, or other formats: from_pretrained's loading info decides
    from safetensors import safe_open

    names: set[str] = set()
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            names |= set(handle.keys())
    with torch.device("meta"):
        expected = set(LLaDAModelLM(config).state_dict())
    wrong = {"missing_keys": sorted(expected - names), "unexpected_keys": sorted(names - expected)}
    if any(wrong.values()):
        raise NotNative(f"its weights are not the native model's parameters ({_describe(wrong)})")


def _describe(wrong: dict[str, list[str]]) -> str:
    parts = []
    for kind, names in wrong.items():
        if names:
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            parts.append(f"{kind.replace('_', ' ')}: {', '.join(names[:3])}{more}")
    return "; ".join(parts)


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
