"""SamplingConfig: validation that names the field and the fix, JSON round trips of every strategy,
saving beside a model, and ``sample(model, config, **overrides)``."""

from __future__ import annotations

import json

import pytest
import torch

from proseco.errors import ConfigError, ModelLoadError
from proseco.sampling import (
    Confidence,
    Corrector,
    Guidance,
    ReMDM,
    SamplingConfig,
    Threshold,
    TopKPositions,
    sample,
)
from proseco.sampling.testing import ToyDenoiser
from proseco.schedules import CosineSchedule, PolynomialSchedule

V, MASK = 12, 11


@pytest.mark.parametrize(
    "config",
    [
        SamplingConfig(),
        SamplingConfig(steps=8, corrector=Corrector(2, every=2, start=3)),
        SamplingConfig(unmasking=Confidence(counts="schedule", score="random"), block_length=4),
        SamplingConfig(unmasking=Threshold(0.7), eos_id=3, stop_at_eos=True, pad_id=2),
        SamplingConfig(unmasking=ReMDM("loop", eta=0.05, t_on=0.6), top_p=0.9, float64=True),
        SamplingConfig(corrector=Corrector(1, update=TopKPositions(3), early_exit=False)),
        SamplingConfig(corrector=Corrector(1, update="sample"), temperature=0.5, top_k=4),
        SamplingConfig(guidance=Guidance(gamma=2.0, condition=1, in_corrector=False)),
        SamplingConfig(schedule=PolynomialSchedule(power=2.0), eps=1e-3),
        SamplingConfig(schedule="cosine", conditioning={"class_labels": 1}),
    ],
)
def test_json_round_trip_gives_an_equal_config(config, tmp_path):
    assert SamplingConfig.from_json(config.to_json()) == config
    assert SamplingConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    path = config.save_pretrained(tmp_path)
    assert path.name == "sampling_config.json"
    assert SamplingConfig.from_pretrained(tmp_path) == config
    assert [p.name for p in tmp_path.iterdir()] == ["sampling_config.json"]  # no temp files left


def test_names_and_dicts_become_objects():
    config = SamplingConfig(
        unmasking={"name": "remdm", "mode": "cap", "eta": 0.1},
        corrector={"steps": 2, "update": {"name": "top_k_positions", "positions": 2}},
        guidance={"gamma": 3.0, "condition": 0},
        schedule={"name": "cosine", "eps": 1e-3},
    )
    assert config.unmasking == ReMDM("cap", eta=0.1)
    assert config.corrector == Corrector(2, update=TopKPositions(2))
    assert config.guidance == Guidance(gamma=3.0, condition=0)
    assert config.schedule == CosineSchedule(eps=1e-3)
    assert SamplingConfig(unmasking="threshold:threshold=0.8").unmasking == Threshold(0.8)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=0), "steps must be an int >= 1"),
        (dict(steps=2.5), "steps must be an int >= 1"),
        (dict(temperature=-1.0), "temperature must be a finite number >= 0"),
        (dict(temperature=float("nan")), "temperature must be a finite number >= 0"),
        (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
        (dict(top_k=-1), "top_k must be an int >= 0"),
        (dict(block_length=0), "block_length must be an int >= 1"),
        (dict(eps=1.0), r"eps must be in \(0, 1\)"),
        (dict(eos_id=-3), "eos_id must be a token id"),
        (dict(stop_at_eos=True), "stop_at_eos=True needs eos_id"),
        (dict(float64="yes"), "float64 must be True or False"),
        (dict(schedule="cosin"), "did you mean 'cosine'"),
        (dict(unmasking="remdm:mode=loop,eta=0.5"), "eta <="),
        (dict(corrector=2), "corrector must be a proseco.Corrector"),
        (dict(guidance=Guidance(gamma=float("inf"))), "gamma must be a finite"),
        (dict(conditioning=[1]), "conditioning must be a dict"),
    ],
)
def test_bad_settings_name_the_field_and_the_fix(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SamplingConfig(**kwargs)


def test_unknown_fields_suggest_the_closest_and_old_names_say_what_replaced_them():
    with pytest.raises(ConfigError, match="did you mean 'block_length'"):
        SamplingConfig().replace(block_lenght=4)
    with pytest.raises(ConfigError, match=r"unmasking=proseco.ReMDM"):
        SamplingConfig().replace(remasking=ReMDM())
    with pytest.raises(ConfigError, match="unknown sampling setting 'stepz'"):
        SamplingConfig.from_dict({"stepz": 3})


def test_configs_are_frozen():
    with pytest.raises(AttributeError):
        SamplingConfig().steps = 3


def test_tensor_labels_cannot_be_saved_but_can_be_used():
    config = SamplingConfig(guidance=Guidance(gamma=2.0, condition=torch.tensor([0, 1])))
    with pytest.raises(ConfigError, match="cannot be saved as JSON"):
        config.to_json()
    assert (
        SamplingConfig(guidance=Guidance(gamma=2.0, condition=torch.tensor(1))).to_dict()[
            "guidance"
        ]["condition"]
        == 1
    )


def test_missing_or_corrupt_files_are_clear_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        SamplingConfig.from_pretrained(tmp_path)
    (tmp_path / "sampling_config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="cannot read sampling config"):
        SamplingConfig.from_pretrained(tmp_path)
    (tmp_path / "sampling_config.json").write_text('{"steps": 0}')
    with pytest.raises(ConfigError, match="sampling_config.json: steps must be"):
        SamplingConfig.from_pretrained(tmp_path)


def test_sample_with_a_config_equals_sample_with_the_same_keywords():
    config = SamplingConfig(steps=6, corrector=Corrector(2), top_p=0.9, unmasking="confidence")

    def run(*args, **kwargs):
        return sample(ToyDenoiser(vocab_size=V), *args, mask_id=MASK, batch_size=2, length=8,
                      generator=torch.Generator().manual_seed(0), **kwargs).tokens  # fmt: skip

    by_config = run(config)
    by_keywords = run(steps=6, corrector=Corrector(2), top_p=0.9, unmasking="confidence")
    assert torch.equal(by_config, by_keywords)
    overridden = run(config, steps=8)
    assert torch.equal(overridden, run(config.replace(steps=8)))
    with pytest.raises(ConfigError, match="config must be a proseco.SamplingConfig"):
        run({"steps": 4})


def test_mask_id_and_length_default_to_the_model_config():
    model = ToyDenoiser(vocab_size=V, max_length=10)
    model.config.mask_token_id = MASK
    out = sample(model, steps=5)
    assert out.tokens.shape == (1, 10) and not (out.tokens == MASK).any()
    del model.config.mask_token_id
    with pytest.raises(ConfigError, match="no mask id"):
        sample(model, steps=5)
