"""Behaviour of the bundled DiT backbone (`proseco.models.dit`)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForMaskedLM
from transformers.modeling_outputs import MaskedLMOutput

from proseco.models.dit import (
    AdaLNModulation,
    ProsecoDiT,
    ProsecoDiTConfig,
    _register_auto_classes,
    apply_rotary,
    rotary_tables,
)
from proseco.models.protocol import call_model, model_max_length

V, H, LAYERS, HEADS, COND, MAXLEN = 24, 32, 2, 2, 16, 32


def make_config(**overrides) -> ProsecoDiTConfig:
    kwargs = dict(
        vocab_size=V, hidden_size=H, num_layers=LAYERS, num_heads=HEADS, cond_dim=COND,
        max_length=MAXLEN, dropout=0.0, mask_token_id=V - 1,
    )  # fmt: skip
    kwargs.update(overrides)
    return ProsecoDiTConfig(**kwargs)


def perturb(model: ProsecoDiT, seed: int = 0, std: float = 0.3) -> ProsecoDiT:
    """Move the zero-initialised adaLN weights off zero so that context and conditioning matter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, AdaLNModulation):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * std)
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * std)
    return model


def make_model(seed: int = 0, perturbed: bool = True, **overrides) -> ProsecoDiT:
    torch.manual_seed(seed)
    model = ProsecoDiT(make_config(**overrides)).eval()
    return perturb(model, seed) if perturbed else model


def tokens(batch: int = 2, length: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (batch, length), generator=torch.Generator().manual_seed(seed))


def logits(model, x, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model(x, **kwargs).logits


# --- outputs ---------------------------------------------------------------------------------


def test_forward_returns_float32_masked_lm_logits_of_shape_batch_length_vocab():
    model = make_model()
    x = tokens(3, 16)
    out = model(x)
    assert isinstance(out, MaskedLMOutput)
    assert out.logits.shape == (3, 16, V) and out.logits.dtype == torch.float32
    (as_tuple,) = model(x, return_dict=False)
    assert torch.equal(as_tuple, out.logits)
    assert torch.equal(call_model(model, x), out.logits)


def test_fresh_model_logits_depend_on_the_token_but_not_on_context():
    # adaLN-Zero: blocks start as the identity, but the output head is not zero-initialised.
    model = make_model(perturbed=False)
    x = torch.tensor([[3, 5, 3, 7, 3, 5]])
    out = logits(model, x)[0]
    assert out.abs().max() > 1e-3
    assert not torch.allclose(out[0], out[1])  # different tokens, different logits
    assert torch.allclose(out[0], out[2], atol=1e-6)  # same token elsewhere: same logits
    assert torch.allclose(out[0], out[4], atol=1e-6)


def test_dropout_is_active_in_train_mode_only():
    model = make_model(dropout=0.5)
    x = tokens()
    assert torch.equal(logits(model, x), logits(model, x))
    model.train()
    assert not torch.equal(logits(model, x), logits(model, x))


# --- save / load -----------------------------------------------------------------------------


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_save_and_load_round_trip_is_bit_exact(tmp_path, tied):
    model = make_model(tie_word_embeddings=tied, num_classes=2, time_conditioning=True)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = ProsecoDiT.from_pretrained(tmp_path).eval()

    assert (loaded.lm_head.weight is loaded.embed_tokens.weight) == tied
    before, after = model.state_dict(), loaded.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    x, labels, t = tokens(), torch.tensor([0, 2]), torch.tensor([0.25, 0.75])
    expected = logits(model, x, class_labels=labels, timesteps=t)
    assert torch.equal(logits(loaded, x, class_labels=labels, timesteps=t), expected)


def test_auto_classes_load_a_saved_dit(tmp_path):
    model = make_model(num_classes=3)
    model.save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, ProsecoDiTConfig) and config.null_label == 3
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, ProsecoDiT)
    x = tokens()
    assert torch.equal(logits(loaded, x), logits(model, x))
    assert isinstance(AutoModelForMaskedLM.from_config(make_config()), ProsecoDiT)


def test_registering_twice_does_not_raise():
    _register_auto_classes()
    _register_auto_classes()


# --- attention masks -------------------------------------------------------------------------


