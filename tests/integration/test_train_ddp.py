"""Two-process DDP on CPU (gloo, launched with torchrun) matches one process with accumulation.

Both runs see the same global batch of 16: one process does 4 accumulation steps of 4, two
processes do 2 each, with the same examples and noise (seeded per micro-batch). Differences
come only from float summation order (all-reduce, thread counts), so per-step losses, the split
gradient norms and final weights must agree to a relative 1e-4.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from proseco.training import save_config, train
from proseco.training.metrics import read_metrics

sys.path.insert(0, str(Path(__file__).parent))
from test_train_cpu import one_thread, tiny  # noqa: E402, F401 - one_thread is autouse

TOLERANCE = 1e-4


def test_two_process_ddp_matches_single_process_on_the_same_global_batch(tmp_path):
    config = tiny(
        tmp_path,
        model={"dropout": 0.0},
        train={"max_steps": 4, "global_batch_size": 16, "micro_batch_size": 4, "log_every": 1,
               "eval_every": 2, "eval_batches": 4},
    )  # fmt: skip
    recipe = save_config(config, tmp_path / "recipe.yaml")
    single = train(config, tmp_path / "single")

    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "proseco.cli", "train", str(recipe), "--output-dir", str(tmp_path / "ddp"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    one, two = read_metrics(single.output_dir, "train"), read_metrics(tmp_path / "ddp", "train")
    assert [r["step"] for r in two] == [1, 2, 3, 4]
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=TOLERANCE)
        assert b["mdm_loss"] == pytest.approx(a["mdm_loss"], rel=TOLERANCE)
        # the split gradient norms (term_stats) need the all-reduce under DDP accumulation
        for key in ("grad_norm_mdm", "grad_norm_corrector", "sc_copy_share"):
            assert b[key] == pytest.approx(a[key], rel=TOLERANCE, abs=1e-6), key
    val_one = read_metrics(single.output_dir, "validation")
    val_two = read_metrics(tmp_path / "ddp", "validation")
    assert [v["tokens"] for v in val_two] == [v["tokens"] for v in val_one]
    for a, b in zip(val_one, val_two):
        assert b["nelbo"] == pytest.approx(a["nelbo"], rel=TOLERANCE)
    w1 = load_file(str(single.final_dir / "model.safetensors"))
    w2 = load_file(str(tmp_path / "ddp" / "final" / "model.safetensors"))
    for name, value in w1.items():
        torch.testing.assert_close(w2[name], value, rtol=TOLERANCE, atol=1e-6)
