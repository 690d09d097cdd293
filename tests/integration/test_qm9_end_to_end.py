"""QM9 end to end on CPU: train a tiny ProSeCo model, sample with MDLM and ProSeCo, score with RDKit."""

import importlib.util
import json
import shutil

import pytest

pytest.importorskip("rdkit")
if importlib.util.find_spec("qm9pack") is None:  # its own import is broken; we read its CSVs
    pytest.skip("qm9pack is not installed", allow_module_level=True)

from proseco.commands import main  # noqa: E402
from proseco.training import train  # noqa: E402

TINY = {
    "model.hidden_size": 32,
    "model.num_layers": 1,
    "model.num_heads": 2,
    "model.cond_dim": 16,
    "data.max_records": 512,
    "train.max_steps": 12,
    "train.global_batch_size": 32,
    "train.eval_every": 12,
    "train.eval_batches": 1,
    "train.save_every": 12,
    "train.progress_bar": False,
    "optim.warmup_steps": 2,
}


def test_train_sample_eval_qm9(tmp_path):
    result = train("qm9-proseco-cpu", tmp_path / "run", overrides=TINY)
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    # the demo wants an MDLM and a ProSeCo model dir; the same tiny model serves as both here
    for name in ("mdlm", "proseco"):
        shutil.copytree(result.final_dir, checkpoints / name)
    out = tmp_path / "demo"
    code = main(
        [
            "demo",
            "--checkpoints",
            str(checkpoints),
            "--output-dir",
            str(out),
            "--steps",
            "2",
            "4",
            "--corrector",
            "1:1",
            "--num-samples",
            "16",
            "--batch-size",
            "8",
        ]
    )
    assert code == 0
    rows = json.loads((out / "results.json").read_text())
    assert len(rows) == 2 * 3  # T in {2, 4} x (MDLM, ProSeCo model + MDLM sampling, S=1)
    for row in rows:
        for key in (
            "method",
            "model",
            "steps",
            "corrector_steps",
            "corrector_every",
            "nfe",
            "validity",
            "uniqueness",
            "novelty",
            "seconds",
        ):
            assert key in row
    mdlm = {r["steps"]: r for r in rows if r["method"] == "MDLM"}
    corrected = {r["steps"]: r for r in rows if r["corrector_steps"] == 1}
    assert mdlm[2]["nfe"] == 2 and mdlm[4]["nfe"] == 4
    # one corrector call per step at most (early exit can only save calls), plus the denoiser
    assert 2 < corrected[2]["nfe"] <= 4 and 4 < corrected[4]["nfe"] <= 8
    lines = (out / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 6 * 16
    # the decoded text is a SMILES string (no special tokens, no ids) and the reported validity is
    # exactly the fraction RDKit parses: a broken decoder or metric would miss one of these
    from rdkit import Chem

    from proseco.data.smiles import QM9_TOKENS

    allowed = set("".join(QM9_TOKENS))
    records = [json.loads(line) for line in lines]
    # (an undertrained model may draw <unk>, which is kept so that the molecule is invalid)
    texts = [r["text"].replace("<unk>", "") for r in records]
    assert all(set(t) <= allowed for t in texts), texts[:5]
    assert sum(len(r["text"]) for r in records) > 0
    for row in rows:
        texts = [
            r["text"] for r in records if (r["method"], r["steps"]) == (row["method"], row["steps"])
        ]
        assert len(texts) == 16
        parsed = sum(bool(t) and Chem.MolFromSmiles(t) is not None for t in texts)
        assert row["validity"] == pytest.approx(parsed / 16)
    assert (out / "pareto.png").stat().st_size > 1000
    # and the sampled molecules can be scored from the command line
    assert (
        main(
            [
                "eval",
                "molecules",
                str(out / "samples.jsonl"),
                "--train-set",
                "none",
                "--output",
                str(tmp_path / "m.json"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "m.json").read_text())["metrics"]["num_samples"] == 96