def test_tokens_at_padded_positions_do_not_change_logits_at_real_positions():
    model = make_model()
    x = tokens(2, 16)
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[0, 11:] = 0  # right padding
    mask[1, :4] = 0  # left padding
    y = x.clone()
    y[0, 11:] = (x[0, 11:] + 1) % V
    y[1, :4] = (x[1, :4] + 1) % V
    real = mask.bool()
    out_x, out_y = logits(model, x, attention_mask=mask), logits(model, y, attention_mask=mask)
    torch.testing.assert_close(out_x[real], out_y[real], atol=1e-6, rtol=1e-6)
    # Without the mask the same change does reach the real positions.
    assert (logits(model, x)[real] - logits(model, y)[real]).abs().max() > 1e-3


def test_all_ones_attention_mask_equals_no_mask_and_bool_equals_int():
    model = make_model()
    x = tokens()
    assert torch.equal(logits(model, x, attention_mask=torch.ones_like(x)), logits(model, x))
    mask = torch.ones_like(x)
    mask[:, -3:] = 0
    assert torch.equal(
        logits(model, x, attention_mask=mask), logits(model, x, attention_mask=mask.bool())
    )


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_fully_padded_or_leading_padded_queries_give_finite_logits(causal):
    model = make_model(causal=causal)
    x = tokens(2, 8)
    mask = torch.tensor([[0] * 8, [0, 0, 0, 1, 1, 1, 1, 1]])
    assert torch.isfinite(logits(model, x, attention_mask=mask)).all()


def test_causal_model_logits_at_position_i_ignore_later_tokens():
    x = tokens(1, 12)
    y = x.clone()
    y[0, 7] = (x[0, 7] + 1) % V
    causal = make_model(causal=True)
    out_x, out_y = logits(causal, x), logits(causal, y)
    assert torch.equal(out_x[:, :7], out_y[:, :7])
    assert (out_x[:, 7:] - out_y[:, 7:]).abs().amax(dim=-1).min() > 1e-4
    # Causal with left padding: real positions see neither padding nor later tokens.
    mask = torch.ones_like(x)
    mask[0, :2] = 0
    z = y.clone()
    z[0, :2] = (y[0, :2] + 1) % V
    masked_y, masked_z = (
        logits(causal, y, attention_mask=mask),
        logits(causal, z, attention_mask=mask),
    )
    torch.testing.assert_close(masked_y[:, 2:], masked_z[:, 2:], atol=1e-6, rtol=1e-6)
    # The bidirectional model does look ahead.
    bidirectional = make_model(causal=False)
    assert (logits(bidirectional, x)[:, 0] - logits(bidirectional, y)[:, 0]).abs().max() > 1e-4


# --- conditioning ----------------------------------------------------------------------------


def test_class_label_changes_logits_and_none_means_the_null_label():
    model = make_model(num_classes=3)
    assert model.config.null_label == 3
    x = tokens()
    by_label = [logits(model, x, class_labels=torch.full((2,), k)) for k in range(4)]
    assert (by_label[0] - by_label[1]).abs().max() > 1e-3
    assert torch.equal(logits(model, x), by_label[3])
    assert torch.equal(logits(model, x, class_labels=1), by_label[1])
    mixed = logits(model, x, class_labels=torch.tensor([0, 2]))
    assert torch.equal(mixed[0], by_label[0][0]) and torch.equal(mixed[1], by_label[2][1])


def test_time_conditioned_model_uses_timesteps_and_protocol_routes_t():
    model = make_model(time_conditioning=True)
    x = tokens()
    early = logits(model, x, timesteps=torch.full((2,), 0.1))
    late = logits(model, x, timesteps=torch.full((2,), 0.9))
    assert (early - late).abs().max() > 1e-3
    assert torch.equal(logits(model, x, timesteps=0.1), early)
    assert torch.equal(call_model(model, x, t=torch.full((2,), 0.1)).detach(), early)


def test_model_without_time_conditioning_ignores_timesteps():
    model = make_model(time_conditioning=False)
    x = tokens()
    reference = logits(model, x)
    assert torch.equal(logits(model, x, timesteps=torch.full((2,), 0.9)), reference)
    assert torch.equal(call_model(model, x, t=torch.full((2,), 0.9)).detach(), reference)


