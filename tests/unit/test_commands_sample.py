"""``proseco sample MODEL_DIR``: JSONL output, saved configs and overrides, reproduction, prompts,
guidance, and failures that leave earlier outputs intact."""

from __future__ import annotations

import argparse
import json
import shlex

import pytest
import torch

from proseco.commands import sample as cli
from proseco.errors import ConfigError, ModelLoadError, ProsecoError
from proseco.sampling import Corrector, SamplingConfig

CHARS = "abcdefgh"
V = len(CHARS) + 3  # + [PAD] [EOS] [MASK]
PAD, EOS, MASK = len(CHARS), len(CHARS) + 1, len(CHARS) + 2


def save_model(path, tokenizer: bool = True, num_classes: int = 0) -> None:
    from proseco.models.dit import ProsecoDiT
    from proseco.models.dit_config import ProsecoDiTConfig

    torch.manual_seed(0)
    config = ProsecoDiTConfig(
        vocab_size=V, hidden_size=16, num_layers=1, num_heads=2, cond_dim=8, max_length=12,
        mask_token_id=MASK, num_classes=num_classes, dropout=0.0,
    )  # fmt: skip
    model = ProsecoDiT(config)
    with torch.no_grad():  # the DiT starts with zero output weights; make the logits non-trivial
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
        model.lm_head.bias.zero_()
    model.save_pretrained(str(path))
    if tokenizer:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        vocab = {c: i for i, c in enumerate(CHARS)} | {"[PAD]": PAD, "[EOS]": EOS, "[MASK]": MASK}
        tok = Tokenizer(models.WordLevel(vocab, unk_token="[PAD]"))
        tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
        tok.decoder = decoders.Fuse()
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok, pad_token="[PAD]", eos_token="[EOS]", mask_token="[MASK]"
        )
        fast.save_pretrained(str(path))


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def read(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_writes_one_line_per_sample_with_text_tokens_settings_and_nfes(tmp_path):
    save_model(tmp_path / "model")
    out = tmp_path / "s.jsonl"
    argv = [
        str(tmp_path / "model"), "-o", str(out), "--num-samples", "5", "--batch-size", "2",
        "--steps", "6", "--corrector-steps", "2", "--corrector-every", "2", "--seed", "3",
        "--temperature", "5", "--no-progress",
    ]  # fmt: skip
    assert cli.run(parse(argv)) == 0
    lines = read(out)
    assert [r["index"] for r in lines] == list(range(5))
    assert [r["batch"] for r in lines] == [0, 0, 1, 1, 2]
    for r in lines:
        assert len(r["tokens"]) == 12 and MASK not in r["tokens"]
        before_eos = r["tokens"][: r["tokens"].index(EOS)] if EOS in r["tokens"] else r["tokens"]
        assert r["text"] == "".join(CHARS[t] for t in before_eos if t < len(CHARS))
        assert r["nfe"] == r["denoiser_nfe"] + r["corrector_nfe"] and r["corrector_nfe"] > 0
        assert r["seed"] == 3 and r["sampling_config"]["corrector"]["steps"] == 2
        assert r["sampling_config"]["corrector"]["every"] == 2
    # the recorded command reproduces the file exactly
    again = tmp_path / "again.jsonl"
    command = shlex.split(lines[0]["command"])
    assert command[:2] == ["proseco", "sample"]
    cli.run(parse(command[2:] + ["-o", str(again), "--no-progress"]))
    assert [r["tokens"] for r in read(again)] == [r["tokens"] for r in lines]
    assert len({tuple(r["tokens"]) for r in lines}) == 5  # the samples differ
    assert any(EOS in r["tokens"][:-1] for r in lines)  # so the EOS cut was exercised
    research = tmp_path / "research.jsonl"
    cli.run(parse(command[2:] + ["-o", str(research), "--no-progress", "--eos-rule", "research"]))
    for r in read(research):
        assert r["text"] == "".join(CHARS[t] for t in r["tokens"] if t < len(CHARS))


def test_without_a_tokenizer_only_token_ids_are_written(tmp_path):
    save_model(tmp_path / "model", tokenizer=False)
    out = tmp_path / "s.jsonl"
    cli.run(parse([str(tmp_path / "model"), "-o", str(out), "--num-samples", "2", "--steps", "4",
                   "--length", "8", "--no-progress"]))  # fmt: skip
    lines = read(out)
    assert len(lines) == 2 and "text" not in lines[0] and len(lines[0]["tokens"]) == 8


def test_prompts_blocks_and_guidance_options(tmp_path):
    save_model(tmp_path / "model", num_classes=2)
    out = tmp_path / "s.jsonl"
    argv = [
        str(tmp_path / "model"), "-o", str(out), "--num-samples", "3", "--prompt", "abc",
        "--prompt", "d", "--length", "8", "--block-length", "4", "--steps", "4",
        "--unmasking", "confidence", "--corrector-steps", "1", "--condition", "1",
        "--guidance-gamma", "2.0", "--eos-id", str(EOS), "--stop-at-eos", "--no-progress",
    ]  # fmt: skip
    cli.run(parse(argv))
    lines = read(out)
    # laid out as SFT lays out a prompt: [BOS] prompt, BOS falling back to EOS here
    assert [r["prompt_tokens"] for r in lines] == [[EOS, 0, 1, 2], [EOS, 3], [EOS, 0, 1, 2]]
    assert all(len(r["tokens"]) == 8 for r in lines)
    assert all(r["denoiser_nfe"] % 2 == 0 for r in lines)  # guided calls cost 2


def test_a_text_prompt_is_encoded_as_sft_encoded_it(tmp_path):
    """D6: ``--prompt`` gets the layout SFT trained on: ``[BOS] prompt``, or the tokenizer's chat
    template (one user turn + generation prompt); the SFT run's ``data.chat_template`` (in the
    run's config.yaml, beside final/) is the default and ``--chat-template`` overrides it."""
    from transformers import AutoTokenizer

    from proseco.data.text import encode_sft

    model = tmp_path / "run" / "final"
    save_model(model)
    tok = AutoTokenizer.from_pretrained(str(model))
    tok.chat_template = "{% for m in messages %}[PAD]{{ m['content'] }}{% endfor %}[EOS]"
    tok.save_pretrained(str(model))

    def prompt_tokens(*flags):
        out = tmp_path / "s.jsonl"
        cli.run(parse([str(model), "-o", str(out), "--num-samples", "1", "--prompt", "abc",
                       "--length", "4", "--steps", "2", "--no-progress", *flags]))  # fmt: skip
        return read(out)[0]["prompt_tokens"], read(out)[0]["settings"]["chat_template"]

    def sft_prompt(chat_template):
        batch = encode_sft(["abc"], ["d"], tok, max_length=12, chat_template=chat_template)
        return batch["input_ids"][0][batch["prompt_mask"][0]].tolist()

    assert prompt_tokens() == ([PAD, 0, 1, 2, EOS], "auto") == (sft_prompt("auto"), "auto")
    assert prompt_tokens("--chat-template", "none") == ([EOS, 0, 1, 2], "none")
    assert sft_prompt("none") == [EOS, 0, 1, 2]
    (tmp_path / "run" / "config.yaml").write_text(
        "data: {kind: sft, chat_template: none}\n"
    )  # the SFT run trained without the template
    assert prompt_tokens() == ([EOS, 0, 1, 2], "none")
    (tmp_path / "run" / "config.yaml").write_text("data: {kind: text}\n")  # pretraining
    assert prompt_tokens()[0] == [EOS, 0, 1, 2]


def test_a_preset_stops_at_the_tokenizers_eos_and_no_progress_is_quiet(tmp_path, capfd):
    save_model(tmp_path / "model")  # no sampling_config.json: EOS only in the tokenizer
    out = tmp_path / "s.jsonl"
    cli.run(parse([str(tmp_path / "model"), "-o", str(out), "--num-samples", "2", "--preset",
                   "fast", "--length", "5", "--no-progress"]))  # fmt: skip
    record = read(out)[0]
    assert (record["sampling_config"]["eos_id"], record["sampling_config"]["stop_at_eos"]) == (
        EOS, True,
    )  # fmt: skip
    assert record["length"] == 5 and record["sampling_config"]["block_length"] == 5
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "sampling" not in err


def test_remdm_option_runs(tmp_path):
    save_model(tmp_path / "model")
    out = tmp_path / "s.jsonl"
    cli.run(parse([str(tmp_path / "model"), "-o", str(out), "--num-samples", "2", "--steps", "8",
                   "--unmasking", "remdm:mode=loop,eta=0.05", "--top-p", "0.9",
                   "--no-progress"]))  # fmt: skip
    lines = read(out)
    assert all(MASK not in r["tokens"] for r in lines)
    assert lines[0]["sampling_config"]["unmasking"] == {
        "name": "remdm",
        "mode": "loop",
        "eta": 0.05,
        "t_on": 0.55,
        "t_off": 0.05,
        "alpha_on": 0.9,
    }


def test_clear_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        cli.run(parse([str(tmp_path / "missing"), "--no-progress"]))
    save_model(tmp_path / "model", tokenizer=False)
    with pytest.raises(ValueError, match="tokenizer"):
        cli.run(parse([str(tmp_path / "model"), "--prompt", "ab", "--no-progress"]))
    with pytest.raises(ValueError, match="--condition"):
        cli.run(parse([str(tmp_path / "model"), "--guidance-gamma", "2", "--no-progress"]))


def test_is_registered_as_a_subcommand():
    from proseco.commands import build_parser

    args = build_parser("sample").parse_args(["sample", "some_dir", "--steps", "3"])
    assert args._run is cli.run and args.steps == 3


def test_a_saved_sampling_config_is_used_and_flags_override_it(tmp_path):
    save_model(tmp_path / "model")
    saved = SamplingConfig(steps=4, corrector=Corrector(steps=2, every=2), top_p=0.9)
    saved.save_pretrained(tmp_path / "model")
    out = tmp_path / "s.jsonl"
    cli.run(parse([str(tmp_path / "model"), "-o", str(out), "--num-samples", "2", "--no-progress"]))
    first = SamplingConfig.from_dict(read(out)[0]["sampling_config"])
    assert first == saved.replace(pad_id=PAD)  # the tokenizer's pad id is filled in
    cli.run(parse([str(tmp_path / "model"), "-o", str(out), "--num-samples", "2", "--steps", "6",
                   "--corrector-every", "1", "--no-progress"]))  # fmt: skip
    used = SamplingConfig.from_dict(read(out)[0]["sampling_config"])
    assert used == saved.replace(steps=6, corrector=Corrector(steps=2, every=1), pad_id=PAD)
    cli.run(parse([str(tmp_path / "model"), "-o", str(out), "--num-samples", "1",
                   "--corrector-steps", "0", "--no-progress"]))  # fmt: skip
    assert read(out)[0]["sampling_config"]["corrector"] is None
    assert read(out)[0]["corrector_nfe"] == 0


def test_print_config_shows_the_resolved_settings(tmp_path, capsys):
    save_model(tmp_path / "model")
    argv = [str(tmp_path / "model"), "--print-config", "--unmasking", "threshold:threshold=0.7",
            "--corrector-steps", "1", "--corrector-update", "top_k_positions:positions=2"]  # fmt: skip
    assert cli.run(parse(argv)) == 0
    config = SamplingConfig.from_json(capsys.readouterr().out)
    assert config.unmasking.threshold == 0.7
    assert config.corrector.update.positions == 2
    assert not (tmp_path / "samples.jsonl").exists()


@pytest.mark.parametrize(
    "flags, error, match",
    [
        (["--steps", "0"], ConfigError, "steps"),
        (["--length", "100"], ConfigError, "maximum length"),
        (["--corrector-steps", "-1"], ConfigError, "steps"),
        (["--batch-size", "0"], ConfigError, "--batch-size"),
        (["--num-samples", "0"], ConfigError, "--num-samples"),
        (["--prompt-ids", "1,2,abc"], ConfigError, "integer ids"),
        (["--temperature", "inf"], ConfigError, "finite"),
        (["--unmasking", "treshold"], ConfigError, "did you mean 'threshold'"),
        (["--corrector-steps", "1", "--corrector-update", "top_k"], ConfigError, "top_k_positions"),
        (["--device", "cuda:0"], ConfigError, "CUDA"),
    ],
)
def test_a_failing_command_leaves_an_earlier_output_intact(tmp_path, flags, error, match):
    if "cuda" in flags[-1] and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    save_model(tmp_path / "model")
    keep = tmp_path / "keep.jsonl"
    keep.write_text('{"index": 0}\n{"index": 1}\n')
    with pytest.raises(error, match=match):
        cli.run(parse([str(tmp_path / "model"), "-o", str(keep), "--no-progress", *flags]))
    assert keep.read_text() == '{"index": 0}\n{"index": 1}\n'
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".keep")] == []


