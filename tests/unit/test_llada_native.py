"""The native LLaDA model (``proseco.models.llada``) against the tests' remote-code stand-in.

The stand-in (:data:`tests.tiny_hub.TINY_LLADA_CODE`) is LLaDA's calling convention and module
names, written independently of the native model; its ``config.json`` states LLaDA's architecture
keys, so the same directory loads both ways: natively (``load_pretrained(path)``) and through its
remote code (``PROSECO_LLADA=remote``, ``trust_remote_code=True``). Three layouts: the stand-in's
own (learned positions, LayerNorm, biases), LLaDA-8B's (RoPE base 500000, RMSNorm, no biases) and
grouped-query attention.
"""

from __future__ import annotations

import json
import socket
import warnings

import pytest
import torch
import transformers.dynamic_module_utils as dynamic_modules
from safetensors.torch import load_file, save_file

from proseco import load_pretrained
from proseco.errors import ModelLoadError
from proseco.models.hub import LLaDAAdapter
from proseco.models.kv_cache import KVCache
from proseco.models.llada import LLaDAModelLM
from proseco.models.llada_config import LLaDAConfig, native_problems, unknown_keys
from proseco.models.llada_hub import NativeLLaDAAdapter
from proseco.sampling import Corrector, sample
from tests.tiny_hub import save_tiny_llada

TOLERANCE = 1e-4  # float32 logits, native vs the stand-in's remote code
MASK = 127

# LLaDA's architecture keys every layout states (its config.json states them all).
STATED = dict(block_type="llama", activation_type="silu", embedding_size=None, weight_tying=False,
              attention_dropout=0.0, residual_dropout=0.0, embedding_dropout=0.0)  # fmt: skip
LAYOUTS = {
    "learned positions, LayerNorm, biases": dict(
        rope=False, layer_norm_type="default", include_bias=True, mlp_hidden_size=64
    ),
    "LLaDA-8B: RoPE, RMSNorm, no biases": dict(
        rope=True,
        rope_theta=500000.0,
        layer_norm_type="rms",
        rms_norm_eps=1e-5,
        include_bias=False,
        mlp_hidden_size=96,
        n_layers=2,
    ),  # fmt: skip
    "grouped-query attention": dict(
        rope=True,
        rope_theta=10000.0,
        layer_norm_type="rms",
        include_bias=False,
        mlp_hidden_size=96,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
    ),  # fmt: skip
}


@pytest.fixture(autouse=True)
def _own_module_cache(tmp_path, monkeypatch):
    """Remote code is imported from a module cache of this test's own."""
    monkeypatch.setattr(dynamic_modules, "HF_MODULES_CACHE", str(tmp_path / "hf_modules"))
    monkeypatch.delenv("PROSECO_LLADA", raising=False)


