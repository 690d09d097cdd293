"""Two-process DDP on CPU (gloo, launched with torchrun) matches one process with accumulation,
and stops on SIGTERM and resumes exactly.

Both runs see the same global batch of 16: one process does 4 accumulation steps of 4, two
processes do 2 each, with the same examples and noise (seeded per micro-batch). Differences
come only from float summation order (all-reduce, thread counts), so per-step losses, the split
gradient norms and final weights must agree to a relative 1e-4.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from proseco.training import save_config, train
from proseco.training.checkpoint import list_checkpoints
from proseco.training.metrics import read_metrics

sys.path.insert(0, str(Path(__file__).parent))
from test_train_cpu import one_thread, tiny  # noqa: E402, F401 - one_thread is autouse

TOLERANCE = 1e-4


def _recipe(tmp_path: Path, **train_fields):
    """The tiny recipe with a global batch of 16 in micro-batches of 4, and its saved YAML."""
    train_section = {"global_batch_size": 16, "micro_batch_size": 4, "log_every": 1}
    config = tiny(tmp_path, model={"dropout": 0.0}, train={**train_section, **train_fields})
    return config, save_config(config, tmp_path / "recipe.yaml")


def test_two_process_ddp_matches_single_process_on_the_same_global_batch(tmp_path):
    config, recipe = _recipe(tmp_path, max_steps=4, eval_every=2, eval_batches=4)
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


def _torchrun(recipe: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "proseco.cli", "train", str(recipe), "--output-dir", str(out), *extra,
    ]  # fmt: skip


def test_a_sigterm_to_every_process_stops_ddp_once_and_resumes_exactly(tmp_path):
    """As SLURM does it: SIGTERM to the launcher and both workers (and torchrun forwards its
    own). Both workers stop after the same step, one checkpoint and one message are written,
    and the two-process resume from it ends where an uninterrupted two-process run ends."""
    _, recipe = _recipe(tmp_path, max_steps=400, eval_every=0, save_every=0)
    run = tmp_path / "stopped"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_torchrun(recipe, run), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 180
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if len(read_metrics(run, "train")) >= 3:
                break
        except (OSError, ValueError):  # not written yet, or a line being written
            pass
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert stderr.count("stopped by SIGTERM") == 1, stderr[-3000:]
    steps = [s for s, _ in list_checkpoints(run)]
    assert len(steps) == 1 and 3 <= steps[0] < 400, stderr[-3000:]
    end = str(steps[0] + 2)

    resumed = subprocess.run(_torchrun(recipe, run, "--resume", "--train.max_steps", end),
                             capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    straight = subprocess.run(_torchrun(recipe, tmp_path / "straight", "--train.max_steps", end),
                              capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert straight.returncode == 0, straight.stderr[-3000:]
    w1 = load_file(str(tmp_path / "straight" / "final" / "model.safetensors"))
    w2 = load_file(str(run / "final" / "model.safetensors"))
    for name, value in w1.items():
        assert torch.equal(w2[name], value), name
