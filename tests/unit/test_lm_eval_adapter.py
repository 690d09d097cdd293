"""The lm-eval adapter (``proseco.eval.harness``): exact ELBO values on a constant model, stop
strings and EOS cuts, padded batches equal one-by-one decoding, and local lm-eval tasks (a
generation task and a multiple-choice task) run end to end through ``simple_evaluate`` and
``proseco eval lm-eval``. No download: the tasks read JSONL files in a temporary directory."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch
from torch import nn

pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402

from proseco.data.char_tokenizer import char_tokenizer  # noqa: E402
from proseco.errors import ConfigError  # noqa: E402
from proseco.eval.harness import (  # noqa: E402
    ProsecoLM,
    elbo_loglikelihood,
    stratified_mask_counts,
)
from proseco.sampling import sample  # noqa: E402

TOK = char_tokenizer()
V = len(TOK)  # 102 ids; <bos>=0 <eos>=1 <mask>=2 <pad>=3


def ids(text: str) -> list[int]:
    return TOK(text, add_special_tokens=False)["input_ids"]


class ConstantModel(nn.Module):
    """The same logits ``bias`` [V] at every position, whatever the input."""

    def __init__(self, bias: torch.Tensor) -> None:
        super().__init__()
        self.bias = nn.Parameter(bias.clone().float())

    def forward(self, input_ids: torch.Tensor, **_: object) -> torch.Tensor:
        return self.bias.expand(*input_ids.shape, -1)


class PatternModel(nn.Module):
    """Position ``l`` strongly predicts ``pattern[l]``: greedy decoding writes the pattern."""

    def __init__(self, pattern: list[int]) -> None:
        super().__init__()
        self.logits = nn.Parameter(10.0 * torch.nn.functional.one_hot(torch.tensor(pattern), V))

    def forward(self, input_ids: torch.Tensor, **_: object) -> torch.Tensor:
        return self.logits[: input_ids.shape[1]].float().expand(input_ids.shape[0], -1, -1)


def a_model() -> ConstantModel:
    """Prefers 'a': p(a) = 4/104, any other non-mask token 1/104 (101 tokens besides the mask)."""
    bias = torch.zeros(V)
    bias[ids("a")[0]] = math.log(4.0)
    bias[TOK.mask_token_id] = 50.0  # excluded from the softmax, as in training
    return ConstantModel(bias)


def save_tiny_dit(path) -> None:
    """A tiny random ProsecoDiT with the character tokenizer, saved as a model directory."""
    from proseco.models.dit import ProsecoDiT, ProsecoDiTConfig

    torch.manual_seed(0)
    config = ProsecoDiTConfig(
        vocab_size=V, hidden_size=16, num_layers=1, num_heads=2, cond_dim=8, max_length=48,
        mask_token_id=TOK.mask_token_id, pad_token_id=TOK.pad_token_id,
        bos_token_id=TOK.bos_token_id, eos_token_id=TOK.eos_token_id, dropout=0.0,
    )  # fmt: skip
    model = ProsecoDiT(config)
    with torch.no_grad():  # the DiT starts with zero output weights; make the logits non-trivial
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    model.save_pretrained(str(path))
    TOK.save_pretrained(str(path))


def write_tasks(root) -> None:
    """Two lm-eval tasks over local JSONL files: ``tiny_gen`` (generate_until) and ``tiny_mc``."""
    docs = [
        {"question": "1+1=", "answer": "2"},
        {"question": "abc", "answer": "d"},
        {"question": "hello world, how", "answer": "are"},
    ]
    (root / "gen.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    mc = [
        {"question": "x", "choices": ["aaa", "bbb"], "label": 0},
        {"question": "y", "choices": ["aaa", "bbb"], "label": 1},
    ]
    (root / "mc.jsonl").write_text("".join(json.dumps(d) + "\n" for d in mc))
    common = (
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        "  data_files:\n"
        "    test: {data}\n"
        f"  cache_dir: {root / 'hf-cache'}\n"
        "test_split: test\n"
    )
    (root / "tiny_gen.yaml").write_text(
        "task: tiny_gen\n"
        + common.format(data=root / "gen.jsonl")
        + "output_type: generate_until\n"
        'doc_to_text: "{{question}}"\n'
        'doc_to_target: "{{answer}}"\n'
        "generation_kwargs:\n"
        '  until: ["\\n"]\n'
        "  max_gen_toks: 8\n"
        "metric_list:\n"
        "  - metric: exact_match\n"
    )
    (root / "tiny_mc.yaml").write_text(
        "task: tiny_mc\n" + common.format(data=root / "mc.jsonl") + "output_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\n'
        'doc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{label}}"\n'
        'target_delimiter: ""\n'
        "metric_list:\n"
        "  - metric: acc\n"
    )


@pytest.fixture
def tasks_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    root = tmp_path / "tasks"
    root.mkdir()
    write_tasks(root)
    return root


def gen_request(context: str, until: list[str], max_gen_toks: int = 8) -> Instance:
    return Instance(
        request_type="generate_until",
        doc={},
        arguments=(context, {"until": until, "max_gen_toks": max_gen_toks}),
        idx=0,
    )


# -- the estimator --------------------------------------------------------------------------------
def test_stratified_mask_counts_cover_every_count_equally():
    counts = stratified_mask_counts(4, 8, torch.Generator().manual_seed(3))
    assert sorted(counts.tolist()) == [1, 1, 2, 2, 3, 3, 4, 4]


def test_elbo_of_a_constant_model_is_exact():
    # Every draw of (n/m) * sum over m masked positions of log p(a) equals n * log p(a).
    value, passes = elbo_loglikelihood(
        a_model(), ids("xy"), ids("aaa"), mask_id=TOK.mask_token_id, mc_num=5, mc_batch_size=2,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert value == pytest.approx(3 * math.log(4 / 104), abs=1e-5)
    assert passes == 3  # 5 draws in passes of 2, 2, 1


def test_elbo_averages_to_the_sum_of_token_log_probs():
    # Mixed targets: draws differ, but the estimator is unbiased for sum_i log p(x_i).
    value, _ = elbo_loglikelihood(
        a_model(), [], ids("ab"), mask_id=TOK.mask_token_id, mc_num=4000, mc_batch_size=4000,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert value == pytest.approx(math.log(4 / 104) + math.log(1 / 104), abs=0.05)


# -- generation -----------------------------------------------------------------------------------
def test_generation_stops_at_eos_and_at_stop_strings():
    # Prompt "ab" -> [<bos> a b]: generated positions 3.. follow the pattern.
    pattern = [0, 0, 0, *ids("xy\nz"), TOK.eos_token_id, *ids("qqqqqqqq")]
    lm = ProsecoLM(PatternModel(pattern), tokenizer=TOK, max_gen_toks=8, steps=8)
    out = lm.generate_until(
        [gen_request("ab", ["\n"]), gen_request("ab", []), gen_request("ab", ["y"])]
    )
    assert out == ["xy", "xy\nz", "x"]
    assert lm.stats.generate_requests == 3
    assert lm.stats.answer_tokens == 3 * 4  # "xy\nz" before the EOS
    assert lm.stats.generated_positions == 3 * 8


def test_padded_batches_equal_one_by_one_decoding(tmp_path):
    save_tiny_dit(tmp_path / "model")
    lm = ProsecoLM(str(tmp_path / "model"), preset="fast", max_gen_toks=8, batch_size=3)
    contexts = ["1+1=", "hello world", "a"]
    batched = lm.generate_until([gen_request(c, []) for c in contexts])
    config = lm.config_for(8)
    assert config.temperature == 0.0 and config.stop_at_eos and config.eos_id == TOK.eos_token_id
    for context, answer in zip(contexts, batched):
        out = sample(lm.model, config, prompt=[TOK.bos_token_id, *ids(context)], length=8)
        row = out.generated[0].tolist()
        row = row[: row.index(TOK.eos_token_id)] if TOK.eos_token_id in row else row
        assert answer == TOK.decode(row, skip_special_tokens=True)
    assert lm.stats.to_dict()["nfe_per_answer"] > 0


def test_rolling_loglikelihood_sums_exact_window_elbos():
    # max_length 3 -> windows of 2 tokens, each scored after the token before it.
    lm = ProsecoLM(a_model(), tokenizer=TOK, max_length=3, mc_num=3)
    request = Instance(request_type="loglikelihood_rolling", doc={}, arguments=("aaaaa",), idx=0)
    (value,) = lm.loglikelihood_rolling([request])
    assert value == pytest.approx(5 * math.log(4 / 104), abs=1e-5)
    assert lm.stats.loglikelihood_requests == 3  # windows of 2, 2 and 1 tokens


def test_generate_takes_plain_prompts():
    pattern = [0, 0, 0, *ids("xy\nz"), TOK.eos_token_id, *ids("qqqqqqqq")]
    lm = ProsecoLM(PatternModel(pattern), tokenizer=TOK, steps=4)
    assert lm.generate(["ab"], until=["z"], max_gen_toks=4) == ["xy\n"]


def test_model_arguments_build_the_sampling_config(tmp_path):
    lm = ProsecoLM(
        a_model(), tokenizer=TOK, preset="balanced", corrector_steps=1, steps=16,
        max_gen_toks=32,
    )  # fmt: skip
    config = lm.config_for(32)
    assert (config.steps, config.block_length, config.corrector.steps) == (16, 32, 1)
    assert config.corrector.every == 2  # kept from the preset
    assert lm.config_for(64).block_length == 32
    with pytest.raises(ConfigError, match="unknown proseco model argument"):
        ProsecoLM(a_model(), tokenizer=TOK, stepz=3)
    with pytest.raises(ConfigError, match="batch_size=auto"):
        ProsecoLM(a_model(), tokenizer=TOK, batch_size="auto")
    with pytest.raises(ConfigError, match="unknown decoding preset"):
        ProsecoLM(a_model(), tokenizer=TOK, preset="fastest")
    with pytest.raises(ConfigError, match="unknown proseco model argument"):
        ProsecoLM(str(tmp_path / "missing"), stepz=3)  # checked before loading


def test_chat_template_model_argument_lays_prompts_out_as_sft():
    from proseco.data.text import encode_sft

    tok = char_tokenizer()
    tok.chat_template = "{% for m in messages %}<{{ m['content'] }}>{% endfor %}="
    lm = ProsecoLM(a_model(), tokenizer=tok, chat_template="auto", steps=2, max_gen_toks=2)
    batch = encode_sft(["hi"], ["x"], tok, max_length=16)
    assert lm._prompt("hi") == batch["input_ids"][0][batch["prompt_mask"][0]].tolist()
    assert ProsecoLM(a_model(), tokenizer=tok)._prompt("hi") == [tok.bos_token_id, *ids("hi")]
    with pytest.raises(ConfigError, match="chat_template must be auto or none"):
        ProsecoLM(a_model(), tokenizer=tok, chat_template="chatml")


def test_lm_evals_apply_chat_template_finds_the_tokenizers_template(tasks_dir):
    """The README's ``--apply_chat_template``: lm-eval calls ``lm.chat_template(True)``, a method
    that the ``chat_template`` model argument used to shadow with its value (None: a TypeError
    traceback). With both, the context arrives rendered and the model argument is off."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    tok = char_tokenizer()
    tok.chat_template = "{% for m in messages %}<{{ m['content'] }}>{% endfor %}="
    lm = ProsecoLM(a_model(), tokenizer=tok, steps=2)
    assert lm.chat_template(True) == tok.chat_template
    assert ProsecoLM(a_model(), tokenizer=tok, chat_template="auto").chat_template(True)
    results = lm_eval.simple_evaluate(
        model=lm, tasks=["tiny_gen"], apply_chat_template=True, limit=1,
        task_manager=TaskManager(include_path=str(tasks_dir), include_defaults=False),
    )  # fmt: skip
    assert results["config"]["proseco"]["stats"]["generate_requests"] == 1


