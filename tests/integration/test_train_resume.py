"""Exact resume: a run killed (SIGKILL) or stopped (SIGTERM) and resumed ends where an
uninterrupted run ends."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from proseco.training import save_config, train
from proseco.training.checkpoint import list_checkpoints
from proseco.training.metrics import read_metrics

sys.path.insert(0, str(Path(__file__).parent))
from test_train_cpu import one_thread, tiny  # noqa: E402, F401 - one_thread is autouse


def _last_train_step(run: Path) -> int:
    try:
        return max((r["step"] for r in read_metrics(run, "train")), default=0)
    except json.JSONDecodeError:  # a line being written
        return 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 36-step run and the recipe it was trained from."""
    tmp_path = tmp_path_factory.mktemp("reference")
    config = tiny(
        tmp_path,
        model={"dropout": 0.1},  # dropout draws from the global RNG: resume must restore it
        train={"max_steps": 36, "save_every": 6, "eval_every": 6, "log_every": 1,
               "global_batch_size": 8, "keep_checkpoints": 0},
    )  # fmt: skip
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocesses (OMP_NUM_THREADS=1)
    recipe = save_config(config, tmp_path / "recipe.yaml")
    yield config, recipe, train(config, tmp_path / "reference")
    torch.set_num_threads(before)


def _start_and_stop(recipe: Path, run: Path, sig: signal.Signals, *extra: str):
    """Launch ``proseco train`` on ``recipe``, send ``sig`` once step 8 is logged; returns
    ``(returncode, stderr)``."""
    cmd = [sys.executable, "-m", "proseco.cli", "train", str(recipe), "--output-dir", str(run)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same thread count as this process
    proc = subprocess.Popen([*cmd, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env)  # fmt: skip
    deadline = time.monotonic() + 120
    while _last_train_step(run) < 8 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, sig)
    _, stderr = proc.communicate()
    return proc.returncode, stderr.decode()


def _assert_same_run(reference, run: Path, resumed) -> None:
    ref_weights = load_file(str(reference.final_dir / "model.safetensors"))
    new_weights = load_file(str(resumed.final_dir / "model.safetensors"))
    assert ref_weights.keys() == new_weights.keys()
    for name, value in ref_weights.items():
        assert torch.equal(new_weights[name], value), name
    keys = ("step", "split", "loss", "mdm_loss", "corrector_loss")
    ref_log = [{k: r.get(k) for k in keys} for r in read_metrics(reference.output_dir)]
    new_log = [{k: r.get(k) for k in keys} for r in read_metrics(run)]
    assert new_log == ref_log  # the interrupted attempt's extra records were dropped


def test_sigkill_mid_run_then_resume_reproduces_the_uninterrupted_run(tmp_path, reference):
    config, recipe, ref = reference
    run = tmp_path / "killed"
    code, stderr = _start_and_stop(recipe, run, signal.SIGKILL)
    assert code == -signal.SIGKILL, stderr[-2000:]
    assert not (run / "final").exists(), "the run finished before it could be killed"
    steps_done = [s for s, _ in list_checkpoints(run)]
    assert steps_done and steps_done[-1] < 36
    _assert_same_run(ref, run, train(config, run, resume=True))


def test_sigterm_checkpoints_the_step_in_progress_and_resume_reproduces_the_run(
    tmp_path, reference
):
    """A scheduler's SIGTERM loses nothing: with no periodic checkpoints at all
    (``save_every 0``), the stop writes one at the step it finished, says how to go on, and
    exits 143; resuming from it ends bit-identical to the uninterrupted run."""
    config, recipe, ref = reference
    run = tmp_path / "terminated"
    code, stderr = _start_and_stop(recipe, run, signal.SIGTERM, "--train.save_every", "0")
    assert code == 128 + signal.SIGTERM, stderr[-2000:]
    assert not (run / "final").exists(), "the run finished before it could be stopped"
    stopped_at = int(re.search(r"stopped by SIGTERM after step (\d+)", stderr).group(1))
    assert 8 <= stopped_at < 36
    assert [s for s, _ in list_checkpoints(run)] == [stopped_at]
    assert f"--output-dir {run} --resume" in stderr
    assert "Traceback" not in stderr
    resumed = train(replace(config, train=replace(config.train, save_every=0)), run, resume=True)
    _assert_same_run(ref, run, resumed)


def test_a_resume_without_flags_continues_with_the_launch_overrides(tmp_path):
    """Issue 24 E5: `train RECIPE --optim.lr 1e-3`, killed, then `train RECIPE --resume` goes on
    at 1e-3 (the run's config.yaml), ending bit for bit where the uninterrupted run ends; only
    flags given with --resume change the run."""
    from proseco.commands import main

    config = tiny(tmp_path, train={"max_steps": 4, "save_every": 2, "log_every": 1,
                                   "global_batch_size": 8, "keep_checkpoints": 0})  # fmt: skip
    recipe = str(save_config(config, tmp_path / "recipe.yaml"))
    run = tmp_path / "run"
    launch = ["--optim.lr", "1e-3", "--optim.warmup_steps", "1"]
    assert main(["train", recipe, "--output-dir", str(run), *launch]) == 0
    reference = load_file(str(run / "final" / "model.safetensors"))
    # what a kill after the checkpoint of step 2 leaves behind: no final/, later metrics records
    shutil.rmtree(run / "final")
    shutil.rmtree(run / "checkpoints" / "step-00000004")

    assert main(["train", recipe, "--output-dir", str(run), "--resume"]) == 0
    resumed = load_file(str(run / "final" / "model.safetensors"))
    assert resumed.keys() == reference.keys()
    for name, value in reference.items():
        assert torch.equal(resumed[name], value), name
    (record,) = [json.loads(line) for line in (run / "resume_log.jsonl").read_text().splitlines()]
    assert record["step"] == 2 and record["changed"] == {}

    assert (
        main(["train", recipe, "--output-dir", str(run), "--resume", "--train.max_steps", "5"]) == 0
    )
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["optim"]["lr"], saved["optim"]["warmup_steps"]) == (1e-3, 1)
    assert saved["train"]["max_steps"] == 5


def test_final_records_its_step_and_an_extended_run_says_final_is_older(tmp_path, caplog):
    """final/export_info.json holds the step final/ was exported at, so a run resumed with a
    raised max_steps (a low-learning-rate continuation) is not mistaken for finished."""
    import logging

    from proseco.training.checkpoint import exported_step

    config = tiny(tmp_path, train={"max_steps": 2, "save_every": 2, "log_every": 1,
                                   "global_batch_size": 8, "keep_checkpoints": 0})  # fmt: skip
    run = tmp_path / "run"
    train(config, run)
    assert exported_step(run / "final") == 2
    longer = replace(config, train=replace(config.train, max_steps=3))
    with caplog.at_level(logging.WARNING, logger="proseco.training"):
        train(longer, run, resume=True)
    assert f"{run / 'final'} still holds the model exported at step 2" in caplog.text
    assert exported_step(run / "final") == 3
    (run / "final" / "export_info.json").write_text("{broken")
    assert exported_step(run / "final") is None
