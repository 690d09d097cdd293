"""Adapters that give hub diffusion LMs the model protocol (:mod:`proseco.models.protocol`).

Every adapter wraps a loaded network as ``adapter.model`` and is called like the bundled DiT::

    logits = adapter(input_ids)                       # [B, L] -> float32 [B, L, V]
    logits = adapter(input_ids, attention_mask=mask)  # left-padded prompts, 1 = real token

``adapter.config`` carries what the sampler reads (``mask_token_id``, ``vocab_size``,
``max_position_embeddings``, ``time_conditioning=False``). Logits come back in float32 whatever
the weights' dtype (bf16 weights work), and ids the tokenizer does not have (a vocabulary padded
for speed) get ``-inf`` so they are never drawn.

Three families (:data:`ADAPTERS`, besides ``"proseco"`` = the bundled DiT, which needs none):

* ``llada`` — LLaDA-style remote code (``trust_remote_code=True``), mask id 126336, bidirectional.
  (``load_pretrained`` loads LLaDA checkpoints into proseco's native LLaDA instead whenever it
  implements their architecture, wrapped in
  :class:`~proseco.models.llada_hub.NativeLLaDAAdapter`: a real attention mask and the window KV
  cache; :mod:`proseco.models.llada_hub` says when and how to choose. This adapter is the fallback.)
  Its modelling code has no usable attention mask: given one, it *adds a causal bias* (a leftover
  of the OLMo code it is built on), so a mask must never be passed. Padding is therefore handled
  by ``padding="crop"``: rows are grouped by their number of left-padding tokens and each group
  is run on its columns without padding, so every row is computed on exactly the tokens it would
  have alone (the pad positions get zero logits; they are prompt and never sampled).
* ``dream`` — Dream-style remote code: the network's output at position ``i`` predicts token
  ``i + 1`` (it was initialised from an autoregressive LM). The adapter un-shifts, as Dream's own
  ``diffusion_generate`` does: logits for position ``i`` are the output at ``i - 1`` (position 0
  keeps its own). Dream's code honours a 4-D boolean mask and ``position_ids``, so the default
  ``padding="mask"`` makes one call: padded keys are masked for every query (pad queries still
  see real keys, so no row of the softmax is empty) and positions restart at 0 at each row's
  first real token, exactly as when the row is alone.
* ``masked_lm`` — any ``AutoModelForMaskedLM`` (BERT, ModernBERT ...): mask token and vocabulary
  from the tokenizer. ``padding="mask"`` passes the 2-D ``attention_mask`` and ``position_ids``
  (``"crop"`` when the model's ``forward`` takes no ``position_ids``).

``padding="crop"`` is exact for any network; ``"mask"`` is one call per step instead of one per
distinct padding length, for networks whose attention honours the mask.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from proseco.errors import ConfigError, ModelLoadError
from proseco.special_tokens import resolve_special_ids, token_id

__all__ = [
    "ADAPTERS",
    "LLADA_MASK_ID",
    "DreamAdapter",
    "HubConfig",
    "HubDiffusionLM",
    "LLaDAAdapter",
    "MaskedLMAdapter",
    "detect_adapter",
    "load_hub_model",
    "read_config_json",
    "wrap",
]

ADAPTERS: tuple[str, ...] = ("proseco", "llada", "dream", "masked_lm")
"""Names accepted by ``load_pretrained(..., adapter=NAME)``."""

LLADA_MASK_ID = 126336
"""The mask id of the LLaDA 8B models (used when their config does not name one)."""

PADDING_MODES = ("crop", "mask")


@dataclass
class HubConfig:
    """What the sampler reads from ``model.config`` (see :mod:`proseco.models.protocol`).

    Attributes:
        adapter: the adapter name (``"llada"``, ``"dream"``, ``"masked_lm"``).
        mask_token_id: the mask id.
        vocab_size: ``V``, the width of the logits.
        max_position_embeddings: the longest input, or ``None`` if unknown.
        time_conditioning: always ``False`` (these networks take no time input).
        eos_token_id: end-of-sequence id from the network's config, or ``None``.
        pad_token_id: padding id from the network's config, or ``None``.
    """

    adapter: str
    mask_token_id: int
    vocab_size: int
    max_position_embeddings: int | None = None
    time_conditioning: bool = False
    eos_token_id: int | None = None
    pad_token_id: int | None = None


def _first_int(config: Any, names: tuple[str, ...]) -> int | None:
    for name in names:
        value = token_id(getattr(config, name, None))
        if value is not None and value > 0:
            return value
    return None


class HubDiffusionLM(nn.Module):
    """Base adapter: padding handling, float32 logits, unknown ids at ``-inf``.

    Args:
        model: the wrapped network (an ``nn.Module`` whose output has ``.logits`` or is a tuple
            whose first item is the logits).
        mask_token_id: the mask id.
        vocab_size: ``V`` (default: the network config's ``vocab_size``).
        num_tokens: ids ``>= num_tokens`` are not real tokens (``-inf`` logits); default ``V``.
        max_length: longest input (default: from the network config).
        padding: ``"crop"`` or ``"mask"`` (default: the adapter's :attr:`default_padding`).
    """

    adapter = "hub"
    default_padding = "crop"
    padding_modes: tuple[str, ...] = PADDING_MODES

    def __init__(
        self,
        model: nn.Module,
        *,
        mask_token_id: int,
        vocab_size: int | None = None,
        num_tokens: int | None = None,
        max_length: int | None = None,
        padding: str | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        base = getattr(model, "config", None)
        if vocab_size is None:
            vocab_size = _first_int(base, ("vocab_size", "embedding_size"))
        if vocab_size is None:
            raise ConfigError(
                f"cannot tell the vocabulary size of this {self.adapter} model: pass vocab_size="
            )
        if isinstance(mask_token_id, bool) or not isinstance(mask_token_id, int):
            raise ConfigError(f"mask_token_id must be an int, got {mask_token_id!r}")
        if not 0 <= mask_token_id < vocab_size:
            raise ConfigError(
                f"mask id {mask_token_id} is outside the vocabulary of {vocab_size}; pass the mask "
                "id the model was trained with (mask_token_id=...)"
            )
        if max_length is None:
            max_length = _first_int(
                base, ("max_position_embeddings", "max_sequence_length", "n_positions")
            )
        padding = self.default_padding if padding is None else padding
        if padding not in self.padding_modes:
            raise ConfigError(
                f"padding={padding!r} is not available for {self.adapter} models; choose one of "
                f"{list(self.padding_modes)}" + self._padding_note()
            )
        self.padding = padding
        self.num_tokens = vocab_size if num_tokens is None else min(int(num_tokens), vocab_size)
        self.config = HubConfig(
            adapter=self.adapter,
            mask_token_id=mask_token_id,
            vocab_size=vocab_size,
            max_position_embeddings=max_length,
            eos_token_id=token_id(getattr(base, "eos_token_id", None)),
            pad_token_id=token_id(getattr(base, "pad_token_id", None)),
        )

    def _padding_note(self) -> str:
        return ""

    # -- the protocol ---------------------------------------------------------------------------
    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor:
        """Logits ``[B, L, V]`` (float32) for ``input_ids`` ``[B, L]``.

        Args:
            input_ids: token ids ``[B, L]``.
            attention_mask: ``[B, L]``, 1 = real token, 0 = left padding; ``None`` = no padding.
        """
        extra = {k: v for k, v in kwargs.items() if v is not None}
        if extra:
            raise ConfigError(
                f"{self.adapter} models take only input_ids and attention_mask, got "
                f"{sorted(extra)}; drop those sampling settings (conditioning, guidance)"
            )
        if attention_mask is None or bool(attention_mask.bool().all()):
            logits = self._call(input_ids, None)
        elif self.padding == "crop":
            logits = self._cropped(input_ids, attention_mask)
        else:
            logits = self._call(input_ids, attention_mask.long())
        logits = logits.float()
        if self.num_tokens < logits.shape[-1]:
            logits = logits.clone()
            logits[..., self.num_tokens :] = float("-inf")
        return logits

    def _cropped(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """One call per distinct left-padding length, each on the columns after the padding."""
        mask = attention_mask.bool()
        pads = (~mask).sum(dim=1)  # [B]
        columns = torch.arange(mask.shape[1], device=mask.device)[None, :]
        if not bool((mask == (columns >= pads[:, None])).all()):
            raise ConfigError(
                "attention_mask must be left padding (zeros, then ones, in every row); pad "
                "prompts on the left"
            )
        out: torch.Tensor | None = None
        for pad in sorted(set(pads.tolist())):
            rows = (pads == pad).nonzero(as_tuple=True)[0]
            part = self._call(input_ids[rows, pad:], None)  # [b, L - pad, V]
            if out is None:
                out = part.new_zeros(input_ids.shape + (part.shape[-1],))
            out[rows, pad:] = part
        assert out is not None
        return out

    def _call(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Raw logits aligned with ``input_ids`` (subclasses); ``attention_mask`` is ``[B, L]``."""
        raise NotImplementedError

    @staticmethod
    def _logits(out: Any) -> torch.Tensor:
        if isinstance(out, torch.Tensor):
            return out
        if hasattr(out, "logits"):
            return out.logits
        return out[0]

    # -- conveniences ---------------------------------------------------------------------------
    def gradient_checkpointing_enable(self) -> None:
        """Recompute activations in the backward pass (less memory for fine-tuning)."""
        model = self.model
        if getattr(model, "supports_gradient_checkpointing", False):
            # transformers 5 renamed it; the old name still works there, with a warning
            enable = getattr(model, "activation_checkpointing_enable", None)
            (enable or model.gradient_checkpointing_enable)()
            return
        raise ConfigError(
            f"this {type(model).__name__} does not support gradient checkpointing; load it "
            "without gradient_checkpointing=True"
        )

    def save_pretrained(self, directory: str | Path, **kwargs: Any) -> None:
        """Save the wrapped network (its ``config.json`` tells the loader which adapter)."""
        self.model.save_pretrained(str(directory), **kwargs)


class LLaDAAdapter(HubDiffusionLM):
    """LLaDA-style networks: ``model(input_ids).logits``, never an attention mask (``crop``)."""

    adapter = "llada"
    default_padding = "crop"
    padding_modes = ("crop",)

    def _padding_note(self) -> str:
        return (
            " (LLaDA's modelling code turns attention causal when it is given an attention mask, "
            "so padded rows are run without their padding instead)"
        )

    def _call(self, input_ids, attention_mask):
        return self._logits(self.model(input_ids=input_ids))

    def gradient_checkpointing_enable(self) -> None:
        """LLaDA's own switch (``set_activation_checkpointing("whole_layer")``), else HF's."""
        inner = getattr(self.model, "model", None)
        if callable(getattr(inner, "set_activation_checkpointing", None)):
            inner.set_activation_checkpointing("whole_layer")
            return
        super().gradient_checkpointing_enable()


class DreamAdapter(HubDiffusionLM):
    """Dream-style networks: output ``i`` predicts token ``i + 1``; the adapter un-shifts."""

    adapter = "dream"
    default_padding = "mask"

    def _call(self, input_ids, attention_mask):
        if attention_mask is None:
            raw = self._logits(self.model(input_ids, attention_mask="full", position_ids=None))
            return torch.cat([raw[:, :1], raw[:, :-1]], dim=1)
        keys = attention_mask.bool()[:, None, None, :]  # [B, 1, 1, L]
        keys = keys.expand(-1, 1, input_ids.shape[1], -1)  # [B, 1, L, L]
        positions = (attention_mask.cumsum(dim=-1) - 1).masked_fill(attention_mask == 0, 1)
        raw = self._logits(self.model(input_ids, attention_mask=keys, position_ids=positions))
        # output i - 1 for position i, except at each row's first real token (as when alone)
        columns = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :]
        first = (positions == 0) & attention_mask.bool()
        source = torch.where(first, columns, (columns - 1).clamp(min=0))  # [B, L]
        return raw.gather(1, source[..., None].expand(-1, -1, raw.shape[-1]))


class MaskedLMAdapter(HubDiffusionLM):
    """Any ``AutoModelForMaskedLM``: 2-D attention mask and ``position_ids`` for padding."""

    adapter = "masked_lm"
    default_padding = "mask"

    def __init__(self, model: nn.Module, **kwargs: Any) -> None:
        takes_positions = "position_ids" in inspect.signature(model.forward).parameters
        if not takes_positions:
            if kwargs.get("padding") == "mask":
                raise ConfigError(
                    f"{type(model).__name__}.forward takes no position_ids, so padding='mask' "
                    "would shift its positions; use padding='crop'"
                )
            kwargs.setdefault("padding", "crop")
        super().__init__(model, **kwargs)

    def _call(self, input_ids, attention_mask):
        if attention_mask is None:
            return self._logits(self.model(input_ids=input_ids))
        positions = (attention_mask.cumsum(dim=-1) - 1).clamp(min=0)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions)
        return self._logits(out)


