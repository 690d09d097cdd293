"""SFT for hub models: chat template, LLaDA's EOS padding, known hub datasets, LoRA config,
the LLaDA recipes and the shipped Accelerate configs."""

from __future__ import annotations

import pytest
import torch
import yaml

from proseco.commands import main
from proseco.data.char_tokenizer import char_tokenizer
from proseco.data.sft_sources import check_sft_source, parse_mix
from proseco.data.text import encode_sft
from proseco.errors import ConfigError
from proseco.training.config import LoraSection
from proseco.training.config_io import (
    apply_overrides,
    config_diff,
    load_config,
    save_config,
    update_config,
)
from proseco.training.launch import accelerate_config, list_accelerate_configs
from proseco.training.lora import merged_state_dict

TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


@pytest.fixture(scope="module")
def templated():
    tok = char_tokenizer()
    tok.chat_template = TEMPLATE
    return tok


def _ids(tok, text):
    return tok.encode(text, add_special_tokens=False)


def test_chat_template_prompt_is_untouched_and_eos_padding_carries_the_loss(templated):
    tok = templated
    out = encode_sft(["2+2?"], ["4"], tok, max_length=25, train_on_padding=True, pad_with="eos")
    head = _ids(tok, "<user>2+2?<assistant>")  # 21 tokens, no BOS: the template is the prompt
    eos = tok.eos_token_id
    assert out["input_ids"][0].tolist() == head + _ids(tok, "4") + [eos, eos, eos]
    p = len(head)
    expected = torch.tensor([False] * p + [True] * 4)  # "4", its EOS, 2 EOS of padding
    assert torch.equal(out["loss_mask"][0], expected)
    assert torch.equal(out["noise_mask"][0], expected)  # the prompt is never noised
    assert torch.equal(out["prompt_mask"][0], ~expected)
    assert "attention_mask" not in out  # the EOS padding is seen by the model


def test_pad_with_pad_keeps_the_pad_token_and_chat_template_none_ignores_the_template(
    templated,
):
    tok = templated
    out = encode_sft(["hi"], ["yo"], tok, max_length=10, chat_template="none")
    bos, eos, pad = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    assert out["input_ids"][0].tolist() == [bos, *_ids(tok, "hiyo"), eos] + [pad] * 4
    assert out["loss_mask"][0].tolist() == [False] * 3 + [True] * 3 + [False] * 4
    assert out["attention_mask"][0].tolist() == [True] * 6 + [False] * 4
    with pytest.raises(ValueError, match="pad_with must be one of"):
        encode_sft(["hi"], ["yo"], tok, max_length=10, pad_with="zero")


def test_sft_pair_recipes_differ_only_in_sc_weight():
    proseco, vanilla = load_config("sft-llada-8b"), load_config("sft-llada-8b-vanilla")
    assert config_diff(proseco, vanilla) == ["loss.sc_weight"]
    assert (proseco.loss.sc_weight, vanilla.loss.sc_weight) == (1.0, 0.0)
    data = proseco.data
    assert (data.pad_with, data.train_on_padding, data.mask_token) == (
        "eos",
        True,
        "<|mdm_mask|>",
    )
    assert data.mix == ("microsoft/rStar-Coder:synthetic_sft",)
    # ~40B tokens: steps x global batch x length
    tokens = proseco.train.max_steps * proseco.train.global_batch_size * data.max_length
    assert 39.9e9 < tokens < 40.1e9


def test_known_hub_datasets_are_checked_offline():
    check_sft_source(
        "nvidia/OpenMathInstruct-2",
        prompt_field="problem",
        response_field="generated_solution",
        hub_config=None,
        split="train_1M",
    )
    with pytest.raises(ValueError, match="prompt_field: question, response_field: response"):
        check_sft_source(
            "microsoft/rStar-Coder",
            prompt_field="prompt",
            response_field="response",
            hub_config="synthetic_sft",
            split="train",
        )
    check_sft_source("org/other", prompt_field="a", response_field="b", hub_config=None, split="x")
    assert parse_mix("microsoft/rStar-Coder")[1] == "synthetic_sft"
    with pytest.raises(ValueError, match="no config 'nope'"):
        parse_mix("microsoft/rStar-Coder:nope")
    config = load_config("sft-cpu-tiny")
    with pytest.raises(ConfigError, match="data.hub_config is None, not one of"):
        apply_overrides(config, {"data.source": "microsoft/rStar-Coder"})
    with pytest.raises(ConfigError, match="not a known SFT dataset"):
        apply_overrides(config, {"data.mix": "[org/unknown]"})


def test_pad_with_eos_needs_train_on_padding():
    config = load_config("sft-cpu-tiny")
    with pytest.raises(ConfigError, match="needs data.kind: sft and data.train_on_padding"):
        apply_overrides(config, {"data.pad_with": "eos", "data.train_on_padding": False})