def test_model_args_may_repeat_batch_size_and_device(tmp_path, caplog):
    """D2: the README's ``--model_args pretrained=DIR,...,batch_size=8,device=cpu`` comes with
    lm-eval's own ``batch_size`` / ``device`` (its command line always passes them): the
    ``model_args`` value wins instead of a ``got multiple values`` TypeError."""
    caplog.set_level("INFO", logger="proseco.eval.harness")
    save_tiny_dit(tmp_path / "model")
    cli = {"batch_size": 2, "max_batch_size": None, "device": "cuda:0"}
    lm = ProsecoLM.create_from_arg_string(
        f"pretrained={tmp_path / 'model'},batch_size=8,device=cpu", cli
    )
    assert lm.batch_size == 8 and lm._device == torch.device("cpu")
    assert "batch_size=8 from model_args" in caplog.text
    lm = ProsecoLM.create_from_arg_obj(
        {"pretrained": str(tmp_path / "model"), "batch_size": "4"}, {"batch_size": 1}
    )
    assert lm.batch_size == 4
    lm = ProsecoLM.create_from_arg_string(f"pretrained={tmp_path / 'model'}", {"batch_size": 3})
    assert lm.batch_size == 3  # only lm-eval's value: used


def test_a_preset_at_an_awkward_max_gen_toks_keeps_few_steps():
    """D8: max_gen_toks=37 (prime) used to mean blocks of 1 token and 37 steps per answer."""
    lm = ProsecoLM(a_model(), tokenizer=TOK, preset="fast", corrector_steps=0, max_gen_toks=37)
    config = lm.config_for(37)
    assert (config.steps, config.block_length) == (10, 19)
    (answer,) = lm.generate(["q"])
    stats = lm.stats.to_dict()
    assert stats["generated_positions"] == 37  # no rounding up to whole blocks
    assert stats["nfe_per_answer"] <= 10