# --- rotary embeddings -----------------------------------------------------------------------


def test_model_is_position_aware_through_rotary_embeddings():
    # Attention alone is permutation-equivariant: without position information positions 2 and 6
    # (same token, same multiset of context) would get identical logits.
    model = make_model()
    with torch.no_grad():
        for block in model.blocks:
            block.attn.qkv.weight.mul_(10.0)  # sharper attention than at init
    out = logits(model, torch.tensor([[5, 7, 5, 5, 5, 5, 5, 5]]))[0]
    assert (out[2] - out[6]).abs().max() > 1e-3


def test_rotary_rotates_a_unit_pair_by_the_position_angle():
    cos, sin = rotary_tables(4, head_dim=4)
    # head_dim 4: frequencies 1 and 10000^(-1/2) = 0.01.
    x = torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(1, 4, 1, 4)
    out = apply_rotary(x, cos, sin)[0, :, 0]
    positions = torch.arange(4.0)
    torch.testing.assert_close(out[:, 0], torch.cos(positions))
    torch.testing.assert_close(out[:, 2], torch.sin(positions))
    torch.testing.assert_close(sin[:, 1], torch.sin(0.01 * positions))


def test_rotary_scores_depend_only_on_relative_position():
    generator = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 8, generator=generator)
    cos, sin = rotary_tables(12, head_dim=8)

    def score(i, j):
        qi = apply_rotary(q.expand(1, 12, 1, 8), cos, sin)[0, i, 0]
        kj = apply_rotary(k.expand(1, 12, 1, 8), cos, sin)[0, j, 0]
        return torch.dot(qi, kj)

    torch.testing.assert_close(score(2, 5), score(6, 9), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(score(2, 5), score(2, 6), atol=1e-3)


# --- presets and parameter counts --------------------------------------------------------------


def test_parameter_count_matches_the_hand_computed_formula():
    n_params = sum(p.numel() for p in make_model(perturbed=False).parameters())
    block = (
        3 * H * H + H * H + (H * 4 * H + 4 * H) + (4 * H * H + H) + 2 * H + (COND * 6 * H + 6 * H)
    )
    expected = V * H + COND + LAYERS * block + H + (COND * 2 * H + 2 * H) + (H * V + V)
    assert n_params == expected == 34_248
    tied = make_model(perturbed=False, tie_word_embeddings=True)
    assert sum(p.numel() for p in tied.parameters()) == expected - V * H


@pytest.mark.parametrize(
    ("name", "vocab", "low", "high"),
    [
        ("cpu-tiny", 40, 0.9e6, 1.1e6),
        ("cpu-small", 40, 4.0e6, 5.5e6),
        ("tiny", 50258, 75e6, 85e6),
        ("small", 50258, 165e6, 175e6),  # paper: ~169.6 M
        ("medium", 50258, 400e6, 440e6),
    ],
)
def test_preset_parameter_counts_are_in_range(name, vocab, low, high):
    config = ProsecoDiTConfig.from_preset(name, vocab_size=vocab)
    with torch.device("meta"):
        model = ProsecoDiT(config)
    assert low <= sum(p.numel() for p in model.parameters()) <= high


def test_preset_overrides_apply_and_unknown_preset_lists_valid_names():
    config = ProsecoDiTConfig.from_preset("small", vocab_size=100, num_layers=2)
    assert (config.hidden_size, config.num_layers, config.vocab_size) == (768, 2, 100)
    with pytest.raises(ValueError, match="cpu-small, cpu-tiny, medium, small, tiny"):
        ProsecoDiTConfig.from_preset("huge")


def test_config_exposes_standard_aliases_for_tooling():
    config = make_config()
    assert config.num_hidden_layers == LAYERS and config.num_attention_heads == HEADS
    assert model_max_length(make_model(perturbed=False)) == MAXLEN
    assert config.null_label is None


# --- bad configs and inputs --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hidden_size": 30, "num_heads": 4}, "not divisible by num_heads"),
        ({"hidden_size": 30, "num_heads": 2}, "odd"),
        ({"mask_token_id": V}, f"mask_token_id {V} is outside the vocabulary of {V}"),
        ({"pad_token_id": -1}, "pad_token_id -1 is outside"),
        ({"dropout": 1.0}, "dropout must be in"),
        ({"num_layers": 0}, "num_layers must be >= 1"),
        ({"num_classes": -1}, "num_classes must be >= 0"),
        ({"vocab_size": "24"}, "vocab_size must be an int"),
        ({"causal": 1}, "causal must be a bool"),
    ],
)
def test_bad_config_raises_value_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_config(**overrides)


