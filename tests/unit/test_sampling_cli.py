"""``proseco sample MODEL_DIR``: JSONL output, settings for reproduction, prompts, guidance."""

from __future__ import annotations

import argparse
import json
import shlex

import pytest
import torch

from proseco.sampling import cli

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
        assert r["text"] == "".join(CHARS[t] for t in r["tokens"] if t < len(CHARS))
        assert r["nfe"] == r["denoiser_nfe"] + r["corrector_nfe"] and r["corrector_nfe"] > 0
        assert r["seed"] == 3 and r["settings"]["corrector_steps"] == 2
    # the recorded command reproduces the file exactly
    again = tmp_path / "again.jsonl"
    command = shlex.split(lines[0]["command"])
    assert command[:2] == ["proseco", "sample"]
    cli.run(parse(command[2:] + ["-o", str(again), "--no-progress"]))
    assert [r["tokens"] for r in read(again)] == [r["tokens"] for r in lines]
    assert len({tuple(r["tokens"]) for r in lines}) == 5  # the samples differ


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
    assert [r["prompt_tokens"] for r in lines] == [[0, 1, 2], [3], [0, 1, 2]]
    assert all(len(r["tokens"]) == 8 for r in lines)
    assert all(r["denoiser_nfe"] % 2 == 0 for r in lines)  # guided calls cost 2


def test_remdm_option_runs(tmp_path):
    save_model(tmp_path / "model")
    out = tmp_path / "s.jsonl"
    cli.run(parse([str(tmp_path / "model"), "-o", str(out), "--num-samples", "2", "--steps", "8",
                   "--remdm", "loop", "--eta", "0.05", "--top-p", "0.9", "--no-progress"]))  # fmt: skip
    assert all(MASK not in r["tokens"] for r in read(out))


def test_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        cli.run(parse([str(tmp_path / "missing"), "--no-progress"]))
    save_model(tmp_path / "model", tokenizer=False)
    with pytest.raises(ValueError, match="tokenizer"):
        cli.run(parse([str(tmp_path / "model"), "--prompt", "ab", "--no-progress"]))
    with pytest.raises(ValueError, match="--condition"):
        cli.run(parse([str(tmp_path / "model"), "--guidance-gamma", "2", "--no-progress"]))


def test_is_registered_as_a_subcommand():
    from proseco.cli import build_parser

    args = build_parser("sample").parse_args(["sample", "some_dir", "--steps", "3"])
    assert args._run is cli.run and args.steps == 3
