"""Tiny hub-style models built locally from a config (no downloads), shared by tests."""

from __future__ import annotations

from pathlib import Path

import torch

CHARS = [chr(c) for c in range(32, 127)]


def char_word_tokenizer(chat_template: str | None = None):
    """A BERT-style tokenizer over printable characters: [PAD] 0, [CLS] 1, [SEP] 2, [MASK] 3."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, "[MASK]": 3, "[UNK]": 4}
    vocab |= {c: i + 5 for i, c in enumerate(CHARS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 1), ("[SEP]", 2)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", unk_token="[UNK]",
    )  # fmt: skip
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def save_tiny_bert(path: Path, *, seed: int = 0, chat_template: str | None = None) -> Path:
    """A 2-layer ``BertForMaskedLM`` (tied input/output embeddings, as BERT's default) and its
    character tokenizer, written with ``save_pretrained`` like a downloaded checkpoint."""
    from transformers import BertConfig, BertForMaskedLM

    tokenizer = char_word_tokenizer(chat_template)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=64, pad_token_id=0,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = BertForMaskedLM(config)
    assert model.config.tie_word_embeddings
    path = Path(path)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path
