"""Train the shipped byte-level BPE (``src/proseco/assets/text/kjv-bpe-4096``) on the KJV.

Only the training chapters are used: the same held-out chapters as the text recipes
(``data.validation_fraction`` 0.05, ``data.seed`` 42 through ``split_records``), so validation
text never shapes the vocabulary.

    python benchmarks/train_text_bpe.py [--vocab-size 4096] [--out src/proseco/assets/text/kjv-bpe-4096]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from proseco.data.bpe import train_bpe
from proseco.data.corpus import read_corpus
from proseco.data.text import split_records

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="corpus:kjv")
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--validation-fraction", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default=str(ROOT / "src/proseco/assets/text/kjv-bpe-4096"))
    args = parser.parse_args()
    train, val = split_records(read_corpus(args.source), args.validation_fraction, args.seed)
    tokenizer = train_bpe([d["text"] for d in train], args.vocab_size)
    tokenizer.save_pretrained(args.out)
    n_tokens = sum(len(ids) for ids in tokenizer([d["text"] for d in val])["input_ids"])
    n_words = sum(len(d["text"].split()) for d in val)
    print(
        f"{len(tokenizer)} tokens -> {args.out}; trained on {len(train)} documents; "
        f"validation: {n_words} words = {n_tokens} tokens ({n_tokens / n_words:.2f} per word)"
    )


if __name__ == "__main__":
    main()
