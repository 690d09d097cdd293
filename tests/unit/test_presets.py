"""Decoding presets (``proseco.sampling.presets``): pinned settings, JSON round trips, overrides,
unknown names, NFE bounds on a real run, and ``proseco sample --preset``."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from proseco.errors import ConfigError
from proseco.sampling import Confidence, Corrector, SamplingConfig, sample
from proseco.sampling.presets import PRESET_FIELDS, PRESETS, apply_preset, describe, preset
from proseco.sampling.testing import ToyDenoiser

# name -> (steps, block_length, corrector S, corrector every) for the default 256 tokens
PINNED = {"fast": (64, 32, 2, 2), "balanced": (128, 32, 4, 2), "max": (256, 32, 4, 1)}


def test_names_and_pinned_settings_at_256_tokens():
    assert PRESETS == ("fast", "balanced", "max")
    for name, (steps, block, s, every) in PINNED.items():
        config = preset(name)
        assert (config.steps, config.block_length) == (steps, block)
        assert config.corrector == Corrector(steps=s, every=every)
        assert config.unmasking == Confidence() and config.temperature == 0.0
        assert config.eos_id is None and config.guidance is None
    assert all(name in describe() for name in PRESETS)


@pytest.mark.parametrize(
    "name, length, steps, block",
    [("fast", 64, 16, 32), ("balanced", 64, 32, 32), ("max", 8, 8, 8), ("fast", 50, 14, 25),
     ("fast", 2, 1, 2), ("max", 7, 7, 7), ("fast", 37, 10, 19), ("balanced", 37, 20, 19),
     ("max", 37, 38, 19), ("fast", 257, 72, 29), ("fast", 97, 28, 25)],
)  # fmt: skip
def test_steps_and_blocks_follow_the_length(name, length, steps, block):
    # fast at 50 tokens: 2 blocks of 25, ceil(25 / 4) = 7 steps per block. D8: a length with no
    # good divisor (37, 97, 257 are prime) keeps blocks near 32 (the last one shorter) and about
    # length / 4 steps, instead of blocks of 1 token and one step per token
    config = preset(name, length=length)
    assert (config.steps, config.block_length) == (steps, block)


@pytest.mark.parametrize("name", PRESETS)
def test_a_preset_at_a_prime_length_samples_with_few_steps(name):
    model = ToyDenoiser(vocab_size=12, max_length=64)
    config = preset(name, length=37)
    out = sample(model, config, mask_id=11, length=37, prompt=torch.tensor([[1, 2, 3]]))
    tokens_per_step = {"fast": 4, "balanced": 2, "max": 1}[name]
    assert out.denoiser_nfe <= -(-37 // tokens_per_step) + 1
    assert out.generated.shape == (1, 37) and not (out.generated == 11).any()


@pytest.mark.parametrize("name", PRESETS)
def test_round_trips_through_json_and_a_model_directory(name, tmp_path):
    config = preset(name, top_p=0.9, eos_id=2, stop_at_eos=True)
    assert SamplingConfig.from_json(config.to_json()) == config
    path = config.save_pretrained(tmp_path)
    assert json.loads(path.read_text())["corrector"]["steps"] == PINNED[name][2]
    assert SamplingConfig.from_pretrained(tmp_path) == config


def test_overrides_win_and_unknown_fields_are_errors():
    config = preset("fast", steps=32, corrector=None, top_p=0.5)
    assert (config.steps, config.corrector, config.top_p) == (32, None, 0.5)
    assert config.block_length == 32
    with pytest.raises(ConfigError, match="did you mean 'top_p'"):
        preset("fast", top_pp=0.5)


@pytest.mark.parametrize(
    "name, hint", [("balance", "balanced"), ("Fast", "fast"), ("maxx", "max"), ("fastest", "fast")]
)
def test_unknown_name_suggests_the_closest(name, hint):
    with pytest.raises(ConfigError, match=f"did you mean '{hint}'"):
        preset(name)


@pytest.mark.parametrize("length", [0, -3, 2.5, True])
def test_bad_length_is_a_config_error(length):
    with pytest.raises(ConfigError, match="length"):
        preset("fast", length=length)


def test_apply_preset_keeps_the_models_own_fields():
    saved = SamplingConfig(steps=7, eos_id=3, stop_at_eos=True, pad_id=4, top_p=0.8, eps=1e-3)
    config = apply_preset(saved, "balanced", length=64)
    assert (config.eos_id, config.stop_at_eos, config.pad_id, config.top_p, config.eps) == (
        3, True, 4, 0.8, 1e-3,
    )  # fmt: skip
    fresh = preset("balanced", length=64)
    assert all(getattr(config, f) == getattr(fresh, f) for f in PRESET_FIELDS)


@pytest.mark.parametrize("name", PRESETS)
def test_a_real_run_stays_within_the_nfe_bound(name):
    # 32 tokens after a 4-token prompt: steps + S * steps / every model calls at most
    model = ToyDenoiser(vocab_size=12, max_length=64)
    config = preset(name, length=32)
    prompt = torch.tensor([[1, 2, 3, 4]])
    out = sample(model, config, mask_id=11, length=32, prompt=prompt)
    steps, _, s, every = PINNED[name]
    steps = steps // 8  # 256 -> 32 tokens
    assert out.denoiser_nfe <= steps
    assert 0 < out.corrector_nfe <= s * (steps // every)
    assert out.tokens[0, :4].tolist() == [1, 2, 3, 4]
    again = sample(model, config, mask_id=11, length=32, prompt=prompt)  # greedy: deterministic
    assert torch.equal(out.tokens, again.tokens)


# -- proseco sample --preset ---------------------------------------------------------------------


def _cli_parse(argv: list[str]) -> argparse.Namespace:
    from proseco.commands import sample as cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture
def model_dir(tmp_path):
    from proseco.models.dit import ProsecoDiT
    from proseco.models.dit_config import ProsecoDiTConfig

    torch.manual_seed(0)
    config = ProsecoDiTConfig(
        vocab_size=11, hidden_size=16, num_layers=1, num_heads=2, cond_dim=8, max_length=16,
        mask_token_id=10, dropout=0.0,
    )  # fmt: skip
    ProsecoDiT(config).save_pretrained(str(tmp_path / "model"))
    SamplingConfig(steps=5, eos_id=9, top_p=0.7).save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def _printed(argv, capsys) -> SamplingConfig:
    from proseco.commands import sample as cli

    assert cli.run(_cli_parse(argv + ["--print-config"])) == 0
    return SamplingConfig.from_json(capsys.readouterr().out)


def test_cli_preset_overrides_the_saved_config_and_flags_override_the_preset(model_dir, capsys):
    d = str(model_dir)
    # no --length: the model's 16 positions, so blocks of 16 and 16 / 4 = 4 steps
    config = _printed([d, "--preset", "fast"], capsys)
    saved = SamplingConfig(steps=5, eos_id=9, top_p=0.7)
    assert config == apply_preset(saved, "fast", length=16).replace(stop_at_eos=True)
    assert (config.steps, config.block_length, config.eos_id, config.top_p) == (4, 16, 9, 0.7)
    assert not _printed([d, "--preset", "fast", "--no-stop-at-eos"], capsys).stop_at_eos
    config = _printed([d, "--preset", "max", "--length", "8", "--steps", "4",
                       "--corrector-steps", "1"], capsys)  # fmt: skip
    assert (config.steps, config.block_length) == (4, 8)
    assert config.corrector == Corrector(steps=1, every=1)
    assert _printed([d], capsys).steps == 5  # no preset: the saved config


def test_cli_preset_writes_samples_and_rejects_unknown_names(model_dir, tmp_path):
    from proseco.commands import sample as cli

    out = tmp_path / "s.jsonl"
    argv = [str(model_dir), "-o", str(out), "--preset", "balanced", "--length", "8",
            "--num-samples", "2", "--no-progress"]  # fmt: skip
    assert cli.run(_cli_parse(argv)) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and rows[0]["sampling_config"]["corrector"]["steps"] == 4
    assert rows[0]["denoiser_nfe"] <= 4
    with pytest.raises(ConfigError, match="did you mean 'balanced'"):
        cli.run(_cli_parse([str(model_dir), "--preset", "balance", "--print-config"]))
