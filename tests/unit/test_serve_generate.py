"""``proseco generate`` / ``proseco chat``: SFT's prompt layout, block-by-block streaming through
the sampler's ``on_block`` hook, ``--show-steps``, the NFE line, one-line errors."""

from __future__ import annotations

import io
import sys

import pytest
import torch

from proseco.commands import main
from proseco.sampling import Confidence, Corrector, sample
from proseco.serving.engine import Engine, PromptFormat, RowText
from tests.conftest import MixModel
from tests.unit.serve_helpers import CHAT_TEMPLATE, save_dit, trained_sft_model


@pytest.fixture(scope="module")
def trained():
    return trained_sft_model()


@pytest.fixture(scope="module")
def dit(tmp_path_factory):
    return save_dit(tmp_path_factory.mktemp("dit") / "model")


# -- the sampler hook -----------------------------------------------------------------------------


def _run(model, **kw):
    return sample(model, steps=6, block_length=4, length=12, batch_size=3, mask_id=7,
                  unmasking=Confidence(), temperature=0.0, eos_id=6, **kw)  # fmt: skip


def test_on_block_sees_each_finished_block_and_changes_nothing():
    model = MixModel(vocab_size=8, length=12)
    seen = []

    def on_block(block, end, tokens, history):
        seen.append((block, end, tokens.clone()))
        return None

    plain = _run(model)
    hooked = _run(model, on_block=on_block)
    assert torch.equal(plain.tokens, hooked.tokens) and plain.model_calls == hooked.model_calls
    assert [(b, e) for b, e, _ in seen] == [(0, 4), (1, 8), (2, 12)]
    for _, end, tokens in seen:
        assert not (tokens[:, :end] == 7).any()  # the block is complete
        assert (tokens[:, end:] == 7).all()  # later blocks not started
    assert torch.equal(seen[-1][2], plain.tokens)


def test_on_block_can_stop_rows_which_then_cost_no_model_calls():
    model = MixModel(vocab_size=8, length=12)
    first = []  # the plain run's tokens after block 0 (its corrector rewrites them later)
    plain = _run(model, corrector=Corrector(steps=2, every=1),
                 on_block=lambda b, e, t, h: first.append(t.clone()) if b == 0 else None)  # fmt: skip
    stopped = _run(model, corrector=Corrector(steps=2, every=1),
                   on_block=lambda b, e, t, h: torch.tensor([b == 0, False, False]))  # fmt: skip
    assert torch.equal(stopped.tokens[0, :4], first[0][0, :4])
    assert (stopped.tokens[0, 4:] == 6).all()  # filled with EOS
    assert torch.equal(stopped.tokens[1:], plain.tokens[1:])  # other rows unaffected
    assert stopped.nfe_per_row[0] < plain.nfe_per_row[0]
    assert torch.equal(stopped.nfe_per_row[1:], plain.nfe_per_row[1:])
    # every row stopped: the run ends after the first block
    early = _run(model, on_block=lambda b, e, t, h: torch.ones(3, dtype=torch.bool))
    assert early.model_calls < plain.model_calls and (early.tokens[:, 4:] == 6).all()


# -- prompt layout --------------------------------------------------------------------------------


@pytest.mark.parametrize("template", [None, CHAT_TEMPLATE])
def test_prompts_are_laid_out_exactly_as_sft_encoded_them(template):
    from proseco.data.char_tokenizer import char_tokenizer
    from proseco.data.text import encode_sft

    tok = char_tokenizer()
    tok.chat_template = template
    prompts = ["What is 7 + 10?", "Spell 'stone' backwards."]
    enc = encode_sft(prompts, ["17", "enots"], tok, max_length=64)
    fmt = PromptFormat(tok)
    assert fmt.uses_template == (template is not None)
    for i, prompt in enumerate(prompts):
        trained = enc["input_ids"][i][enc["prompt_mask"][i]].tolist()
        assert fmt.chat([{"role": "user", "content": prompt}]) == trained
    if template is None:
        assert trained[0] == tok.bos_token_id
    # "none" ignores a template, as data.chat_template: none did
    plain = PromptFormat(tok, "none").chat([{"role": "user", "content": "hi"}])
    assert plain == [tok.bos_token_id, *tok("hi", add_special_tokens=False)["input_ids"]]