def test_lora_section_parses_round_trips_and_takes_dotted_overrides(tmp_path):
    config = load_config("sft-cpu-tiny")
    base = {k: None for k in ("hidden_size", "num_layers", "num_heads", "cond_dim", "dropout")}
    config = update_config(config, model={**base, "pretrained": "runs/x/final"})
    config = apply_overrides(
        config, ["--model.lora", "{r: 4, target_modules: [qkv, out]}", "--model.lora.alpha", "8"]
    )
    assert config.model.lora == LoraSection(r=4, alpha=8.0, target_modules=("qkv", "out"))
    assert config.model.lora.scale == 2.0
    path = save_config(config, tmp_path / "c.yaml")
    assert yaml.safe_load(path.read_text())["model"]["lora"]["target_modules"] == ["qkv", "out"]
    assert load_config(path) == config
    assert LoraSection(r=8).scale == 2.0  # alpha defaults to 2 r
    with pytest.raises(ConfigError, match="unknown field.*model.lora.rank"):
        apply_overrides(config, {"model.lora.rank": 3})
    with pytest.raises(ConfigError, match="model.lora adapts a pretrained model"):
        apply_overrides(load_config("sft-cpu-tiny"), {"model.lora": "{r: 4}"})


def test_merged_state_dict_adds_scaled_b_times_a():
    a = torch.tensor([[1.0, 0.0, 2.0]])  # [r=1, in=3]
    b = torch.tensor([[1.0], [-1.0]])  # [out=2, r=1]
    w = torch.zeros(2, 3)
    state = {
        "base_model.model.layer.base_layer.weight": w,
        "base_model.model.layer.base_layer.bias": torch.tensor([5.0, 6.0]),
        "base_model.model.layer.lora_A.default.weight": a,
        "base_model.model.layer.lora_B.default.weight": b,
        "base_model.model.head.weight": torch.ones(1),
    }
    merged = merged_state_dict(state, scale=0.5)
    assert sorted(merged) == ["head.weight", "layer.bias", "layer.weight"]
    assert merged["layer.weight"].tolist() == [[0.5, 0.0, 1.0], [-0.5, 0.0, -1.0]]
    assert merged["layer.bias"].tolist() == [5.0, 6.0]


def test_accelerate_config_command_prints_shipped_paths(capsys):
    assert list_accelerate_configs() == ["ddp", "deepspeed-zero3", "fsdp"]
    assert main(["accelerate-config", "fsdp"]) == 0
    path = capsys.readouterr().out.strip()
    assert path == str(accelerate_config("fsdp"))
    fsdp = yaml.safe_load(accelerate_config("fsdp").read_text())
    assert fsdp["distributed_type"] == "FSDP" and fsdp["fsdp_config"]["fsdp_version"] == 2
    zero3 = yaml.safe_load(accelerate_config("deepspeed-zero3").read_text())
    assert zero3["deepspeed_config"]["zero_stage"] == 3
    assert main(["accelerate-config", "zero9"]) == 2
    assert "choose one of ddp, deepspeed-zero3, fsdp" in capsys.readouterr().err


def test_deepspeed_gets_the_recipe_batch_accumulation_and_clipping():
    from types import SimpleNamespace

    from proseco.training.loop import _configure_deepspeed

    plugin = SimpleNamespace(
        zero_stage=3, deepspeed_config={"train_micro_batch_size_per_gpu": "auto"}
    )
    acc = SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=plugin), num_processes=8)
    config = load_config("sft-llada-8b")  # global 256 = micro 1 x 32 accumulation x 8 GPUs
    _configure_deepspeed(acc, 1, 32, config)
    assert plugin.deepspeed_config == {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 32,
        "train_batch_size": 256,
        "gradient_clipping": 1.0,
    }
    assert acc.gradient_accumulation_steps == 32
    with pytest.raises(ConfigError, match="ema_decay > 0 does not work with DeepSpeed ZeRO-3"):
        _configure_deepspeed(acc, 1, 32, apply_overrides(config, {"train.ema_decay": 0.999}))


