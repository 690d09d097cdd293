"""benchmarks/sft.py on tiny models: prompt layout, exact NFEs, a solver model scores 100 %,
the verdict rules both ways, and the page with its plot."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from proseco.data.char_tokenizer import char_tokenizer
from proseco.data.synthetic import generate_synthetic

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load():
    spec = importlib.util.spec_from_file_location("sft_benchmark", BENCHMARKS / "sft.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["sft_benchmark"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


sft = _load()


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


@pytest.fixture(scope="module")
def groups(tmp_path_factory):
    _, test = generate_synthetic(0, 3, seed=5)
    path = tmp_path_factory.mktemp("synth") / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in test))
    return sft.load_test(path, limit=2)


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
    assert names[-3:] == ["preset fast", "preset balanced", "preset max"]
    plain, corr = sft.Setting("2 tok/step", "plain", 2), sft.Setting("x", "corrector", 4)
    assert plain.config(16).steps == 8 and plain.config(16).block_length == 8
    assert plain.config(16).corrector is None and plain.config(16).temperature == 0.0
    assert corr.config(8).steps == 2 and corr.config(8).corrector.steps == 2
    assert sft.Setting("preset fast", "preset").config(8).steps == 2


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


def test_solver_scores_every_setting_and_nfes_are_exact(tok, groups):
    records = [r for rs in groups.values() for r in rs]
    solver = Solver(tok, records)
    for setting in sft.settings():
        row = sft.evaluate(solver, tok, groups, setting, seed=0)
        assert row["acc"] == 1.0, setting.name
    # answers + EOS: add 8, sort 16, sudoku 8 positions; blocks of 8
    nfe = {k: sft.evaluate(solver, tok, groups, sft.Setting("", "plain", k), 0)["nfe"]
           for k in (1, 8)}  # fmt: skip
    assert nfe[1] == pytest.approx(32 / 3) and nfe[8] == pytest.approx(4 / 3)


def test_random_dit_runs_the_grid(tok, groups):
    rows = sft.run_grid({"vanilla SFT": (_tiny_dit(tok), tok)}, groups, seed=0,
                        grid=sft.settings()[::4], log=lambda *_: None)  # fmt: skip
    assert [r["setting"] for r in rows] == ["1 tok/step", "1 tok/step + corrector", "preset fast"]
    assert rows[0]["nfe"] == pytest.approx(32 / 3) and rows[0]["corrector_nfe"] == 0
    assert rows[1]["corrector_nfe"] > 0 and 0.0 <= rows[1]["acc"] <= 1.0
    assert set(rows[0]) >= {"acc_add", "acc_sort", "acc_sudoku", "n", "seconds"}


def row(model, kind, nfe, acc, setting="s"):
    return {"model": model, "kind": kind, "nfe": nfe, "acc": acc, "setting": setting,
            "corrector_nfe": 0.0, "acc_add": acc}  # fmt: skip


def test_verdicts_both_ways(tmp_path):
    v, p = sft.VANILLA, sft.PROSECO
    rows = [row(v, "plain", 1, 0.2), row(v, "plain", 8, 0.5), row(p, "plain", 8, 0.9),
            row(p, "corrector", 2, 0.4), row(p, "preset", 4, 0.6)]  # fmt: skip
    a, b = sft.judge_equal_nfe(rows), sft.judge_fewer_nfe(rows)
    assert a["verdict"] == sft.HELD  # NFE 1: not compared; NFE 8: 0.6 > 0.5
    assert a["points"][0]["proseco"] is None and a["points"][1]["proseco"]["nfe"] == 4
    assert b["verdict"] == sft.HELD and b["match"]["nfe"] == 4 and b["n_star"] == 8
    worse = rows[:3] + [row(p, "corrector", 2, 0.1), row(p, "preset", 16, 0.7)]
    assert sft.judge_equal_nfe(worse)["verdict"] == sft.NOT_HELD
    assert sft.judge_fewer_nfe(worse)["verdict"] == sft.NOT_HELD  # reaches 0.5 only at 16
    assert sft.judge_equal_nfe(rows[:3])["verdict"] == sft.NOT_TESTABLE
    text = sft.write_report(rows, tmp_path / "sft.md", {"seed": 0}, "sft.png")
    assert "beats vanilla SFT at equal NFEs: held" in text and "2.00x fewer" in text
    assert "| ProSeCo SFT | s | 40.0 | 40.0 | 2.00 | 0.00 |" in text
    sft.plot(rows, tmp_path / "sft.png")
    assert (tmp_path / "sft.png").stat().st_size > 1000


def test_synth_recipes_differ_only_in_the_corrector_weight():
    from proseco.training.config_io import config_diff, load_config

    vanilla, proseco = load_config("sft-synth-vanilla-cpu"), load_config("sft-synth-proseco-cpu")
    assert config_diff(vanilla, proseco) == ["loss.sc_weight"]
    assert (vanilla.loss.sc_weight, proseco.loss.sc_weight) == (0.0, 1.0)
    assert vanilla.data.kind == "sft" and vanilla.data.tokenizer == "char"
    assert vanilla.data.source == "runs/synth/train.jsonl"
