"""Text data: the char tokenizer, local readers, wrapped/padded pretraining layouts and SFT pairs."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import pytest
import torch

from proseco.data.char_tokenizer import CHAR_VOCAB, char_tokenizer
from proseco.data.text import (
    encode_pretraining,
    encode_sft,
    read_records,
    special_ids,
    split_records,
)


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


def _ids(tok, text):
    return tok.encode(text, add_special_tokens=False)


def test_char_tokenizer_round_trips_and_saves(tok, tmp_path):
    text = "Hello, world!\n\tThe end."
    assert tok.decode(_ids(tok, text)) == text
    assert len(tok) == len(CHAR_VOCAB) == 102
    assert special_ids(tok) == {"bos": 0, "eos": 1, "pad": 3, "mask": 2}
    assert _ids(tok, "é") == [tok.unk_token_id]
    from transformers import AutoTokenizer

    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert _ids(again, text) == _ids(tok, text) and again.mask_token_id == 2


def test_wrapped_layout_concatenates_with_eos_and_frames_chunks(tok):
    out = encode_pretraining(["ab", "cde"], tok, max_length=5, layout="wrapped")
    a, b, c, d, e = (_ids(tok, ch)[0] for ch in "abcde")
    bos, eos = tok.bos_token_id, tok.eos_token_id
    # stream a b EOS c d e EOS -> chunks of 3: [a b EOS] [c d e]; the last EOS is dropped
    assert out["input_ids"].tolist() == [[bos, a, b, eos, eos], [bos, c, d, e, eos]]
    assert out["loss_mask"].all() and out["noise_mask"].all() and "attention_mask" not in out


def test_wrapped_layout_with_too_little_text_is_an_error(tok):
    with pytest.raises(ValueError, match="fewer than one chunk of 30"):
        encode_pretraining(["short"], tok, max_length=32, layout="wrapped")


def test_padded_layout_masks_padding_unless_trained_on(tok):
    out = encode_pretraining(["ab", "c"], tok, max_length=5, layout="padded")
    pad = tok.pad_token_id
    assert out["input_ids"][1].tolist()[3:] == [pad, pad]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]]
    assert torch.equal(out["loss_mask"], out["attention_mask"])
    on_pad = encode_pretraining(
        ["ab", "c"], tok, max_length=5, layout="padded", train_on_padding=True
    )
    assert on_pad["loss_mask"].all() and "attention_mask" not in on_pad


def test_padded_layout_overlong_error_truncate_and_drop(tok):
    docs = ["abcdefgh", "ab"]
    with pytest.raises(ValueError, match="has 10 tokens, longer than data.max_length=6"):
        encode_pretraining(docs, tok, max_length=6, layout="padded")
    cut = encode_pretraining(docs, tok, max_length=6, layout="padded", overlong="truncate")
    assert cut["input_ids"].shape == (2, 6) and cut["record_index"].tolist() == [0, 1]
    dropped = encode_pretraining(docs, tok, max_length=6, layout="padded", overlong="drop")
    assert dropped["record_index"].tolist() == [1]


def test_sft_prompt_is_neither_noised_nor_in_the_loss(tok):
    out = encode_sft(["Q: 1+1?", "Hi"], ["2", "Hello"], tok, max_length=16)
    prompt_len = [1 + len("Q: 1+1?"), 1 + len("Hi")]  # BOS + prompt
    answer_len = [len("2") + 1, len("Hello") + 1]  # response + EOS
    for i in range(2):
        p, a = prompt_len[i], answer_len[i]
        assert out["prompt_mask"][i, :p].all() and not out["prompt_mask"][i, p:].any()
        assert not out["loss_mask"][i, :p].any() and not out["noise_mask"][i, :p].any()
        assert out["loss_mask"][i, p : p + a].all() and not out["loss_mask"][i, p + a :].any()
        assert out["input_ids"][i, p + a - 1] == tok.eos_token_id
    on_pad = encode_sft(["Hi"], ["Hello"], tok, max_length=16, train_on_padding=True)
    assert on_pad["loss_mask"][0, 3:].all() and not on_pad["loss_mask"][0, :3].any()


def test_sft_overlong_pairs(tok):
    with pytest.raises(ValueError, match="prompt \\+ response"):
        encode_sft(["abc"], ["defghij"], tok, max_length=8)
    cut = encode_sft(["abc"], ["defghij"], tok, max_length=8, overlong="truncate")
    assert cut["loss_mask"].sum() == 4 and cut["prompt_mask"].sum() == 4
    with pytest.raises(ValueError, match="leaving no room for the response"):
        encode_sft(["abcdefgh"], ["x"], tok, max_length=8)


def test_sft_uses_the_chat_template_when_the_tokenizer_has_one(tok):
    templated = char_tokenizer()
    templated.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    out = encode_sft(["hi"], ["yo"], templated, max_length=32)
    n_prompt = len("<user>hi<assistant>")
    assert int(out["prompt_mask"].sum()) == n_prompt
    assert tok.decode(out["input_ids"][0, :n_prompt].tolist()) == "<user>hi<assistant>"


def test_readers_for_txt_jsonl_csv_and_directories(tmp_path):
    (tmp_path / "a.txt").write_text("para one\nline two\n\n\npara two\n")
    (tmp_path / "b.jsonl").write_text(
        json.dumps({"text": "x"}) + "\n\n" + json.dumps({"text": "y"}) + "\n"
    )
    (tmp_path / "c.csv").write_text("text,label\nhello,1\n")
    assert read_records(str(tmp_path / "a.txt")) == [
        {"text": "para one\nline two"},
        {"text": "para two"},
    ]
    assert [r["text"] for r in read_records(str(tmp_path / "b.jsonl"))] == ["x", "y"]
    assert read_records(str(tmp_path / "c.csv")) == [{"text": "hello", "label": "1"}]
    assert len(read_records(str(tmp_path))) == 5
    assert len(read_records(str(tmp_path / "*.jsonl"), max_records=1)) == 1


def test_missing_empty_and_malformed_sources_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_records(str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="holds no records"):
        read_records(str(tmp_path / "empty.txt"))
    (tmp_path / "bad.jsonl").write_text("{not json}\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:1 is not valid JSON"):
        read_records(str(tmp_path / "bad.jsonl"))
    with pytest.raises(ValueError, match="matches no files"):
        read_records(str(tmp_path / "*.parquet"))


def test_hub_name_without_datasets_asks_for_the_text_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ImportError, match=r'pip install "proseco\[text\]"'):
        read_records("someone/some-corpus")


def test_hub_names_go_through_datasets_load_dataset(monkeypatch):
    calls = []

    def load_dataset(name, config_name, split):
        calls.append((name, config_name, split))
        return [{"text": "from the hub"}]

    monkeypatch.setitem(sys.modules, "datasets", SimpleNamespace(load_dataset=load_dataset))
    records = read_records("org/corpus", split="validation", hub_config="v1")
    assert records == [{"text": "from the hub"}] and calls == [("org/corpus", "v1", "validation")]


def test_parquet_is_read_with_pyarrow_or_asks_for_it(tmp_path):
    path = tmp_path / "data.parquet"
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        path.write_bytes(b"PAR1")
        with pytest.raises(ImportError, match="pip install pyarrow"):
            read_records(str(path))
        return
    pq.write_table(pa.table({"text": ["a", "b"]}), path)
    assert read_records(str(path)) == [{"text": "a"}, {"text": "b"}]


def test_package_sources_resolve_to_files_shipped_in_the_package():
    from proseco.data.text import list_source_files

    files = list_source_files("package:assets/text/tiny_corpus.txt")
    assert files is not None and files[0].is_file()
    assert "proseco" in str(files[0]) and files[0].stat().st_size > 1000
    assert list_source_files("package:assets/text/no_such_file.txt") is None


def test_split_records_holds_out_a_seeded_share_in_order():
    records = [{"text": str(i)} for i in range(10)]
    train, val = split_records(records, 0.3, seed=0)
    assert len(val) == 3 and len(train) == 7
    assert sorted(train + val, key=lambda r: int(r["text"])) == records
    assert [int(r["text"]) for r in val] == sorted(int(r["text"]) for r in val)
    assert split_records(records, 0.3, seed=0) == (train, val)
    assert split_records(records, 0, seed=0) == (records, [])
    with pytest.raises(ValueError, match="leaves nothing to train on"):
        split_records(records[:1], 0.5, seed=0)