def test_multi_turn_layout_without_a_template_repeats_the_sft_rows():
    from proseco.data.char_tokenizer import char_tokenizer

    tok = char_tokenizer()
    fmt = PromptFormat(tok)
    ids = fmt.chat([
        {"role": "system", "content": "S"}, {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"},
    ])  # fmt: skip
    enc = tok("S\n\nab", add_special_tokens=False)["input_ids"]
    assert ids == [
        tok.bos_token_id,
        *enc,
        tok.eos_token_id,
        *tok("c", add_special_tokens=False)["input_ids"],
    ]
    assert fmt.completion("ab") == [
        tok.bos_token_id,
        *tok("ab", add_special_tokens=False)["input_ids"],
    ]


def test_generate_lays_prompts_out_as_the_sft_run_did(tmp_path, dit, capsys, monkeypatch):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(dit, run / "final")
    seen = []
    original = PromptFormat.chat

    def spy(self, messages):
        seen.append(self.chat_template)
        return original(self, messages)

    monkeypatch.setattr(PromptFormat, "chat", spy)
    for setting in ("auto", "none"):
        (run / "config.yaml").write_text(f"data:\n  kind: sft\n  chat_template: {setting}\n")
        argv = ["generate", str(run / "final"), "hi", "--max-new-tokens", "2", "--no-progress"]
        assert main(argv) == 0
    assert main([*argv, "--chat-template", "auto"]) == 0
    assert seen == ["auto", "none", "auto"]


# -- streaming ------------------------------------------------------------------------------------


def test_text_streams_block_by_block_and_adds_up_to_the_answer(dit):
    from proseco.pretrained import load_pretrained

    model, tok, saved = load_pretrained(dit)
    engine = Engine(model, tok, saved, mask_id=tok.mask_token_id)
    prompt = engine.format.chat([{"role": "user", "content": "hello"}])
    config, length = engine.plan(len(prompt), 16)
    config = config.replace(steps=8, block_length=4, temperature=0.0, unmasking="confidence")
    deltas = []
    g = torch.Generator().manual_seed(0)
    (result,), out = engine.generate([prompt], config, length, generator=g,
                                     on_text=lambda row, d: deltas.append(d))  # fmt: skip
    assert 1 <= len(deltas) <= 4  # at most one chunk per block
    assert not result.revised and "".join(deltas) + result.unsent == result.text
    plain, _ = engine.generate([prompt], config, length,
                               generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert plain[0].text == result.text  # streaming does not change the answer
    assert result.nfe == int(out.nfe_per_row[0]) > 0 and result.prompt_tokens == len(prompt)


def test_row_text_cuts_at_eos_and_stop_strings_and_holds_back_their_starts():
    from proseco.data.char_tokenizer import char_tokenizer

    tok = char_tokenizer()
    ids = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    row = RowText(tok, tok.eos_token_id, tok.bos_token_id, length=20, stop=("END",))
    assert row.update(ids("abcE")) == "abc"  # "E" may start "END": held back
    assert row.update(ids("abcEx")) == "Ex"
    assert row.update(ids("abcExyEND tail")) == "y" and row.stopped
    text, _, reason = row.finish(ids("abcExyEND tail"))
    assert text == "abcExy" and reason == "stop" and not row.revised
    eos = RowText(tok, tok.eos_token_id, tok.bos_token_id, length=20)
    assert eos.finish([*ids("hi"), tok.eos_token_id, *ids("junk")])[::2] == ("hi", "stop")
    assert eos.finish(ids("a" * 30))[1] == ids("a" * 20)  # cut to the requested length
    revised = RowText(tok, tok.eos_token_id, tok.bos_token_id, length=20)
    revised.update(ids("abc"))
    assert revised.finish(ids("abd"))[0] == "abd" and revised.revised


# -- the commands ---------------------------------------------------------------------------------


def test_generate_answers_a_trained_sft_model_and_reports_nfe_and_speed(trained, capsys):
    code = main(["generate", str(trained), "What is 7 + 10?", "--preset", "fast",
                 "--max-new-tokens", "16", "--no-progress"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0
    assert captured.out.endswith("\n")
    last = captured.err.strip().splitlines()[-1]
    assert "NFE" in last and "tokens/s" in last and "corrector" in last


def test_generate_show_steps_prints_denoising_and_corrector_steps(dit, capsys):
    code = main(["generate", str(dit), "hi", "--show-steps", "--steps", "8", "--block-length",
                 "4", "--max-new-tokens", "8", "--corrector-steps", "2", "--corrector-every",
                 "1", "--temperature", "2", "--no-progress", "--no-color"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    steps = [line for line in out.splitlines() if line.lstrip().startswith(("step", "fill"))]
    assert len(steps) >= 2 and all("t=" in s and "nfe=" in s for s in steps)
    assert any(" C t=" in s for s in steps)  # corrector firings are marked
    assert "[" in out  # revealed tokens


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--max-new-tokens", "-5"], "--max-new-tokens must be >= 1"),
        (["--max-new-tokens", "500"], "exceed the model's maximum length"),
        (["--preset", "nope"], "unknown decoding preset"),
        (["--chat-template", "none", "--steps", "0"], "steps"),
    ],
)
def test_generate_bad_input_is_one_line_and_status_2(dit, capsys, argv, message):
    code = main(["generate", str(dit), "hi", "--no-progress", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("proseco generate: error:") and message in err[-1]


def test_generate_reports_a_missing_model_and_an_empty_prompt(tmp_path, dit, capsys):
    assert main(["generate", str(tmp_path / "nope"), "hi"]) == 2
    assert main(["generate", str(dit), "  "]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith("proseco generate: error:") for line in err[-2:])


def test_chat_keeps_the_history_and_resets_it(dit, capsys, monkeypatch):
    calls = []
    original = PromptFormat.chat

    def spy(self, messages):
        calls.append([dict(m) for m in messages])
        return original(self, messages)

    monkeypatch.setattr(PromptFormat, "chat", spy)
    monkeypatch.setattr(sys, "stdin", io.StringIO("ab\ncd\n/reset\nef\n"))
    code = main(["chat", str(dit), "--max-new-tokens", "4", "--steps", "4", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0
    assert [[m["role"] for m in c] for c in calls] == [
        ["user"],
        ["user", "assistant", "user"],
        ["user"],
    ]
    assert calls[1][0]["content"] == "ab" and calls[1][2]["content"] == "cd"
    assert calls[2][0]["content"] == "ef"
    assert captured.err.count("NFE") == 3


def test_serve_without_the_extra_is_a_one_line_error(dit, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # `import fastapi` raises ImportError
    assert main(["serve", str(dit), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("proseco serve: error:") and 'pip install "proseco[serve]"' in err
