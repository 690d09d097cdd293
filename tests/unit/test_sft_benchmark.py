"""benchmarks/sft.py on tiny models: prompt layout, exact NFEs, a solver model scores 100 %,
corrector diagnostics, the bootstrap, the verdict rules both ways, and the page with its plot."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from proseco.data.char_tokenizer import char_tokenizer
from proseco.data.synthetic import generate_synthetic
from tests.unit.benchmark_scripts import load_benchmark

sft = load_benchmark("sft.py", "sft_benchmark")


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


@pytest.fixture(scope="module")
def chain():
    return generate_synthetic(0, 4, seed=5, tasks=["chain"])[1]


@pytest.fixture(scope="module")
def fill():
    return generate_synthetic(0, 4, seed=5, tasks=["fill"])[1]


class Solver(nn.Module):
    """Reads each row's prompt and predicts ``[BOS] prompt answer EOS`` with certainty."""

    def __init__(self, tokenizer, records, vocab_size: int = 102) -> None:
        super().__init__()
        self.tok, self.vocab_size = tokenizer, vocab_size
        self.answers = {r["prompt"]: r["response"] for r in records}
        self.config = type("C", (), {"vocab_size": vocab_size, "time_conditioning": False})()

    def forward(self, input_ids, **_):
        rows = []
        for row in input_ids.tolist():
            text = self.tok.decode(row[1:])
            prompt = next(p for p in self.answers if text.startswith(p))
            ids = self.tok(prompt + self.answers[prompt], add_special_tokens=False)["input_ids"]
            rows.append([self.tok.bos_token_id, *ids, self.tok.eos_token_id][: len(row)])
        target = torch.tensor(rows)
        logits = torch.zeros(*input_ids.shape, self.vocab_size)
        return logits.scatter_(-1, target[..., None], 30.0)


def _tiny_dit(tok):
    from proseco.models.dit import ProsecoDiT
    from proseco.models.dit_config import ProsecoDiTConfig

    torch.manual_seed(0)
    config = ProsecoDiTConfig(
        vocab_size=len(tok), hidden_size=16, num_layers=1, num_heads=2, cond_dim=8,
        max_length=40, mask_token_id=tok.mask_token_id, dropout=0.0,
    )  # fmt: skip
    return ProsecoDiT(config).eval()


def test_grid_and_configs():
    names = [s.name for s in sft.settings()]
    assert names[:4] == ["1 tok/step", "2 tok/step", "4 tok/step", "8 tok/step"]
    assert names[-1] == "8 tok/step + S=1 + F=1" and len(names) == 14
    assert sft.Setting(8, 1, 1).config(11).corrector.final_steps == 1
    assert (
        names[4:6] == ["1 tok/step + S=1", "2 tok/step + S=1"] and names[11] == "8 tok/step + S=3"
    )
    plain, corr = sft.Setting(2), sft.Setting(4, 3)
    assert plain.config(16).steps == 8 and plain.config(16).block_length == 16
    assert plain.config(11).steps == 6 and plain.config(16).corrector is None
    assert plain.config(16).temperature == 0.0 and corr.config(11).steps == 3
    assert corr.config(11).corrector.steps == 3 and corr.config(11).corrector.every == 1


def test_test_split_is_the_one_training_held_out():
    from proseco.data.synthetic import generate_synthetic as gen

    assert sft.test_problems("chain", 5) == gen(50, 5, seed=0, tasks=["chain"])[1]


def test_prompt_layout_and_decoding(tok):
    ids = sft.encode_prompts(tok, ["A:12", "A:34"])
    assert ids.tolist() == [[0, *tok("A:12", add_special_tokens=False)["input_ids"]],
                            [0, *tok("A:34", add_special_tokens=False)["input_ids"]]]  # fmt: skip
    with pytest.raises(ValueError, match="same length"):
        sft.encode_prompts(tok, ["A:1", "A:12"])
    eos, three = tok.eos_token_id, tok("3", add_special_tokens=False)["input_ids"][0]
    assert sft.decode_answers(tok, torch.tensor([[three, three, eos, three], [three] * 4])) == [
        "33", "3333"
    ]  # fmt: skip


