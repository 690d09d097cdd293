"""PRISM end to end on CPU: pretrain a tiny MDM, fine-tune it with loss.objective prism (a new
quality head), sample it with --unmasking prism; NFEs are the steps, head included."""

from __future__ import annotations

import json
import math

import pytest
import torch

from proseco.commands import main

TINY_RUN = [
    "--train.max_steps", "4", "--train.global_batch_size", "8", "--train.eval_every", "4",
    "--train.eval_batches", "1", "--train.save_every", "4", "--train.progress_bar", "false",
]  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_prism_finetune_and_sample(tmp_path, capsys):
    cache = ["--data.cache_dir", str(tmp_path / "cache")]
    mdm = tmp_path / "mdm"
    assert main(["train", "text-cpu-tiny", "--output-dir", str(mdm), *TINY_RUN, *cache]) == 0
    assert not json.loads((mdm / "final" / "config.json").read_text())["quality_head"]

    prism = tmp_path / "prism"  # --model.pretrained alone: the recipe's architecture is dropped
    code = main([
        "train", "text-cpu-tiny", "--output-dir", str(prism), "--model.pretrained",
        str(mdm / "final"), "--loss.objective", "prism", "--loss.prism_fill", "2",
        "--loss.mdm_weight", "0.5", *TINY_RUN, *cache,
    ])  # fmt: skip
    assert code == 0
    assert json.loads((prism / "final" / "config.json").read_text())["quality_head"] is True
    rows = [json.loads(line) for line in (prism / "metrics.jsonl").read_text().splitlines()]
    validation = [r for r in rows if r["split"] == "validation"][-1]
    assert set(validation) == {"step", "split", "nelbo", "ppl", "bpd", "quality_bce",
                               "quality_accuracy", "fill_error_rate", "filled", "tokens"}  # fmt: skip
    # one validation batch of 8 rows, at most prism_fill = 2 filled positions per row
    filled = validation["filled"]
    assert 0 < filled <= 2 * 8 and validation["tokens"] <= 8 * 32
    # accuracy and error rate are shares of the filled positions: whole counts of them
    for share in ("quality_accuracy", "fill_error_rate"):
        assert validation[share] * filled == pytest.approx(round(validation[share] * filled))
    assert validation["ppl"] == pytest.approx(math.exp(validation["nelbo"]))
    train = [r for r in rows if r["split"] == "train"][-1]
    assert train["prism_bce"] == train["corrector_loss"] > 0  # the head's BCE, by its name
    assert train["mdlm_nelbo"] == train["mdm_loss"] > 0

    out = tmp_path / "samples.jsonl"
    code = main([
        "sample", str(prism / "final"), "--unmasking", "prism:eta=0,num_remask=1,step_on=0",
        "--steps", "4", "--num-samples", "3", "--batch-size", "3", "--output", str(out),
        "--no-progress",
    ])  # fmt: skip
    assert code == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 3
    assert all(line["nfe"] == 4 and line["corrector_nfe"] == 0 for line in lines)
    assert lines[0]["sampling_config"]["unmasking"]["name"] == "prism"

    # the MDM itself has no head: choosing prism is a one-line error (exit 2)
    capsys.readouterr()
    code = main(["sample", str(mdm / "final"), "--unmasking", "prism", "--steps", "4",
                 "--output", str(tmp_path / "x.jsonl"), "--no-progress"])  # fmt: skip
    assert code == 2
    assert "quality head" in capsys.readouterr().err