def stand_in(path, layout: str, **extra):
    """A stand-in directory of ``layout``, every weight (norms too) moved off its init."""
    directory = save_tiny_llada(path, **STATED, **LAYOUTS[layout], **extra)
    weights = load_file(str(directory / "model.safetensors"))
    g = torch.Generator().manual_seed(1)
    weights = {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in weights.items()}
    save_file(weights, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory


def remote(path, monkeypatch):
    monkeypatch.setenv("PROSECO_LLADA", "remote")
    model = load_pretrained(path, trust_remote_code=True).model
    monkeypatch.delenv("PROSECO_LLADA")
    return model


def ids(batch=3, length=40, seed=2):
    return torch.randint(0, MASK, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(params=list(LAYOUTS))
def layout_dir(request, tmp_path):
    return stand_in(tmp_path / "llada", request.param)


# -- equality with the remote code -------------------------------------------------------------


def test_native_logits_equal_the_remote_codes(layout_dir, monkeypatch):
    native = load_pretrained(layout_dir).model  # no trust_remote_code: nothing remote runs
    assert isinstance(native, NativeLLaDAAdapter) and isinstance(native.model, LLaDAModelLM)
    assert not (layout_dir.parent / "hf_modules").exists()
    reference = remote(layout_dir, monkeypatch)
    assert type(reference) is LLaDAAdapter
    x = ids()
    with torch.no_grad():
        mine, theirs = native(x), reference(x)
    difference = (mine - theirs).abs().max().item()
    print(f"max |native - remote| logit difference: {difference:.2e}")
    assert difference < TOLERANCE and theirs.abs().max() > 1.0
    # the same parameters, under the same names
    assert set(native.model.state_dict()) == set(reference.model.state_dict())


def test_the_loaded_adapter_describes_the_model(layout_dir):
    model = load_pretrained(layout_dir).model
    assert (model.config.adapter, model.config.mask_token_id, model.config.vocab_size) == (
        "llada", MASK, 128,
    )  # fmt: skip
    assert model.config.max_position_embeddings == 1024 and model.padding == "mask"
    assert model.supports_window_cache and not model.training


# -- a real attention mask ---------------------------------------------------------------------


@pytest.mark.parametrize("side", ["left", "right"])
def test_a_ragged_batch_gives_each_row_its_unpadded_logits(layout_dir, side):
    model = load_pretrained(layout_dir).model
    x = ids(3, 24)
    mask = torch.ones_like(x)
    pads = [0, 5, 11]
    for row, pad in enumerate(pads):
        if pad:
            mask[row, :pad] = 0 if side == "left" else 1
            if side == "right":
                mask[row, -pad:] = 0
    with torch.no_grad():
        padded = model(x, attention_mask=mask)
        for row in range(3):
            real = mask[row].bool()
            alone = model(x[row : row + 1, real])
            torch.testing.assert_close(padded[row, real], alone[0], atol=1e-5, rtol=1e-5)


# -- the window KV cache -----------------------------------------------------------------------


def test_a_window_call_on_the_cache_gives_the_whole_calls_logits(layout_dir):
    """What the sampler's prefix and dual caches rely on: the logits of a window of the
    sequence, run against the cached keys of the rest, are the whole call's."""
    network = load_pretrained(layout_dir).model.model
    x = ids(3, 20)
    mask = torch.ones_like(x)
    mask[1, :4], mask[2, :7] = 0, 0
    with torch.no_grad():
        whole = network(x, attention_mask=mask, use_cache=True)
        plain = network(x, attention_mask=mask).logits
        assert torch.equal(whole.logits, plain)
        cache = whole.past_key_values
        assert isinstance(cache, KVCache) and cache.positions.tolist() == list(range(20))
        for start, stop in ((8, 12), (8, 20), (0, 4), (4, 8)):
            context = torch.cat((torch.arange(0, start), torch.arange(stop, 20)))
            window = network(x[:, start:stop], attention_mask=mask[:, start:stop],
                             position_ids=torch.arange(start, stop),
                             past_key_values=cache.select(context)).logits  # fmt: skip
            torch.testing.assert_close(window, plain[:, start:stop], atol=1e-5, rtol=1e-5)
        rows = torch.tensor([2, 0])
        context = torch.cat((torch.arange(0, 8), torch.arange(12, 20)))
        picked = network(x[rows, 8:12], position_ids=torch.arange(8, 12),
                         past_key_values=cache.select(context).rows(rows)).logits  # fmt: skip
        torch.testing.assert_close(picked, plain[rows, 8:12], atol=1e-5, rtol=1e-5)


def test_the_adapter_passes_the_cache_through(layout_dir):
    model = load_pretrained(layout_dir).model
    x = ids(2, 16)
    with torch.no_grad():
        out = model(x, use_cache=True)
        context = torch.cat((torch.arange(0, 4), torch.arange(8, 16)))
        window = model(x[:, 4:8], position_ids=torch.arange(4, 8),
                       past_key_values=out.past_key_values.select(context))  # fmt: skip
    assert out.logits.dtype == torch.float32
    torch.testing.assert_close(window.logits, out.logits[:, 4:8], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_block_decoding_under_a_cache(tmp_path, cache):
    model = load_pretrained(
        stand_in(tmp_path / "llada", "LLaDA-8B: RoPE, RMSNorm, no biases")
    ).model
    for extra in (dict(prompt=[[5, 6, 7, 8, 9], [10, 11]], pad_id=1),
                  dict(prompt=[[5, 6, 7]], corrector=Corrector(1, final_steps=1))):  # fmt: skip
        out = sample(model, mask_id=MASK, length=12, steps=12, block_length=4, cache=cache,
                     unmasking="confidence", generator=torch.Generator().manual_seed(0), **extra)  # fmt: skip
        assert not (out.tokens == MASK).any()
    # one block, no prompt: the window is the whole sequence, so the tokens are no cache's
    kwargs = dict(mask_id=MASK, batch_size=2, length=8, steps=8, unmasking="confidence",
                  temperature=0.0, corrector=Corrector(2))  # fmt: skip
    ref, out = sample(model, **kwargs), sample(model, cache=cache, **kwargs)
    assert torch.equal(out.tokens, ref.tokens) and out.nfe == ref.nfe


def test_bad_cache_arguments_are_refused(layout_dir):
    network = load_pretrained(layout_dir).model.model
    x = ids(2, 12)
    with torch.no_grad():
        cache = network(x, use_cache=True).past_key_values
        with pytest.raises(ValueError, match="position_ids"):
            network(x[:, :4], past_key_values=cache.select(torch.arange(4, 12)))
        with pytest.raises(ValueError, match="rows"):
            network(x[:1, :4], position_ids=torch.arange(4),
                    past_key_values=cache.select(torch.arange(4, 12)))  # fmt: skip
        with pytest.raises(TypeError, match="labels"):
            network(x, labels=x)


# -- loading: native first, remote code as the fallback ----------------------------------------


def test_a_config_the_native_model_cannot_run_falls_back_to_the_remote_code(tmp_path):
    """The stand-in without LLaDA's architecture keys means, to LLaDA's code, its defaults:
    the fused ``sequential`` block, which the native model does not implement."""
    plain = save_tiny_llada(tmp_path / "plain")
    with pytest.raises(ModelLoadError, match=r"block_type 'sequential'.*trust_remote_code=True"):
        load_pretrained(plain)
    with pytest.warns(UserWarning, match="modelling code it ships"):
        model = load_pretrained(plain, trust_remote_code=True).model
    assert type(model) is LLaDAAdapter and model.padding == "crop"


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda c, w: c.update(yarn=True), r"sets \['yarn'\]"),
        (lambda c, w: c.update(attention_layer_norm=True), "QK-norm"),
        (lambda c, w: w.update(extra=torch.zeros(2)), "unexpected keys: extra"),
        (lambda c, w: w.pop("model.transformer.ln_f.weight"), "missing keys"),
    ],
)
def test_what_makes_a_checkpoint_not_native(tmp_path, change, reason):
    directory = stand_in(tmp_path / "llada", "LLaDA-8B: RoPE, RMSNorm, no biases")
    config = json.loads((directory / "config.json").read_text())
    weights = load_file(str(directory / "model.safetensors"))
    change(config, weights)
    (directory / "config.json").write_text(json.dumps(config))
    save_file(weights, str(directory / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=reason):
        load_pretrained(directory)


def test_the_environment_forces_either_way(tmp_path, monkeypatch):
    directory = stand_in(tmp_path / "llada", "learned positions, LayerNorm, biases")
    monkeypatch.setenv("PROSECO_LLADA", "remote")
    with pytest.raises(ModelLoadError, match="trust_remote_code=True"):
        load_pretrained(directory)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # chosen, so no warning
        assert type(load_pretrained(directory, trust_remote_code=True).model) is LLaDAAdapter
    monkeypatch.setenv("PROSECO_LLADA", "native")
    with pytest.raises(ModelLoadError, match="natively"):
        load_pretrained(save_tiny_llada(tmp_path / "plain"), trust_remote_code=True)
    monkeypatch.setenv("PROSECO_LLADA", "fast")
    with pytest.raises(Exception, match="PROSECO_LLADA='fast'"):
        load_pretrained(directory)


def test_a_saved_native_model_loads_both_ways(tmp_path, monkeypatch):
    directory = stand_in(tmp_path / "llada", "LLaDA-8B: RoPE, RMSNorm, no biases")
    model = load_pretrained(directory).model
    model.save_pretrained(tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["model_type"] == "llada" and saved["architectures"] == ["LLaDAModelLM"]
    assert saved["rope"] is True and saved["d_model"] == 32 and "auto_map" in saved
    assert (tmp_path / "out" / "modeling_llada.py").is_file()  # LLaDA's code came along
    x = ids(2, 10)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(load_pretrained(tmp_path / "out").model(x), expected)
        torch.testing.assert_close(remote(tmp_path / "out", monkeypatch)(x), expected,
                                   atol=TOLERANCE, rtol=0)  # fmt: skip
    # saved from a directory without the code: no dangling auto_map
    (directory / "modeling_llada.py").unlink()
    with pytest.warns(UserWarning, match="modelling code was not found"):
        load_pretrained(directory).model.save_pretrained(tmp_path / "bare")
    assert "auto_map" not in json.loads((tmp_path / "bare" / "config.json").read_text())
    assert isinstance(load_pretrained(tmp_path / "bare").model, NativeLLaDAAdapter)


def test_bf16_weights_give_float32_logits(tmp_path):
    directory = stand_in(tmp_path / "llada", "LLaDA-8B: RoPE, RMSNorm, no biases")
    full = load_pretrained(directory).model
    half = load_pretrained(directory, dtype="bfloat16").model
    assert next(half.parameters()).dtype == torch.bfloat16
    x = ids(2, 16)
    with torch.no_grad():
        low, high = half(x), full(x)
        assert low.dtype == torch.float32
        assert (low - high).abs().max() < 0.1 * high.abs().max()
        cache = half(x, use_cache=True).past_key_values
        window = half(x[:, 8:], position_ids=torch.arange(8, 16),
                      past_key_values=cache.select(torch.arange(8)))  # fmt: skip
        assert window.logits.shape == (2, 8, 128) and torch.isfinite(window.logits).all()


def test_the_config_and_its_checks():
    config = LLaDAConfig.from_preset()
    assert (config.d_model, config.rope_theta, config.layer_norm_type) == (4096, 500000.0, "rms")
    assert (config.hidden_size, config.num_hidden_layers, config.max_position_embeddings) == (
        4096, 32, 4096,
    )  # fmt: skip
    assert native_problems(config) == []
    defaults = LLaDAConfig()  # LLaDA's own defaults: GPT-2 shaped, the fused block
    assert any("block_type 'sequential'" in p for p in native_problems(defaults))
    with pytest.raises(ValueError, match="does not implement"):
        LLaDAModelLM(defaults)
    assert unknown_keys({"rope": True, "torch_dtype": "bfloat16", "yarn": False, "z": 1}) == ["z"]


# -- training: gradient checkpointing, FSDP ----------------------------------------------------


def _grads(model, x):
    model.train()
    model.zero_grad()
    model(x).logsumexp(-1).sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_gradient_checkpointing(tmp_path):
    directory = stand_in(tmp_path / "llada", "LLaDA-8B: RoPE, RMSNorm, no biases")
    plain = load_pretrained(directory).model
    model = load_pretrained(directory, gradient_checkpointing=True).model
    inner = model.model.model
    assert inner.activation_checkpointing_strategy == "whole_layer"
    assert all(b.gradient_checkpointing for b in inner.transformer["blocks"])
    x = ids(2, 12)
    expected, got = _grads(plain, x), _grads(model, x)
    assert set(got) == set(expected)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-5)
    # Hugging Face's switch works as well
    network = plain.model  # transformers 5 renamed the switch; the old name warns there
    (
        getattr(network, "activation_checkpointing_enable", None)
        or network.gradient_checkpointing_enable
    )()
    assert all(b.gradient_checkpointing for b in network.model.transformer["blocks"])
    assert all(g.abs().sum() > 0 for g in _grads(plain, x).values())


def test_fsdp_wraps_each_block(tmp_path, monkeypatch):
    """FSDP2 (one process, gloo) shards the native model per ``LLaDALlamaBlock``, the class
    that accelerate's transformer-based wrap finds from the adapter's ``_no_split_modules``."""
    import torch.distributed as dist
    from accelerate.utils.dataclasses import get_module_class_from_name
    from torch.distributed.fsdp import FSDPModule, fully_shard

    directory = stand_in(tmp_path / "llada", "learned positions, LayerNorm, biases")
    model, reference = load_pretrained(directory).model, load_pretrained(directory).model
    assert set(model._no_split_modules) == set(model.model._no_split_modules) == {"LLaDALlamaBlock"}
    block_class = get_module_class_from_name(model, "LLaDALlamaBlock")
    assert block_class is type(model.model.model.transformer["blocks"][0])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        blocks = [m for m in model.modules() if isinstance(m, block_class)]
        for block in blocks:
            fully_shard(block)
        fully_shard(model)
        assert all(isinstance(b, FSDPModule) for b in blocks) and len(blocks) == 1
        x = ids(2, 12)
        got, expected = _grads(model, x), _grads(reference, x)
        for name, grad in got.items():
            full = grad.full_tensor() if hasattr(grad, "full_tensor") else grad
            torch.testing.assert_close(full, expected[name], atol=1e-5, rtol=1e-5)
    finally:
        dist.destroy_process_group()


def test_lora_sft_of_a_native_llada_hides_padding_and_exports_both_ways(tmp_path):
    """``model.pretrained`` a LLaDA directory, no remote code: LoRA ProSeCo SFT with padding
    hidden by the attention mask (refused for the remote code), merged export that loads natively
    and still carries LLaDA's modelling file."""
    pytest.importorskip("peft")
    from proseco.training import train

    directory = stand_in(tmp_path / "llada", "LLaDA-8B: RoPE, RMSNorm, no biases")
    g = torch.Generator().manual_seed(0)
    with (tmp_path / "pairs.jsonl").open("w") as f:
        for _ in range(16):
            n = int(torch.randint(2, 6, (1,), generator=g))
            f.write(json.dumps({"prompt": "ab", "response": "xyz"[: n % 3 + 1] * n}) + "\n")
    lora = {"r": 2, "target_modules": ["q_proj", "v_proj"]}
    recipe = {
        "model": {"pretrained": str(directory), "lora": lora},
        "data": {"kind": "sft", "source": str(tmp_path / "pairs.jsonl"),
                 "tokenizer": str(directory), "mask_token": "<|mdm_mask|>",
                 "train_on_padding": False, "max_length": 48, "validation_fraction": 0.0,
                 "cache_dir": str(tmp_path / "cache")},
        "optim": {"lr": 0.05},
        "train": {"max_steps": 2, "global_batch_size": 8, "ema_decay": 0.0,
                  "progress_bar": False, "log_every": 1},
    }  # fmt: skip
    result = train(recipe, tmp_path / "run")
    assert result.train_loss is not None and result.train_loss > 0
    model = load_pretrained(result.final_dir).model
    assert isinstance(model, NativeLLaDAAdapter) and model.config.mask_token_id == MASK
    assert (result.final_dir / "modeling_llada.py").is_file()
    base = load_file(str(directory / "model.safetensors"))
    merged = load_file(str(result.final_dir / "model.safetensors"))
    assert sorted(merged) == sorted(base)
    name = "model.transformer.blocks.0.q_proj.weight"
    assert not torch.equal(merged[name], base[name])