def test_data_mix_appends_known_datasets_under_the_recipe_field_names(monkeypatch, tmp_path):
    import proseco.data.text as text
    from proseco.training.build import build_tokenizer
    from proseco.training.splits import build_splits

    real = text.read_records
    hub = {"microsoft/rStar-Coder": [{"question": "Q", "response": "R", "code": "c"}]}

    def fake(source, *, split="train", hub_config=None, max_records=None):
        if source in hub:  # no download: what the hub would return for this split and config
            assert (split, hub_config) == ("train", "seed_sft")
            return hub[source][:max_records]
        return real(source, split=split, hub_config=hub_config, max_records=max_records)

    monkeypatch.setattr(text, "read_records", fake)
    (tmp_path / "local.jsonl").write_text('{"prompt": "p", "response": "r"}\n')
    config = load_config("sft-cpu-tiny")
    data = update_config(
        config,
        data={
            "source": str(tmp_path / "local.jsonl"),
            "mix": ("microsoft/rStar-Coder:seed_sft",),
            "validation_fraction": 0.0,
            "cache_dir": str(tmp_path / "cache"),
        },
    ).data
    train, _ = build_splits(data, build_tokenizer("char"))
    tok = char_tokenizer()
    rows = [
        tok.decode(r[m].tolist())
        for r, m in zip(train.tensors["input_ids"], train.tensors["loss_mask"])
    ]
    assert len(rows) == 2 and rows[1].startswith("R")  # the mix's response, after the local pair


def test_pretrained_on_the_command_line_replaces_the_recipes_from_scratch_model(tmp_path):
    """D5: ``--model.pretrained DIR`` alone turns a from-scratch recipe into a fine-tuning one:
    the recipe's architecture fields no longer apply and the model's own tokenizer is used."""
    from tests.tiny_hub import char_word_tokenizer

    model_dir = tmp_path / "bert"
    char_word_tokenizer().save_pretrained(str(model_dir))
    recipe = load_config("sft-cpu-tiny")
    assert recipe.model.hidden_size is not None and recipe.data.tokenizer == "char"
    config = apply_overrides(recipe, ["--model.pretrained", str(model_dir)])
    arch = ("hidden_size", "num_layers", "num_heads", "cond_dim", "dropout")
    assert all(getattr(config.model, k) is None for k in arch)
    assert config.model.pretrained == str(model_dir)
    assert config.data.tokenizer == str(model_dir)
    assert config_diff(recipe, config) == [
        *(f"model.{k}" for k in ("pretrained", *arch)), "data.tokenizer"
    ]  # fmt: skip
    # what the command line says explicitly still wins, and still conflicts
    explicit = apply_overrides(
        recipe, {"model.pretrained": str(model_dir), "data.tokenizer": "char"}
    )
    assert explicit.data.tokenizer == "char"
    with pytest.raises(ConfigError, match="model.hidden_size cannot change the architecture"):
        apply_overrides(recipe, {"model.pretrained": str(model_dir), "model.hidden_size": 32})
    # a directory without a tokenizer keeps the recipe's
    (tmp_path / "dit").mkdir()
    assert (
        apply_overrides(recipe, {"model.pretrained": str(tmp_path / "dit")}).data.tokenizer
        == "char"
    )


def test_a_remote_code_model_directorys_tokenizer_loads_without_a_terminal_prompt(
    tmp_path, capsys, monkeypatch
):
    """``data.tokenizer`` naming a LLaDA directory (``config.json`` with ``auto_map``): without
    ``trust_remote_code`` passed on (``model.trust_remote_code``), transformers asked "Do you
    wish to run the custom code? [y/N]" on the terminal, in every process of an ``accelerate
    launch``, before going on."""
    import transformers.dynamic_module_utils as dynamic_modules

    from proseco.training.build import build_tokenizer
    from tests.tiny_hub import save_tiny_llada

    monkeypatch.setattr(dynamic_modules, "HF_MODULES_CACHE", str(tmp_path / "hf_modules"))
    directory = save_tiny_llada(tmp_path / "llada")
    for trust in (False, True):
        tokenizer = build_tokenizer(str(directory), mask_token="<|mdm_mask|>",
                                    trust_remote_code=trust)  # fmt: skip
        assert tokenizer.mask_token_id == 127
    captured = capsys.readouterr()
    assert "custom code" not in captured.out + captured.err


def test_a_preset_cannot_resize_a_pretrained_model(tmp_path):
    """``model.preset`` sizes a model built from scratch: over a fine-tuning recipe it would be
    silently ignored, so it is an error; ``--model.pretrained`` over a from-scratch recipe
    drops the recipe's preset like its other architecture fields."""
    from proseco.training.build import build_model

    recipe = load_config("qm9-mdlm-small-cpu")
    assert recipe.model.preset == "cpu-small"
    config = apply_overrides(recipe, {"model.pretrained": str(tmp_path)})
    assert config.model.preset == "cpu-tiny" and config.model.pretrained == str(tmp_path)
    with pytest.raises(ConfigError, match="model.preset cannot change the architecture"):
        apply_overrides(recipe, {"model.pretrained": str(tmp_path), "model.preset": "small"})
    fine_tune = apply_overrides(load_config("qm9-proseco-small-ft-cpu"), {"model.preset": "small"})
    with pytest.raises(ValueError, match="model.preset cannot change the architecture"):
        build_model(fine_tune, tokenizer=None)