def test_a_garbled_checkpoint_is_one_clear_error(tmp_path):
    save_model(tmp_path / "model")
    weights = tmp_path / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelLoadError, match="model.safetensors|cannot load"):
        cli.run(parse([str(tmp_path / "model"), "--no-progress"]))


def test_the_command_line_prints_one_line_and_exits_2(tmp_path, capsys):
    from proseco.commands import main

    assert main(["sample", str(tmp_path / "missing"), "-o", str(tmp_path / "s.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not exist" in err and "Traceback" not in err
    assert issubclass(ModelLoadError, ProsecoError)


def test_until_eos_keeps_a_sample_that_opens_with_a_bos_equal_to_its_eos():
    from proseco.commands.sample import _until_eos

    # GPT-2 layout: <|endoftext|> (7) is both BOS and EOS; the first one opens the sample.
    assert _until_eos([7, 1, 2, 7, 3], eos_id=7, bos_id=7) == [1, 2]
    # A distinct BOS is left alone (decode drops it as a special token); EOS still cuts.
    assert _until_eos([5, 1, 2, 7, 3], eos_id=7, bos_id=5) == [5, 1, 2]
    assert _until_eos([1, 2], eos_id=None, bos_id=None) == [1, 2]


def test_each_record_carries_its_own_rows_model_evaluations():
    from types import SimpleNamespace

    from proseco.commands.sample import _row_nfe

    out = SimpleNamespace(
        nfe=5.5, denoiser_nfe=4.0, corrector_nfe=1.5,
        nfe_per_row=torch.tensor([7, 4]), corrector_nfe_per_row=torch.tensor([3, 0]),
    )  # fmt: skip
    assert _row_nfe(out, 0) == {"nfe": 7, "denoiser_nfe": 4, "corrector_nfe": 3}
    assert _row_nfe(out, 1) == {"nfe": 4, "denoiser_nfe": 4, "corrector_nfe": 0}
    out.nfe_per_row = None  # a sampler without per-row counts: the batch means
    assert _row_nfe(out, 1) == {"nfe": 5.5, "denoiser_nfe": 4.0, "corrector_nfe": 1.5}
