"""Building the training splits: held-out documents, the on-disk cache and input checks."""

from __future__ import annotations

import json

import pytest
import torch

from proseco.data.char_tokenizer import char_tokenizer
from proseco.training.config import DataSection
from proseco.training.splits import build_splits


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


def _corpus(tmp_path, n=20):
    path = tmp_path / "corpus.txt"
    path.write_text(
        "\n\n".join(f"paragraph number {i} of the little test corpus." for i in range(n))
    )
    return path


def test_splits_hold_out_documents_and_are_cached(tmp_path, tok):
    cfg = DataSection(
        kind="text", source=str(_corpus(tmp_path)), max_length=16, validation_fraction=0.2,
        cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    train, val = build_splits(cfg, tok)
    assert train.length == 16 and len(train) > 0 and len(val) > 0
    cached = list((tmp_path / "cache").glob("text-*.safetensors"))
    assert len(cached) == 1
    again, _ = build_splits(cfg, tok)  # from the cache
    assert torch.equal(again.tensors["input_ids"], train.tensors["input_ids"])
    longer = DataSection(**{**cfg.__dict__, "max_length": 20})
    build_splits(longer, tok)
    assert len(list((tmp_path / "cache").glob("text-*.safetensors"))) == 2


def test_editing_the_source_invalidates_the_cache(tmp_path, tok):
    path = _corpus(tmp_path)
    cfg = DataSection(kind="text", source=str(path), max_length=16, validation_fraction=0,
                      cache_dir=str(tmp_path / "cache"))  # fmt: skip
    n1 = len(build_splits(cfg, tok)[0])
    path.write_text(path.read_text() * 2)
    assert len(build_splits(cfg, tok)[0]) > n1


def _labelled(tmp_path, labels):
    path = tmp_path / "labelled.jsonl"
    path.write_text(
        "".join(json.dumps({"text": f"seq {i}", "y": y}) + "\n" for i, y in enumerate(labels))
    )
    return path


def test_labels_are_read_and_range_checked(tmp_path, tok):
    base = {"kind": "text", "label": "y", "num_classes": 2, "max_length": 12,
            "validation_fraction": 0, "cache_dir": str(tmp_path / "c")}  # fmt: skip
    train, _ = build_splits(DataSection(source=str(_labelled(tmp_path, [0, 1, 1])), **base), tok)
    assert train.tensors["labels"].tolist() == [0, 1, 1]
    assert "attention_mask" in train.tensors  # labelled records are padded, one per row
    with pytest.raises(ValueError, match=r"labels lie in \[0, 2\] but data.num_classes=2"):
        build_splits(DataSection(source=str(_labelled(tmp_path, [0, 2])), **base), tok)
    with pytest.raises(ValueError, match="labels must be integers"):
        build_splits(DataSection(source=str(_labelled(tmp_path, [0, "big"])), **base), tok)


def test_num_classes_without_labels_is_an_error(tmp_path, tok):
    cfg = DataSection(kind="text", source=str(_corpus(tmp_path)), num_classes=2, max_length=16,
                      cache_dir=str(tmp_path / "c"))  # fmt: skip
    with pytest.raises(ValueError, match="has no labels; set data.label"):
        build_splits(cfg, tok)


def test_mask_token_inside_the_data_is_an_error(tmp_path, tok):
    path = tmp_path / "m.txt"
    path.write_text("a <mask> in the text " * 10)
    cfg = DataSection(kind="text", source=str(path), max_length=8, validation_fraction=0,
                      cache_dir=str(tmp_path / "c"))  # fmt: skip
    with pytest.raises(ValueError, match="contains the mask token"):
        build_splits(cfg, tok)


def test_empty_validation_split_is_an_error(tmp_path, tok):
    path = tmp_path / "two.txt"
    path.write_text("a long enough paragraph of text for one chunk\n\nhi")
    cfg = DataSection(kind="text", source=str(path), max_length=16, validation_fraction=0.5,
                      seed=0, cache_dir=str(tmp_path / "c"))  # fmt: skip
    with pytest.raises(ValueError, match="split is empty|fewer than one chunk"):
        build_splits(cfg, tok)