_CLASSES: dict[str, type[HubDiffusionLM]] = {
    "llada": LLaDAAdapter,
    "dream": DreamAdapter,
    "masked_lm": MaskedLMAdapter,
}


# -- detection and loading --------------------------------------------------------------------


def read_config_json(location: str) -> dict[str, Any]:
    """``config.json`` of a local directory or a hub name (the hub needs internet)."""
    path = Path(location) / "config.json"
    try:
        if not path.is_file():
            from transformers.utils import cached_file

            path = Path(cached_file(location, "config.json"))
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot read the config.json of {location}: {e}") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{location}: config.json is not a JSON object")
    return data


def detect_adapter(config: dict[str, Any]) -> str:
    """The adapter for a ``config.json`` dict, from ``model_type``, ``architectures``, ``auto_map``.

    ``"proseco"`` for the bundled DiT, ``"llada"`` / ``"dream"`` for those families (by name or by
    their remote-code module names), else ``"masked_lm"``.
    """
    model_type = str(config.get("model_type", "")).lower()
    names = [str(a).lower() for a in config.get("architectures") or []]
    auto_map = config.get("auto_map") or {}
    modules = [str(v).lower() for v in (auto_map.values() if isinstance(auto_map, dict) else [])]
    words = [model_type, *names, *modules]
    if model_type.startswith("proseco"):
        return "proseco"
    if any("llada" in w for w in words):
        return "llada"
    if any("dream" in w for w in words):
        return "dream"
    return "masked_lm"


