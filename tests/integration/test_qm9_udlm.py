"""UDLM on QM9 end to end: `proseco train` a tiny class-conditional uniform-noise model, then
`proseco sample` it (plain and with D-CFG): no mask token, T / 2T NFEs, SMILES text, eval reads it."""

from __future__ import annotations

import json

import pytest
import torch

import proseco

pytest.importorskip("rdkit")

STEPS = 6


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from proseco.commands import main

    out = tmp_path_factory.mktemp("qm9-udlm") / "run"
    code = main([
        "train", "qm9-udlm-ring-cpu", "--output-dir", str(out), "--train.max_steps", "4",
        "--train.global_batch_size", "8", "--train.eval_every", "4", "--train.eval_batches", "1",
        "--train.save_every", "0", "--train.progress_bar", "false", "--train.log_every", "2",
        "--model.num_layers", "1",
    ])  # fmt: skip
    assert code == 0
    return out


def test_training_logs_the_udlm_nelbo_and_marks_the_model_uniform(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert train_rows and all(r["loss"] > 0 for r in train_rows)
    valid = [r for r in rows if r["split"] == "validation"]
    assert valid and valid[-1]["nelbo"] > 0 and "corrector_nll" not in valid[-1]
    model, _, _ = proseco.load_pretrained(run_dir / "final")
    assert model.config.diffusion == "uniform" and model.config.time_conditioning


@pytest.mark.parametrize("guided", [False, True])
def test_proseco_sample_runs_the_uniform_sampler(run_dir, tmp_path, guided):
    from proseco.commands import main

    path = tmp_path / "s.jsonl"
    extra = ["--condition", "1", "--guidance-gamma", "2"] if guided else []
    code = main([
        "sample", str(run_dir / "final"), "-o", str(path), "--num-samples", "5",
        "--batch-size", "3", "--steps", str(STEPS), "--no-progress", *extra,
    ])  # fmt: skip
    assert code == 0
    model, tokenizer, _ = proseco.load_pretrained(run_dir / "final")
    rows = [json.loads(line) for line in path.open()]
    assert len(rows) == 5
    for r in rows:
        assert len(r["tokens"]) == model.config.max_length
        assert tokenizer.mask_token_id not in r["tokens"]
        assert r["nfe"] == STEPS * (2 if guided else 1) and r["corrector_nfe"] == 0
        assert isinstance(r["text"], str) and "<" not in r["text"]  # specials cut/skipped
    if guided:
        assert rows[0]["sampling_config"]["guidance"]["gamma"] == 2.0
        report = tmp_path / "m.json"
        assert main(["eval", "molecules", str(path), "--output", str(report),
                     "--train-set", "none"]) == 0  # fmt: skip
        assert json.loads(report.read_text())["metrics"]["num_samples"] == 5


def test_a_masked_sampler_setting_is_one_line_error(run_dir, tmp_path, capsys):
    from proseco.commands import main

    code = main(["sample", str(run_dir / "final"), "-o", str(tmp_path / "x.jsonl"),
                 "--corrector-steps", "2", "--no-progress"])  # fmt: skip
    assert code == 2
    assert "uniform-noise (UDLM)" in capsys.readouterr().err
    out = proseco.sample_uniform(
        proseco.load_pretrained(run_dir / "final")[0], steps=3, batch_size=2,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert out.nfe == 3