def _bad_inputs():
    x = tokens(2, 8)
    return [
        ("id_too_large", dict(input_ids=x.clone().fill_(V)), f"token id {V} is outside"),
        ("negative_id", dict(input_ids=x.clone().fill_(-1)), "token id -1 is outside"),
        ("float_ids", dict(input_ids=x.float()), "integer token ids"),
        ("one_dim_ids", dict(input_ids=x[0]), r"shape \[B, L\]"),
        ("empty_ids", dict(input_ids=x[:, :0]), "non-empty"),
        ("too_long", dict(input_ids=tokens(1, MAXLEN + 1)), f"{MAXLEN + 1} exceeds .* {MAXLEN}"),
        ("mask_shape", dict(input_ids=x, attention_mask=torch.ones(2, 7)), "same shape"),
        ("mask_values", dict(input_ids=x, attention_mask=torch.full((2, 8), 2)), "only 0"),
        ("label_unconditional", dict(input_ids=x, class_labels=0), "unconditional"),
        ("label_too_large", dict(input_ids=x, class_labels=torch.tensor([0, 4]), classes=3), r"\[0, 3\]"),
        ("label_negative", dict(input_ids=x, class_labels=-1, classes=3), r"\[0, 3\]"),
        ("label_float", dict(input_ids=x, class_labels=torch.zeros(2), classes=3), "integer"),
        ("label_shape", dict(input_ids=x, class_labels=torch.zeros(3, dtype=torch.long), classes=3), r"\[B\] = \[2\]"),
        ("time_missing", dict(input_ids=x, time=True), "pass timesteps"),
        ("time_shape", dict(input_ids=x, timesteps=torch.zeros(3), time=True), r"\[B\] = \[2\]"),
        ("time_nan", dict(input_ids=x, timesteps=torch.full((2,), float("nan")), time=True), "NaN"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "message"), [c[1:] for c in _bad_inputs()], ids=[c[0] for c in _bad_inputs()]
)
def test_bad_input_raises_value_error_naming_the_problem(kwargs, message):
    kwargs = dict(kwargs)
    model = make_model(
        perturbed=False,
        num_classes=kwargs.pop("classes", 0),
        time_conditioning=kwargs.pop("time", False),
    )
    with pytest.raises(ValueError, match=message):
        model(**kwargs)


# --- precision and memory ----------------------------------------------------------------------


def test_bf16_autocast_on_cpu_returns_float32_logits_close_to_float32():
    model = make_model(num_classes=2, time_conditioning=True)
    x, t = tokens(), torch.tensor([0.2, 0.8])
    reference = logits(model, x, timesteps=t, class_labels=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = logits(model, x, timesteps=t, class_labels=1)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert not torch.equal(out, reference)  # bf16 really was used
    torch.testing.assert_close(out, reference, atol=0.1, rtol=0.05)


def test_bf16_weights_return_float32_logits():
    model = make_model().to(torch.bfloat16)
    out = logits(model, tokens())
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_gradient_checkpointing_gives_the_same_gradients():
    x = tokens()

    def grads(checkpointing: bool):
        model = make_model(num_classes=2).train()
        if checkpointing:
            enable = getattr(model, "activation_checkpointing_enable", None)
            (enable or model.gradient_checkpointing_enable)()
        model(x, class_labels=1).logits.logsumexp(-1).sum().backward()
        return {n: p.grad for n, p in model.named_parameters()}

    plain, checkpointed = grads(False), grads(True)
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(plain[name], checkpointed[name], atol=1e-6, rtol=1e-5)
    assert plain["blocks.0.modulation.weight"].abs().max() > 0  # adaLN receives gradient
