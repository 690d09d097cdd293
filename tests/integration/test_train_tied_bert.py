"""A tied-embedding masked LM (a tiny ``BertForMaskedLM``) fine-tunes through its checkpoints.

BERT ties its output projection to the word embeddings (and the decoder bias to the prediction
bias); safetensors refuses to write tensors that share memory, so every checkpoint used to crash
(D1). The shipped ``sft-cpu-tiny`` recipe is run with ``--model.pretrained DIR`` alone, as its
header says (D5): no architecture overrides, no tokenizer flag.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from tests.tiny_hub import save_tiny_bert

from proseco.commands import main

pytest.importorskip("tokenizers")


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _train(tmp_path, bert, out, *extra):
    argv = [
        "train", "sft-cpu-tiny", "--model.pretrained", str(bert), "--output-dir", str(out),
        "--train.save_every", "2", "--train.eval_every", "0", "--train.global_batch_size", "8",
        "--train.progress_bar", "false", "--data.cache_dir", str(tmp_path / "cache"), *extra,
    ]  # fmt: skip
    assert main(argv) == 0


def test_a_tied_bert_checkpoints_and_resumes_exactly(tmp_path):
    bert = save_tiny_bert(tmp_path / "bert")
    _train(tmp_path, bert, tmp_path / "straight", "--train.max_steps", "4")
    _train(tmp_path, bert, tmp_path / "resumed", "--train.max_steps", "2")
    _train(tmp_path, bert, tmp_path / "resumed", "--train.max_steps", "4", "--resume")

    saved = load_file(str(tmp_path / "straight/checkpoints/step-00000002/model.safetensors"))
    assert "model.bert.embeddings.word_embeddings.weight" in saved  # tied: written once
    assert "model.cls.predictions.decoder.weight" not in saved
    straight = load_file(str(tmp_path / "straight/final/model.safetensors"))
    resumed = load_file(str(tmp_path / "resumed/final/model.safetensors"))
    assert straight.keys() == resumed.keys()
    for name, value in straight.items():
        assert torch.equal(resumed[name], value), name
    base = load_file(str(bert / "model.safetensors"))
    key = "bert.embeddings.word_embeddings.weight"
    assert not torch.equal(straight[key], base[key])  # it trained

    from proseco.pretrained import load_pretrained

    model, tokenizer, _ = load_pretrained(tmp_path / "resumed/final")
    inner = model.model  # the masked_lm adapter's network: still tied after the round trip
    assert inner.cls.predictions.decoder.weight is inner.bert.embeddings.word_embeddings.weight
    assert tokenizer.mask_token_id == 3
