"""Special token ids (mask, pad, BOS, EOS), resolved in one place by one rule.

Every command, the lm-eval harness, the server, training and the samplers ask
:func:`resolve_special_ids` instead of reading ``mask_token_id`` / ``eos_token_id`` / ... off
models and tokenizers themselves. For each id the first source that has one wins:

1. **an explicit argument** (``--mask-id``, ``mask_id=``, ``SamplingConfig.eos_id`` /
   ``pad_id``, ``bos_id=``);
2. **the id's owner**:

   * ``mask``: the **model config** (``config.mask_token_id``: the network was trained to
     denoise that id; a hub adapter sets it), then the **tokenizer**;
   * ``bos``, ``eos``, ``pad``: the **tokenizer** (the text layout is the tokenizer's: SFT data,
     chat templates and LLaDA's ``<|eot_id|>`` answers end with its EOS), then the **model
     config** (``bos_token_id`` ...), which is what a sampler without a tokenizer sees.

The tokenizer's own fallbacks: EOS falls back to SEP; BOS to CLS, then to its EOS (so
``[BOS] prompt`` works for BERT-style and GPT-2-style tokenizers alike). An id no source has is
``None``; :meth:`SpecialIds.require` turns missing ones into one clear error.

The padding a sampler writes before ragged prompts is :meth:`SpecialIds.padding`: the pad id,
else EOS, else a token that is not the mask.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

from proseco.errors import ConfigError

__all__ = [
    "SpecialIds",
    "model_special_ids",
    "resolve_special_ids",
    "token_id",
    "tokenizer_special_ids",
]

_NAMES = ("mask", "pad", "bos", "eos")


def token_id(value: Any) -> int | None:
    """A token id read from a config or tokenizer: an int (the first of a list: some hub configs
    give several EOS ids), else ``None``."""
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return None


@dataclass(frozen=True)
class SpecialIds:
    """Resolved ids; ``None`` where no source has one."""

    mask: int | None = None
    pad: int | None = None
    bos: int | None = None
    eos: int | None = None

    def as_dict(self) -> dict[str, int | None]:
        """``{"mask": ..., "pad": ..., "bos": ..., "eos": ...}``."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def require(self, names: Iterable[str], *, where: str = "") -> dict[str, int]:
        """The ids ``names`` as a dict; :class:`~proseco.errors.ConfigError` naming every
        missing one (``where`` prefixes the message, e.g. the model directory)."""
        names = list(names)
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            prefix = f"{where}: " if where else ""
            raise ConfigError(
                f"{prefix}no {'/'.join(missing)} token id: neither an argument, the model config "
                f"nor the tokenizer names one; pass it (e.g. --mask-id) or add it with "
                "tokenizer.add_special_tokens(...)"
            )
        return {n: getattr(self, n) for n in names}

    def padding(self) -> int:
        """The id written before a shorter prompt: the pad id, else EOS, else 0 (1 when the mask
        is 0). An inherited pad or EOS equal to the mask is skipped (prompts hold no masks)."""
        for value in (self.pad, self.eos):
            if value is not None and value != self.mask:
                return value
        return 0 if self.mask != 0 else 1


def tokenizer_special_ids(tokenizer: Any) -> SpecialIds:
    """The tokenizer's ids with its fallbacks (EOS -> SEP; BOS -> CLS -> EOS); all ``None`` for
    ``tokenizer=None``."""
    if tokenizer is None:
        return SpecialIds()
    eos = token_id(getattr(tokenizer, "eos_token_id", None))
    eos = token_id(getattr(tokenizer, "sep_token_id", None)) if eos is None else eos
    bos = token_id(getattr(tokenizer, "bos_token_id", None))
    bos = token_id(getattr(tokenizer, "cls_token_id", None)) if bos is None else bos
    return SpecialIds(
        mask=token_id(getattr(tokenizer, "mask_token_id", None)),
        pad=token_id(getattr(tokenizer, "pad_token_id", None)),
        bos=eos if bos is None else bos,
        eos=eos,
    )


def model_special_ids(model: Any) -> SpecialIds:
    """``mask_token_id``, ``pad_token_id``, ``bos_token_id``, ``eos_token_id`` of
    ``model.config``; ``None`` for each it lacks (all for ``model=None``)."""
    config = getattr(model, "config", None)
    return SpecialIds(**{n: token_id(getattr(config, f"{n}_token_id", None)) for n in _NAMES})


def resolve_special_ids(
    model: Any = None,
    tokenizer: Any = None,
    *,
    mask: int | None = None,
    pad: int | None = None,
    bos: int | None = None,
    eos: int | None = None,
) -> SpecialIds:
    """The special ids by the rule of this module: explicit > model config > tokenizer for the
    mask; explicit > tokenizer > model config for pad, BOS and EOS.

    Explicit values are passed through unchanged (the sampler checks them), so a wrong one gets
    the sampler's error naming the argument.
    """
    from_model, from_tokenizer = model_special_ids(model), tokenizer_special_ids(tokenizer)

    def first(explicit: Any, *sources: int | None) -> Any:
        if explicit is not None:
            return explicit
        return next((s for s in sources if s is not None), None)

    return SpecialIds(
        mask=first(mask, from_model.mask, from_tokenizer.mask),
        pad=first(pad, from_tokenizer.pad, from_model.pad),
        bos=first(bos, from_tokenizer.bos, from_model.bos),
        eos=first(eos, from_tokenizer.eos, from_model.eos),
    )
