"""``--cache none|prefix|dual`` on every command that samples, and ``cache`` in serve requests."""

from __future__ import annotations

import argparse

import pytest

from proseco.commands import build_parser
from proseco.commands import sample as cli
from proseco.commands.eval_code import cache_to_model_args
from proseco.commands.options import CACHE_MODES
from proseco.errors import ConfigError
from proseco.sampling import SamplingConfig
from proseco.sampling.config import CACHE_MODES as CONFIG_CACHE_MODES
from tests.unit.serve_helpers import save_dit


@pytest.fixture(scope="module")
def dit(tmp_path_factory):
    return save_dit(tmp_path_factory.mktemp("dit") / "model")


def test_the_flags_choices_are_the_settings_values():
    assert CACHE_MODES == CONFIG_CACHE_MODES


def test_sample_writes_samples_decoded_with_the_cache(tmp_path, dit):
    import json

    out = tmp_path / "s.jsonl"
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    cli.run(parser.parse_args([
        str(dit), "-o", str(out), "--num-samples", "2", "--prompt", "ab", "--length", "8",
        "--block-length", "4", "--steps", "8", "--unmasking", "confidence", "--cache", "dual",
        "--corrector-steps", "1", "--no-progress",
    ]))  # fmt: skip
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["sampling_config"]["cache"] for r in records} == {"dual"}
    assert SamplingConfig.from_dict(records[0]["sampling_config"]).cache == "dual"


@pytest.mark.parametrize("command", ["sample", "generate", "chat", "serve"])
def test_every_sampling_command_takes_the_flag(command):
    argv = {"sample": ["sample", "m"], "generate": ["generate", "m", "hi"],
            "chat": ["chat", "m"], "serve": ["serve", "m"]}[command]  # fmt: skip
    args = build_parser(command).parse_args([*argv, "--cache", "prefix"])
    assert args.cache == "prefix"
    assert build_parser(command).parse_args(argv).cache is None  # not given: the saved value
    with pytest.raises(SystemExit):
        build_parser(command).parse_args([*argv, "--cache", "full"])


def test_humaneval_generation_takes_the_flag():
    args = build_parser("eval").parse_args(
        ["eval", "humaneval", "s.jsonl", "--generate", "m", "--cache", "dual"]
    )
    assert args.cache == "dual"


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--tasks", "gsm8k"], ["--tasks", "gsm8k"]),
        (["--cache", "dual", "--model_args", "pretrained=m,preset=fast"],
         ["--model_args", "pretrained=m,preset=fast,cache=dual"]),
        (["--model_args=pretrained=m", "--cache=prefix"], ["--model_args=pretrained=m,cache=prefix"]),
        (["--tasks", "x", "--cache", "none"], ["--tasks", "x", "--model_args", "cache=none"]),
    ],
)  # fmt: skip
def test_lm_eval_gets_the_cache_as_a_model_argument(argv, expected):
    assert cache_to_model_args(argv) == expected


def test_lm_eval_refuses_a_bad_cache():
    with pytest.raises(ConfigError, match="--cache must be one of"):
        cache_to_model_args(["--cache", "full"])
    with pytest.raises(ConfigError, match="needs a value"):
        cache_to_model_args(["--cache"])


def test_an_engine_without_flags_and_one_with_cache(dit):
    from proseco.pretrained import load_pretrained
    from proseco.serving.engine import Engine

    model, tok, saved = load_pretrained(dit)
    plain = Engine(model, tok, saved, mask_id=tok.mask_token_id)  # no flags at all
    assert plain.config_for(16).cache == "none"
    args = build_parser("serve").parse_args(["serve", str(dit), "--cache", "dual"])
    cached = Engine(model, tok, saved, mask_id=tok.mask_token_id, flags=args)
    config = cached.config_for(16)
    assert config.cache == "dual"
    prompt = cached.format.chat([{"role": "user", "content": "hi"}])
    config = config.replace(steps=8, block_length=4, unmasking="confidence", temperature=0.0)
    (result,), out = cached.generate([prompt], config, 8)
    assert out.nfe == 8 and result.text is not None


def test_a_serve_request_may_ask_for_the_cache(dit):
    from proseco.pretrained import load_pretrained
    from proseco.serving.engine import Engine
    from proseco.serving.protocol import RequestError, parse_chat

    model, tok, saved = load_pretrained(dit)
    engine = Engine(model, tok, saved, mask_id=tok.mask_token_id)
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    job = parse_chat({**body, "cache": "dual"}, engine)
    assert job.config.cache == "dual"
    with pytest.raises(RequestError) as err:
        parse_chat({**body, "cache": "full"}, engine)
    assert err.value.param == "cache"


def test_the_lm_eval_model_decodes_with_the_cache_model_argument(dit):
    pytest.importorskip("lm_eval")
    from proseco.eval.harness import ProsecoLM

    lm = ProsecoLM(str(dit), preset="fast", cache="dual", max_gen_toks=8)
    assert lm.config_for(8).cache == "dual"
    (answer,) = lm.generate(["ab"], until=[], max_gen_toks=8)
    assert isinstance(answer, str) and lm.stats.to_dict()["nfe_per_answer"] > 0
