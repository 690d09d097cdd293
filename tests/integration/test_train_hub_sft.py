"""ProSeCo SFT of a LLaDA-style hub model (remote code) with LoRA, end to end on CPU.

A tiny fake LLaDA (the calling convention of the real one, from ``test_hub_adapters``) is
fine-tuned on prompt/response pairs with LLaDA's conventions: a chat template, LLaDA's mask
token named by ``data.mask_token``, EOS padding that carries the loss. The merged export loads
back through ``load_pretrained`` as a LLaDA adapter.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("peft")
pytest.importorskip("tokenizers")

from tests.unit.test_hub_adapters import FAKE_LLADA, _remote_code_dir  # noqa: E402

from proseco.pretrained import load_pretrained  # noqa: E402
from proseco.training import train  # noqa: E402

WORDS = [f"w{i}" for i in range(36)]  # ids 3..38


@pytest.fixture
def llada_dir(tmp_path, monkeypatch):
    return _remote_code_dir(
        tmp_path / "llada", FAKE_LLADA, "modeling_llada", "FakeLLaDAConfig", "FakeLLaDAModelLM",
        "AutoModel", monkeypatch,
    )  # fmt: skip


def _llada_like_tokenizer(path):
    """40 tokens like LLaDA's: BOS, EOS (also padding), an end-of-turn, words, <|mdm_mask|> = 39."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "<|eot|>": 2}
    vocab |= {w: i + 3 for i, w in enumerate(WORDS)} | {"<|mdm_mask|>": 39}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )  # fmt: skip
    tokenizer.chat_template = (
        "{% for m in messages %}<|startoftext|> {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}<|eot|>{% endif %}"
    )
    tokenizer.save_pretrained(str(path))
    return path


def test_lora_proseco_sft_of_a_llada_style_model_exports_a_loadable_llada(tmp_path, llada_dir):
    g = torch.Generator().manual_seed(0)
    with (tmp_path / "pairs.jsonl").open("w") as f:
        for _ in range(16):
            words = [WORDS[int(i)] for i in torch.randint(0, 36, (5,), generator=g)]
            f.write(json.dumps({"prompt": " ".join(words[:3]), "response": " ".join(words[3:])}))
            f.write("\n")
    recipe = {
        "model": {"pretrained": str(llada_dir), "trust_remote_code": True,
                  "lora": {"r": 2, "target_modules": ["qkv", "out"]}},
        "data": {"kind": "sft", "source": str(tmp_path / "pairs.jsonl"),
                 "tokenizer": str(_llada_like_tokenizer(tmp_path / "tok")),
                 "mask_token": "<|mdm_mask|>", "pad_with": "eos", "train_on_padding": True,
                 "max_length": 12, "validation_fraction": 0.0,
                 "cache_dir": str(tmp_path / "cache")},
        "loss": {"sc_weight": 1.0},
        "optim": {"lr": 0.05},
        "train": {"max_steps": 2, "global_batch_size": 8, "ema_decay": 0.0,
                  "progress_bar": False, "log_every": 1},
    }  # fmt: skip
    result = train(recipe, tmp_path / "run")
    assert result.train_loss is not None and result.train_loss > 0

    model, tokenizer, _ = load_pretrained(result.final_dir, trust_remote_code=True)
    assert model.config.adapter == "llada" and model.config.mask_token_id == 39
    assert tokenizer.mask_token_id == 39  # LLaDA's mask token, not a new one
    base = load_file(str(llada_dir / "model.safetensors"))
    merged = load_file(str(result.final_dir / "model.safetensors"))
    assert sorted(merged) == sorted(base)
    assert torch.equal(merged["model.wte.weight"], base["model.wte.weight"])  # not adapted
    assert not torch.equal(merged["model.blocks.0.qkv.weight"], base["model.blocks.0.qkv.weight"])
    ids = torch.randint(0, 39, (2, 12), generator=g)
    with torch.no_grad():
        assert model(ids).shape == (2, 12, 40)


def test_a_llada_model_refuses_hidden_padding(tmp_path, llada_dir):
    (tmp_path / "pairs.jsonl").write_text(json.dumps({"prompt": "w1", "response": "w2"}) + "\n")
    recipe = {
        "model": {"pretrained": str(llada_dir), "trust_remote_code": True},
        "data": {"kind": "sft", "source": str(tmp_path / "pairs.jsonl"),
                 "tokenizer": str(_llada_like_tokenizer(tmp_path / "tok")),
                 "mask_token": "<|mdm_mask|>", "max_length": 8, "validation_fraction": 0.0,
                 "cache_dir": str(tmp_path / "cache")},
        "train": {"max_steps": 1, "global_batch_size": 1, "progress_bar": False},
    }  # fmt: skip
    with pytest.raises(ValueError, match="pad_with: eos and data.train_on_padding: true"):
        train(recipe, tmp_path / "run")
    assert not (tmp_path / "run" / "config.yaml").exists()  # refused before writing