def test_solver_scores_every_setting_and_nfes_are_exact(tok, chain, fill):
    for records, length in ((chain, 16), (fill, 11)):
        solver = Solver(tok, records)
        for setting in sft.settings():
            row = sft.evaluate(solver, tok, records, setting)
            assert row["acc"] == 1.0 and row["correct"] == "1111", setting.name
            assert row["changed"] == row["fixed"] == row["broken"] == 0  # nothing to correct
        for k in (1, 2, 4, 8):
            assert sft.evaluate(solver, tok, records, sft.Setting(k))["nfe"] == -(-length // k)


def test_token_judge(tok, fill):
    record = {"task": "fill", "prompt": "F:12..34..........", "response": "x" * 12}
    judge = sft.token_judge(tok, [record], prompt_length=19)
    digit = {d: tok.convert_tokens_to_ids(str(d)) for d in range(1, 5)}
    # row 1: 1 2 . . / 3 4 . . -> the two blanks of row 1 are 3/4 in either order
    assert judge(0, 19, digit[3]) and judge(0, 19, digit[4]) and not judge(0, 19, digit[1])
    assert judge(0, 31, tok.eos_token_id) and not judge(0, 31, digit[1])
    one = {"task": "chain", "prompt": "C:19", "response": "10"}
    judge = sft.token_judge(tok, [one], prompt_length=5)
    assert judge(0, 5, digit[1]) and not judge(0, 6, digit[1]) and judge(0, 7, tok.eos_token_id)


def test_random_dit_corrector_diagnostics(tok, chain):
    model = _tiny_dit(tok)
    row = sft.evaluate(model, tok, chain, sft.Setting(4, 1))
    assert row["corrector_nfe"] > 0 and 0.0 <= row["acc"] <= 1.0
    assert row["changed"] >= row["fixed"] + row["broken"] and row["changed"] > 0
    assert set(row) >= {"correct", "n", "nfe", "seconds", "k", "S"}


def _rows(acc: dict[tuple[str, str], list[float]], nfe: dict[str, float], n: int = 200):
    """Synthetic rows: for each (objective, setting) one accuracy per seed, task 'chain'."""
    rows = []
    for (objective, setting), per_seed in acc.items():
        for seed, a in enumerate(per_seed):
            right = round(a * n)
            rows.append({"task": "chain", "objective": objective, "seed": seed, "setting": setting,
                         "n": n, "acc": right / n, "correct": "1" * right + "0" * (n - right),
                         "nfe": nfe[setting], "corrector_nfe": 0.0, "changed": 3, "fixed": 2,
                         "broken": 1})  # fmt: skip
    return rows


NFE = {"1 tok/step": 16, "8 tok/step": 2, "8 tok/step + S=1": 4, "4 tok/step + S=1": 8}


def test_bootstrap_interval_and_pairing():
    rows = _rows({("vanilla", "1 tok/step"): [0.5, 0.5, 0.5],
                  ("proseco", "1 tok/step"): [0.5, 0.5, 0.5]}, NFE)  # fmt: skip
    pooled = sft.arms(rows)
    boot = sft.Bootstrap(sft._shapes(pooled), draws=500)
    a, b = pooled[("proseco", "1 tok/step")], pooled[("vanilla", "1 tok/step")]
    assert a.acc == 0.5 and boot.difference(a, b) == {"diff": 0.0, "low": 0.0, "high": 0.0}
    low, high = boot.interval(a)  # binomial sd of a mean of 600 answers ~ 2 points
    assert 0.40 < low < 0.48 and 0.52 < high < 0.60


def test_verdicts_both_ways(tmp_path):
    good = {("vanilla", "1 tok/step"): [0.5, 0.5, 0.5], ("vanilla", "8 tok/step"): [0.2] * 3,
            ("proseco", "1 tok/step"): [0.6] * 3, ("proseco", "8 tok/step"): [0.3] * 3,
            ("proseco", "8 tok/step + S=1"): [0.55] * 3}  # fmt: skip
    pooled = sft.arms(_rows(good, NFE))
    boot = sft.Bootstrap(sft._shapes(pooled), draws=300)
    v = sft.judge(pooled, boot)
    assert v["a"]["held"] and v["b"]["held"]  # 0.55 at 4 NFEs reaches 0.5 at 16 with <= 8
    assert v["b"]["points"][0]["proseco"] == "8 tok/step + S=1"
    bad = {**good, ("proseco", "8 tok/step + S=1"): [0.3] * 3, ("proseco", "1 tok/step"): [0.5] * 3}
    v = sft.judge(sft.arms(_rows(bad, NFE)), boot)
    assert not v["a"]["held"] and not v["b"]["held"]  # equal at 16 NFEs: not shown better
    cmp = sft.compare(pooled, boot)
    assert [p["a"] for p in cmp["training"]] == ["1 tok/step", "8 tok/step"]
    (s,) = cmp["sampling"]  # 8 + S=1 (4 NFEs) against the plain row with >= 4 NFEs: 1 tok/step
    assert s["b"] == "1 tok/step" and s["matched"] and s["diff"] == pytest.approx(-0.05)
    text = sft.write_outputs(_rows(good, NFE), {"seed": 0}, tmp_path / "sft.md")
    assert "**(a) ProSeCo beats vanilla at equal NFE: held.**" in text
    summary = json.loads((tmp_path / "sft_summary.json").read_text())
    assert summary["verdicts"] == {"a": True, "b": True} and summary["seeds"] == 3
    assert summary["test_problems_per_task"] == 200
    assert summary["corrector"] == {"setting": "8 tok/step + S=1", "changed": 9, "fixed": 6,
                                    "broken": 3}  # fmt: skip
    assert (tmp_path / "sft.png").stat().st_size > 1000
    again = sft.main(["--tasks", "chain", "--from-json", str(tmp_path / "sft_rows.json"), "--out",
                      str(tmp_path / "again.md")])  # fmt: skip
    assert again == 0
    assert (tmp_path / "again.md").read_text() == text.replace("sft.png", "again.png")


def test_a_partial_grid_still_saves_its_rows(tmp_path):
    rows = _rows({("proseco", "8 tok/step + S=1"): [0.5, 0.4, 0.6]}, NFE)  # no plain rows
    pooled = sft.arms(rows)
    boot = sft.Bootstrap(sft._shapes(pooled), draws=50)
    assert sft.compare(pooled, boot)["sampling"] == [] and not sft.judge(pooled, boot)["a"]["held"]
    text = sft.write_outputs(rows, {}, tmp_path / "p.md")
    assert "not testable" in text
    assert json.loads((tmp_path / "p_rows.json").read_text())["rows"] == rows


def test_missing_models_and_bad_input_are_one_line(tmp_path, capsys):
    assert sft.main(["--models", str(tmp_path)]) == 2
    assert "no model in" in capsys.readouterr().err
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps({"settings": {}, "rows": _rows({("vanilla", "1 tok/step"): [0.5]},
                                                               NFE)}))  # fmt: skip
    assert sft.main(["--from-json", str(rows), "--out", str(tmp_path / "x.md")]) == 2
    assert "no rows of tasks ['fill', 'latin']" in capsys.readouterr().err
    assert sft.main(["--tasks", "chain", "--from-json", str(rows), str(rows), "--out",
                     str(tmp_path / "x.md")]) == 2  # fmt: skip
    assert "overlap" in capsys.readouterr().err
    assert sft.main(["--settings", "9 tok/step"]) == 2
    assert "unknown settings" in capsys.readouterr().err


def test_synth_recipes_differ_only_in_the_corrector_weight():
    from proseco.training.config_io import config_diff, load_config

    vanilla, proseco = load_config("sft-synth-vanilla-cpu"), load_config("sft-synth-proseco-cpu")
    assert config_diff(vanilla, proseco) == ["loss.sc_weight"]
    assert (vanilla.loss.sc_weight, proseco.loss.sc_weight) == (0.0, 1.0)
    assert vanilla.loss.t_min == proseco.loss.t_min == 0.1  # corrector weight 1/t <= 10
    assert vanilla.data.kind == "sft" and vanilla.data.tokenizer == "char"


def test_sft_recipes_bound_the_corrector_weight():
    from proseco.training.config_io import config_diff, load_config

    for name in ("sft-cpu-tiny", "sft-llada-8b", "sft-llada-8b-vanilla", "sft-synth-proseco-cpu"):
        assert 1 / load_config(name).loss.t_min <= 20, name
    assert config_diff(load_config("sft-llada-8b"), load_config("sft-llada-8b-vanilla")) == [
        "loss.sc_weight"
    ]