def wrap(
    model: nn.Module,
    adapter: str,
    *,
    tokenizer: Any = None,
    mask_token_id: int | None = None,
    padding: str | None = None,
) -> HubDiffusionLM:
    """Wrap an already-loaded network in the adapter named ``adapter``.

    The mask id is ``mask_token_id`` if given, else the network config's ``mask_token_id``, else
    the tokenizer's mask token (:func:`proseco.special_tokens.resolve_special_ids`), else
    (``llada``) 126336. ``masked_lm`` models with a
    tokenizer get ``-inf`` logits for ids beyond the tokenizer's vocabulary.
    """
    if adapter not in _CLASSES:
        raise ConfigError(
            f"unknown adapter {adapter!r}; choose one of {list(_CLASSES)} (or 'proseco' for the "
            "bundled DiT, which needs no adapter)"
        )
    mask = resolve_special_ids(model, tokenizer, mask=mask_token_id).mask
    if mask is None and adapter == "llada":
        mask = LLADA_MASK_ID
    if mask is None:
        raise ConfigError(
            f"no mask token for this {adapter} model: its config and tokenizer name none; pass "
            "mask_token_id=<id>"
        )
    num_tokens = len(tokenizer) if adapter == "masked_lm" and tokenizer is not None else None
    return _CLASSES[adapter](model, mask_token_id=mask, num_tokens=num_tokens, padding=padding)


