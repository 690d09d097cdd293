"""LoRA SFT of a tiny pretrained DiT: only the adapters train, and both exports reload.

``model.lora.save: merged`` writes a plain model directory that ``load_pretrained`` loads and
whose logits equal the trained peft model's; ``adapter`` writes only the adapter, which
``load_adapter`` puts back on the base model with the same logits.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("peft")

from proseco.data.text import special_ids  # noqa: E402
from proseco.models.dit import ProsecoDiT, ProsecoDiTConfig  # noqa: E402
from proseco.pretrained import load_model, load_pretrained  # noqa: E402
from proseco.training import train  # noqa: E402
from proseco.training.build import build_tokenizer  # noqa: E402
from proseco.training.config import LoraSection  # noqa: E402
from proseco.training.lora import apply_lora, load_adapter  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from test_train_cpu import one_thread, tiny  # noqa: E402, F401 - one_thread is autouse

ARCH = {k: None for k in ("hidden_size", "num_layers", "num_heads", "cond_dim", "dropout")}


@pytest.fixture
def base_dir(tmp_path):
    """A tiny random DiT with the char tokenizer, saved like a pretrained checkpoint."""
    tok = build_tokenizer("char")
    ids = special_ids(tok)
    config = ProsecoDiTConfig.from_preset(
        "cpu-tiny", vocab_size=len(tok), max_length=48, hidden_size=32, num_layers=1,
        num_heads=2, cond_dim=16, dropout=0.0, mask_token_id=ids["mask"],
        pad_token_id=ids["pad"], bos_token_id=ids["bos"], eos_token_id=ids["eos"],
    )  # fmt: skip
    torch.manual_seed(0)
    model = ProsecoDiT(config)
    with torch.no_grad():  # a "pretrained" model: adaLN-zero gates at 0 would block gradients
        for param in model.parameters():
            param.normal_(0.0, 0.2)
    model.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    return tmp_path / "base"


def _run(tmp_path, base_dir, name, save):
    lora = LoraSection(r=4, target_modules=("qkv", "out"), save=save)
    config = tiny(
        tmp_path, "sft-cpu-tiny",
        model={**ARCH, "pretrained": str(base_dir), "lora": lora},
        train={"max_steps": 3, "global_batch_size": 8, "ema_decay": 0.0, "eval_every": 0,
               "log_every": 1},
        optim={"lr": 0.02, "warmup_steps": 0, "min_lr": 0.0},
    )  # fmt: skip
    return train(config, tmp_path / name)


def _trained_peft_model(base_dir, checkpoint):
    """The base model + adapters with the weights of the run's last checkpoint."""
    model = apply_lora(load_model(base_dir), LoraSection(r=4, target_modules=("qkv", "out")))
    model.load_state_dict(load_file(str(checkpoint / "model.safetensors")))
    return model.eval()


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_lora_trains_only_adapters_and_the_merged_export_loads_with_load_pretrained(
    tmp_path, base_dir
):
    result = _run(tmp_path, base_dir, "merged", "merged")
    base = load_file(str(base_dir / "model.safetensors"))
    saved = load_file(str(result.checkpoint / "model.safetensors"))
    lora_b = [k for k in saved if "lora_B" in k]
    assert len(lora_b) == 2 and all(saved[k].abs().sum() > 0 for k in lora_b)  # B left zero
    for name, value in base.items():  # every base weight is frozen
        key = name.replace("attn.qkv.", "attn.qkv.base_layer.").replace(
            "attn.out.", "attn.out.base_layer."
        )
        assert torch.equal(saved[f"base_model.model.{key}"], value), name

    model, tok, _ = load_pretrained(result.final_dir)
    assert type(model).__name__ == "ProsecoDiT" and tok is not None
    merged = load_file(str(result.final_dir / "model.safetensors"))
    assert sorted(merged) == sorted(base)
    assert not torch.equal(merged["blocks.0.attn.qkv.weight"], base["blocks.0.attn.qkv.weight"])
    assert torch.equal(merged["lm_head.weight"], base["lm_head.weight"])
    ids = torch.randint(4, len(tok), (2, 16), generator=torch.Generator().manual_seed(1))
    expected = _logits(_trained_peft_model(base_dir, result.checkpoint), ids)
    torch.testing.assert_close(_logits(model, ids), expected, rtol=1e-5, atol=1e-5)


def test_lora_adapter_export_reloads_on_the_base_model(tmp_path, base_dir):
    result = _run(tmp_path, base_dir, "adapter", "adapter")
    files = sorted(p.name for p in result.final_dir.iterdir())
    assert "adapter_model.safetensors" in files and "config.json" not in files
    recorded = json.loads((result.final_dir / "adapter_config.json").read_text())
    assert recorded["base_model_name_or_path"] == str(base_dir)
    model = load_adapter(result.final_dir)  # the base model named in adapter_config.json
    ids = torch.randint(4, 100, (2, 16), generator=torch.Generator().manual_seed(2))
    expected = _logits(_trained_peft_model(base_dir, result.checkpoint), ids)
    torch.testing.assert_close(_logits(model, ids), expected, rtol=1e-5, atol=1e-5)


def test_an_adapter_run_loads_like_a_model_directory_from_anywhere(
    tmp_path, base_dir, monkeypatch, caplog
):
    """D4: ``model.lora.save: adapter`` with a relative ``model.pretrained`` (as a user types it)
    gives a final/ folder that ``load_pretrained`` and ``proseco sample`` take from any
    directory; the trainable-parameter count is logged."""
    import logging

    from proseco.commands import main

    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO, logger="proseco.training")
    lora = LoraSection(r=4, target_modules=("qkv", "out"), save="adapter")
    config = tiny(
        tmp_path, "sft-cpu-tiny", model={**ARCH, "pretrained": "base", "lora": lora},
        train={"max_steps": 2, "global_batch_size": 8, "ema_decay": 0.0, "eval_every": 0},
        optim={"lr": 0.02, "warmup_steps": 0, "min_lr": 0.0},
    )  # fmt: skip
    result = train(config, "run")
    assert "LoRA r=4" in caplog.text and "trainable parameters of" in caplog.text
    final = (tmp_path / result.final_dir).resolve()
    recorded = json.loads((final / "adapter_config.json").read_text())
    assert recorded["base_model_name_or_path"] == str(base_dir.resolve())  # absolute

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    ids = torch.randint(4, 100, (2, 16), generator=torch.Generator().manual_seed(2))
    expected = _logits(load_adapter(final), ids)
    model, tokenizer, _ = load_pretrained(final)
    assert tokenizer is not None and type(model).__name__ == "ProsecoDiT"
    torch.testing.assert_close(_logits(model, ids), expected, rtol=1e-5, atol=1e-5)
    # an adapter_config.json naming its base relative to the adapter directory loads too
    recorded["base_model_name_or_path"] = "../../base"
    (final / "adapter_config.json").write_text(json.dumps(recorded))
    torch.testing.assert_close(_logits(load_pretrained(final).model, ids), expected)
    # and `proseco sample` takes the final/ folder, or the base with --lora
    for argv in ([str(final)], [str(base_dir), "--lora", str(final)]):
        out = elsewhere / "samples.jsonl"
        code = main(["sample", *argv, "--num-samples", "2", "--length", "8", "--steps", "4",
                     "--prompt", "hi", "--output", str(out), "--no-progress"])  # fmt: skip
        assert code == 0
        assert len(out.read_text().splitlines()) == 2