# -- lm-eval end to end ---------------------------------------------------------------------------
def test_multiple_choice_task_scores_exact_elbos(tasks_dir):
    import lm_eval
    from lm_eval.tasks import TaskManager

    lm = ProsecoLM(a_model(), tokenizer=TOK, mc_num=4, mc_batch_size=4)
    results = lm_eval.simple_evaluate(
        model=lm, tasks=["tiny_mc"], task_manager=TaskManager(include_path=str(tasks_dir), include_defaults=False),
        log_samples=True,
    )  # fmt: skip
    assert results["results"]["tiny_mc"]["acc,none"] == 0.5  # picks "aaa" for both docs
    first = results["samples"]["tiny_mc"][0]["resps"]
    assert first[0][0][0] == pytest.approx(3 * math.log(4 / 104), abs=1e-5)
    assert first[1][0][0] == pytest.approx(3 * math.log(1 / 104), abs=1e-5)
    assert [r[0][1] for r in first] == [True, False]  # greedy decoding writes "aaa"
    stats = results["config"]["proseco"]["stats"]
    assert stats["loglikelihood_requests"] == 4
    assert stats["loglikelihood_nfe"] == 4 * (1 + 3)  # one MC pass + 3 greedy steps each


def test_registered_model_runs_both_tasks_from_a_directory(tmp_path, tasks_dir):
    import lm_eval
    from lm_eval.tasks import TaskManager

    save_tiny_dit(tmp_path / "model")
    stats_path = tmp_path / "stats.json"
    results = lm_eval.simple_evaluate(
        model="proseco",
        model_args=f"pretrained={tmp_path / 'model'},preset=fast,mc_num=4,stats_path={stats_path}",
        tasks=["tiny_gen", "tiny_mc"],
        task_manager=TaskManager(include_path=str(tasks_dir), include_defaults=False),
        batch_size=2,
    )
    assert set(results["results"]) == {"tiny_gen", "tiny_mc"}
    assert "exact_match,none" in results["results"]["tiny_gen"]
    assert "acc,none" in results["results"]["tiny_mc"]
    stats = json.loads(stats_path.read_text())
    assert stats == json.loads(json.dumps(results["config"]["proseco"]))
    assert stats["stats"]["generate_requests"] == 3
    assert stats["stats"]["generated_positions"] == 3 * 8
    assert stats["stats"]["nfe_per_answer"] > 0
    assert stats["stats"]["tokens_per_second"] > 0
    assert stats["sampling_configs_by_length"]["8"]["block_length"] == 8
    # the config the answers were decoded with (the task's 8 tokens), not max_gen_toks' 256
    assert stats["sampling_config"] == {**stats["sampling_configs_by_length"]["8"], "length": 8}
    assert stats["answers_by_length"] == {"8": 3}


