"""The AR baseline on QM9: the recipes match the MDLM ones but for the objective, and a tiny
class-conditional AR model trains and samples with classifier-free guidance end to end."""

from __future__ import annotations

import json

import pytest
import torch

import proseco
from proseco.sampling.autoregressive import sample_autoregressive

pytest.importorskip("rdkit")


@pytest.mark.parametrize("tag", ["", "-ring", "-qed"])
def test_qm9_ar_recipes_match_the_mdlm_recipes_but_for_the_objective(tag):
    from proseco.training.config_io import load_config

    ar, mdlm = load_config(f"qm9-ar{tag}-cpu"), load_config(f"qm9-mdlm{tag}-cpu")
    assert ar.model == mdlm.model and ar.data == mdlm.data and ar.optim == mdlm.optim
    assert ar.train == mdlm.train  # the same budget, seed and EMA
    assert ar.loss.objective == "ar" and mdlm.loss.objective == "diffusion"
    assert ar.loss.cond_dropout == mdlm.loss.cond_dropout  # the same label dropout for CFG


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from proseco.training import train

    out = tmp_path_factory.mktemp("qm9-ar") / "run"
    return train(
        "qm9-ar-ring-cpu",
        out,
        overrides={
            "train.max_steps": 4, "train.global_batch_size": 8, "train.eval_every": 0,
            "train.save_every": 0, "train.progress_bar": False, "train.eval_batches": 1,
            "train.log_every": 2, "model.num_layers": 1,
        },
    )  # fmt: skip


def _generated_until_eos(row: list[int], eos_id: int) -> int:
    """Tokens a row generated: up to and including its first EOS (all of them without one)."""
    return row.index(eos_id) + 1 if eos_id in row else len(row)


def test_guided_ar_sampling_counts_two_calls_per_generated_token(trained):
    model, tokenizer, _ = proseco.load_pretrained(trained.final_dir)
    assert model.config.causal and model.config.num_classes == 2
    guidance = proseco.Guidance(gamma=2.0, condition=1)
    config = proseco.SamplingConfig(guidance=guidance, temperature=1.0)
    out = sample_autoregressive(
        model, config, batch_size=6, generator=torch.Generator().manual_seed(0)
    )
    eos = tokenizer.eos_token_id
    assert out.tokens.shape == (6, model.config.max_length)
    assert out.tokens[:, 0].tolist() == [tokenizer.bos_token_id] * 6
    assert not bool((out.tokens == tokenizer.mask_token_id).any())
    made = [_generated_until_eos(r[1:], eos) for r in out.tokens.tolist()]
    assert out.nfe_per_row.tolist() == [2 * m for m in made]
    assert out.nfe == pytest.approx(2 * sum(made) / 6)
    assert out.model_calls == 2 * max(made)
    # gamma 1 is the conditional model alone: one call per token
    plain = sample_autoregressive(
        model, config.replace(guidance=proseco.Guidance(gamma=1.0, condition=1)), batch_size=2,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    made = [_generated_until_eos(r[1:], eos) for r in plain.tokens.tolist()]
    assert plain.nfe_per_row.tolist() == made


def test_proseco_sample_runs_a_guided_qm9_ar_model_and_eval_reads_it(trained, tmp_path):
    from proseco.commands import main

    path = tmp_path / "s.jsonl"
    code = main([
        "sample", str(trained.final_dir), "-o", str(path), "--num-samples", "5",
        "--batch-size", "3", "--condition", "1", "--guidance-gamma", "2", "--no-progress",
    ])  # fmt: skip
    assert code == 0
    rows = [json.loads(line) for line in path.open()]
    assert len(rows) == 5
    for r in rows:
        assert r["corrector_nfe"] == 0 and r["nfe"] % 2 == 0 and 2 <= r["nfe"] <= 62
        assert r["sampling_config"]["guidance"]["gamma"] == 2.0
        assert isinstance(r["text"], str)
    report = tmp_path / "m.json"
    assert (
        main(["eval", "molecules", str(path), "--output", str(report), "--train-set", "none"]) == 0
    )
    metrics = json.loads(report.read_text())["metrics"]
    # the report counts exactly the samples RDKit parses (counted here on its own)
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    smiles = [r.get("smiles", r["text"]).strip() for r in rows]
    valid = sum(
        bool(s) and not any(c.isspace() for c in s) and Chem.MolFromSmiles(s) is not None
        for s in smiles
    )
    assert metrics["num_samples"] == 5 and metrics["num_valid"] == valid
    assert metrics["validity"] == pytest.approx(valid / 5)
