"""A character-level tokenizer for small text experiments (a Hugging Face fast tokenizer).

The vocabulary is fixed, so it never depends on the corpus: the specials ``<bos>=0 <eos>=1
<mask>=2 <pad>=3 <unk>=4`` (the same ids as the SMILES tokenizer), then newline, tab, space and
the 94 printable ASCII characters — 102 ids. Any other character maps to ``<unk>``.

It is a plain ``tokenizers`` object, so ``save_pretrained`` writes a ``tokenizer.json`` that
``transformers.AutoTokenizer.from_pretrained`` reloads without custom code.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerFast

__all__ = ["CHAR_SPECIAL_TOKENS", "CHAR_VOCAB", "char_tokenizer"]

CHAR_SPECIAL_TOKENS: tuple[str, ...] = ("<bos>", "<eos>", "<mask>", "<pad>", "<unk>")
CHAR_VOCAB: tuple[str, ...] = (
    *CHAR_SPECIAL_TOKENS,
    "\n",
    "\t",
    " ",
    *(chr(c) for c in range(33, 127)),
)


def char_tokenizer(model_max_length: int = 1_000_000) -> PreTrainedTokenizerFast:
    """Build the character tokenizer.

    Args:
        model_max_length: recorded in the tokenizer config.

    Returns:
        A ``PreTrainedTokenizerFast`` with ``bos/eos/mask/pad/unk`` set; ``decode`` joins
        characters without spaces.

    Example:
        >>> tok = char_tokenizer()
        >>> tok.decode(tok.encode("Hi!", add_special_tokens=False))
        'Hi!'
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {token: i for i, token in enumerate(CHAR_VOCAB)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<bos>",
        eos_token="<eos>",
        mask_token="<mask>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=model_max_length,
    )