def test_lm_eval_command_forwards_its_arguments(monkeypatch):
    import lm_eval.__main__

    from proseco.commands import main

    seen = []

    def fake_cli() -> None:
        seen.append(list(sys.argv))
        if "--fail" in sys.argv:
            raise SystemExit(3)

    monkeypatch.setattr(lm_eval.__main__, "cli_evaluate", fake_cli)
    assert main(["eval", "lm-eval", "--tasks", "gsm8k", "-h"]) == 0
    assert main(["eval", "lm-eval", "--model=hf", "--fail"]) == 3
    assert seen == [
        ["lm-eval", "--model", "proseco", "--tasks", "gsm8k", "-h"],
        ["lm-eval", "--model=hf", "--fail"],
    ]
    assert sys.argv[0] != "lm-eval"  # restored


@pytest.mark.slow  # lm-eval's command line indexes its ~15,000 built-in task files (~20 s)
def test_proseco_eval_lm_eval_command(tmp_path, tasks_dir):
    from proseco.commands import main

    save_tiny_dit(tmp_path / "model")
    out_dir = tmp_path / "results"
    status = main([
        "eval", "lm-eval", "--tasks", "tiny_gen", "--include_path", str(tasks_dir),
        "--model_args", f"pretrained={tmp_path / 'model'},preset=fast", "--limit", "2",
        "--output_path", str(out_dir),
    ])  # fmt: skip
    assert status == 0
    (written,) = out_dir.rglob("results_*.json")
    report = json.loads(written.read_text())
    assert report["config"]["model"] == "proseco"
    assert report["config"]["proseco"]["stats"]["generate_requests"] == 2


def test_lm_eval_command_turns_lm_eval_value_errors_into_one_line(monkeypatch, capsys):
    import lm_eval.__main__

    from proseco import commands

    def fail():
        raise ValueError("Tasks not found: nosuchtask")

    monkeypatch.setattr(lm_eval.__main__, "cli_evaluate", fail)
    assert commands.main(["eval", "lm-eval", "--tasks", "nosuchtask"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["proseco eval: error: lm-eval: Tasks not found: nosuchtask"]