def load_hub_model(
    location: str,
    adapter: str,
    *,
    tokenizer: Any = None,
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
    mask_token_id: int | None = None,
    padding: str | None = None,
) -> HubDiffusionLM:
    """Load ``location`` (a directory or hub name) and wrap it in the ``adapter``.

    ``llada`` and ``dream`` load through ``AutoModel`` (their remote code needs
    ``trust_remote_code=True``), ``masked_lm`` through ``AutoModelForMaskedLM``.

    Raises:
        proseco.errors.ModelLoadError: the network cannot be loaded (the message says why).
    """
    from transformers import AutoModel, AutoModelForMaskedLM

    if adapter not in _CLASSES:
        wrap(nn.Module(), adapter)  # raises the error naming the choices
    auto = AutoModelForMaskedLM if adapter == "masked_lm" else AutoModel
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if dtype is not None:
        kwargs["dtype"] = dtype
    try:
        model = auto.from_pretrained(location, **kwargs)
    except Exception as e:  # transformers raises many types for unreadable checkpoints
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = "check that its config.json and weights are complete"
        if not trust_remote_code and adapter in ("llada", "dream"):
            hint = f"{adapter} models ship their own modelling code: pass trust_remote_code=True"
        raise ModelLoadError(f"cannot load the {adapter} model {location}: {reason}; {hint}") from e
    return wrap(model, adapter, tokenizer=tokenizer, mask_token_id=mask_token_id, padding=padding)
