"""Nothing lost, nothing silent (issue 9, training): run lock, finite checks, recovery on resume,
non-destructive outputs, I/O errors, batch size and random-state checks."""

from __future__ import annotations

import json
import os
import pickle
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from proseco.errors import ConfigError, DataError, ModelLoadError, OutputError
from proseco.training import TrainingDivergedError, save_config, train
from proseco.training.config_io import update_config
from proseco.training.metrics import read_metrics

sys.path.insert(0, str(Path(__file__).parent))
from test_train_cpu import one_thread, tiny  # noqa: E402, F401 - one_thread is autouse

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _cli(*args: object, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "proseco.cli", "train", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env or ENV, timeout=300)


def _resume_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "resume_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 4-step run with checkpoints at steps 2 and 4 (tests work on copies)."""
    root = tmp_path_factory.mktemp("finished")
    config = tiny(
        root,
        train={"max_steps": 4, "save_every": 2, "log_every": 1, "global_batch_size": 8,
               "keep_checkpoints": 0, "eval_every": 0},
    )  # fmt: skip
    train(config, root / "run")
    return config, root / "run"


@pytest.fixture
def run_copy(finished, tmp_path):
    config, source = finished
    shutil.copytree(source, tmp_path / "run")
    return config, tmp_path / "run"


# ------------------------------------------------------------------ 1. two runs, one directory
def test_a_second_run_into_a_live_run_directory_is_refused_naming_the_holder(tmp_path):
    config = tiny(tmp_path, train={"max_steps": 100_000, "save_every": 0, "log_every": 1,
                                   "global_batch_size": 8})  # fmt: skip
    recipe = save_config(config, tmp_path / "recipe.yaml")
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-m", "proseco.cli", "train", str(recipe), "--output-dir", str(run)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not read_metrics_safe(run) and holder.poll() is None:
            assert time.monotonic() < deadline, "the first run did not start"
            time.sleep(0.05)
        assert holder.poll() is None, holder.stderr.read().decode()[-2000:]
        holder.send_signal(signal.SIGSTOP)  # a paused run still owns its directory (and no CPU)
        second = _cli(recipe, "--output-dir", run, "--resume", "--train.max_steps", "2")
        assert second.returncode == 2, second.stderr[-2000:]
        assert f"in use by another proseco run (pid {holder.pid} on host" in second.stderr
        with pytest.raises(OutputError, match=f"in use by another proseco run .pid {holder.pid}"):
            train(update_config(config, train={"max_steps": 2}), run)  # this test's process
        assert holder.poll() is None  # the first run was not disturbed
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate()
    # the OS released the lock of the killed run: resuming it works
    result = train(update_config(config, train={"max_steps": 2}), run, resume=True)
    assert result.step == 2


def read_metrics_safe(run: Path) -> list[dict]:
    try:
        return read_metrics(run)
    except ValueError:
        return []


# --------------------------------------------------------- 2. non-finite weights and divergence
def test_non_finite_weights_are_never_saved_or_called_good(tmp_path, monkeypatch):
    import proseco.training.loop as loop

    monkeypatch.setattr(loop, "learning_rate", lambda step, **kw: float("inf"))  # NaN weights
    config = tiny(tmp_path, train={"max_steps": 4, "save_every": 1, "global_batch_size": 8})
    with pytest.raises(TrainingDivergedError) as info:
        train(config, tmp_path / "run")
    message = str(info.value)
    assert "the weights became non-finite after optimizer step 1" in message
    assert "no checkpoint had been written yet" in message
    assert not list((tmp_path / "run").glob("checkpoints/step-*"))


def test_a_diverged_gradient_norm_is_named_as_such(tmp_path):
    run = tmp_path / "run"
    config = tiny(tmp_path, optim={"lr": 1e10},
                  train={"max_steps": 4, "save_every": 0, "global_batch_size": 8})  # fmt: skip
    with pytest.raises(TrainingDivergedError) as info:
        train(config, run)
    message = str(info.value)
    assert "the gradient norm became non-finite at optimizer step 2 (grad norm inf" in message
    assert "no checkpoint had been written yet" in message
    # saved after step 1, those weights (max |w| ~ 1e9) would not be called good (issue 24 E6)
    config = update_config(config, train={"save_every": 1})
    with pytest.raises(TrainingDivergedError, match=r"the weights exploded by optimizer step 1"):
        train(config, tmp_path / "saving")
    assert not list((tmp_path / "saving").glob("checkpoints/step-*"))


def test_the_divergence_advice_is_a_command_the_cli_accepts(tmp_path, monkeypatch):
    import proseco.training.loop as loop
    from proseco.commands import main

    real = loop.batch_loss

    def poisoned(*args, step, **kwargs):
        out = real(*args, step=step, **kwargs)
        if step >= 2:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(loop, "batch_loss", poisoned)
    run = tmp_path / "run"
    config = tiny(tmp_path, train={"max_steps": 4, "save_every": 2, "global_batch_size": 8})
    with pytest.raises(TrainingDivergedError) as info:
        train(config, run)
    message = str(info.value)
    assert "the loss became non-finite at optimizer step 3" in message
    assert f"the last good checkpoint is {run / 'checkpoints' / 'step-00000002'};" in message
    words = shlex.split(message.split(" run: ", 1)[1])
    assert words[:2] == ["proseco", "train"] and "--resume" in words
    monkeypatch.setattr(loop, "batch_loss", real)
    assert main([*words[1:], "--train.progress_bar", "false"]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["lr"] == 0.0003
    (record,) = _resume_log(run)
    assert record["step"] == 2 and record["changed"] == {"optim.lr": [0.003, 0.0003]}


def test_the_last_good_checkpoint_after_a_blow_up_is_resumable_as_advised(run_copy, capsys):
    """Issue 24 E6: a learning rate of 1e25 without clipping makes the weights huge but finite;
    they are not saved or called good, and the advised command resumes and finishes."""
    from proseco.commands import main

    _, run = run_copy  # checkpoints at steps 2 and 4
    blow_up = ["--optim.lr", "1e25", "--optim.grad_clip", "0", "--train.save_every", "1",
               "--train.max_steps", "8"]  # fmt: skip
    assert main(["train", str(run / "config.yaml"), "--output-dir", str(run), "--resume",
                 *blow_up]) == 3  # fmt: skip
    message = capsys.readouterr().err
    last = Path(message.split("the last good checkpoint is ", 1)[1].split(";", 1)[0])
    assert last == run / "checkpoints" / "step-00000004", message
    weights = load_file(str(last / "model.safetensors"))
    assert max(float(w.abs().max()) for w in weights.values()) < 100
    words = shlex.split(message.split(" run: ", 1)[1])
    assert "--optim.grad_clip" in words and float(words[words.index("--optim.lr") + 1]) < 1e-2
    assert main(words[1:]) == 0, capsys.readouterr().err
    final = load_file(str(run / "final" / "model.safetensors"))
    assert all(bool(torch.isfinite(w).all()) for w in final.values())


def test_a_start_that_failed_does_not_block_a_fixed_rerun(tmp_path, monkeypatch):
    import proseco.training.loop as loop

    real = loop.batch_loss

    def poisoned(*args, **kwargs):
        out = real(*args, **kwargs)
        out.loss = out.loss * float("nan")
        return out

    config = tiny(tmp_path, train={"max_steps": 2, "global_batch_size": 8})
    monkeypatch.setattr(loop, "batch_loss", poisoned)
    with pytest.raises(TrainingDivergedError, match="no checkpoint had been written yet"):
        train(config, tmp_path / "run")
    monkeypatch.setattr(loop, "batch_loss", real)
    assert train(config, tmp_path / "run").step == 2  # no --resume needed: nothing was lost


# ------------------------------------------------------------------- 3. resume with new settings
def test_resume_may_lower_the_learning_rate_and_clip_and_records_the_change(run_copy):
    config, run = run_copy
    new = update_config(config, optim={"lr": 1e-3, "grad_clip": 0.5}, train={"max_steps": 6})
    assert train(new, run, resume=True).step == 6
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["optim"]["lr"], saved["optim"]["grad_clip"]) == (1e-3, 0.5)
    (record,) = _resume_log(run)
    assert record["checkpoint"] == "step-00000004" and record["inexact"] is None
    assert record["changed"] == {
        "optim.lr": [0.003, 1e-3], "optim.grad_clip": [1.0, 0.5], "train.max_steps": [4, 6],
    }  # fmt: skip
    with pytest.raises(ConfigError, match=r"differs from the saved one in train\.seed"):
        train(update_config(new, train={"seed": 1}), run, resume=True)


# -------------------------------------------------------------------------- 4. no lost data
def test_a_kill_while_metrics_jsonl_is_rewritten_leaves_it_intact(run_copy):
    _, run = run_copy
    shutil.rmtree(run / "checkpoints" / "step-00000004")  # resume at 2: records 3, 4 go
    before = (run / "metrics.jsonl").read_bytes()
    args = (run / "config.yaml", "--output-dir", run, "--resume", "--train.max_steps", "6")
    killed = _cli(*args, env={**ENV, "PROSECO_FAULT": "metrics-rewrite"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (run / "metrics.jsonl").read_bytes() == before
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["train"]["max_steps"] = 6
    assert train(config, run, resume=True).step == 6
    assert [r["step"] for r in read_metrics(run, "train")] == [1, 2, 3, 4, 5, 6]
    assert not list(run.glob(".metrics.jsonl.tmp-*"))


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_the_exported_model_and_checkpoints_respect_the_umask(tmp_path, mask):
    """Issue 24 E7: safetensors writes its files 0600; the run's files follow the umask."""
    import stat

    saved = os.umask(mask)
    try:
        config = tiny(tmp_path, train={"max_steps": 1, "global_batch_size": 8, "eval_every": 0})
        result = train(config, tmp_path / "run")
    finally:
        os.umask(saved)
    files = [p for d in (result.final_dir, result.checkpoint) for p in d.iterdir() if p.is_file()]
    assert result.final_dir / "model.safetensors" in files
    assert result.checkpoint / "model.safetensors" in files
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert set(modes.values()) == {oct(0o666 & ~mask)}, modes


@pytest.mark.parametrize("resume", [False, True])
def test_a_directory_with_other_files_is_never_written_to(tmp_path, resume):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.jsonl").write_text("my own records\n")
    config = tiny(tmp_path, train={"max_steps": 2, "global_batch_size": 8})
    with pytest.raises(OutputError, match="not empty and does not hold a proseco run"):
        train(config, mine, resume=resume)
    assert [p.name for p in mine.iterdir()] == ["metrics.jsonl"]
    assert (mine / "metrics.jsonl").read_text() == "my own records\n"


# ------------------------------------------------------------------------------ 5. I/O errors
def test_an_output_dir_that_is_a_file_is_a_clear_error(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("keep me")
    with pytest.raises(OutputError, match=r"notes\.txt is an existing file, not a directory"):
        train(tiny(tmp_path), path)
    assert path.read_text() == "keep me"


def _unshare_ok() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    return probe.returncode == 0


needs_unshare = pytest.mark.skipif(
    not _unshare_ok(), reason="needs unprivileged user+mount namespaces (unshare -rm)"
)


def _train_on_tmpfs(tmp_path, options: str, output: str, *extra: str):
    recipe = save_config(tiny(tmp_path, train={"max_steps": 4, "save_every": 2,
                                               "global_batch_size": 8}),
                         tmp_path / "recipe.yaml")  # fmt: skip
    mount = tmp_path / "mnt"
    mount.mkdir()
    train_cmd = shlex.join([sys.executable, "-m", "proseco.cli", "train", str(recipe),
                            "--output-dir", str(mount / output), *extra])  # fmt: skip
    script = f"mount -t tmpfs -o {options} tmpfs {shlex.quote(str(mount))} && exec {train_cmd}"
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, env=ENV,
        timeout=300,
    )  # fmt: skip


@needs_unshare
def test_a_full_disk_is_named_as_such(tmp_path):
    proc = _train_on_tmpfs(tmp_path, "size=1m", "run")  # room for the config, not a checkpoint
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "error: cannot write a checkpoint to " in proc.stderr
    assert "no space left on device (ENOSPC)" in proc.stderr and "Traceback" not in proc.stderr


@needs_unshare
def test_a_read_only_output_dir_is_named_as_such(tmp_path):
    proc = _train_on_tmpfs(tmp_path, "ro,size=1m", "run")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"cannot write {tmp_path / 'mnt' / 'run'}: " in proc.stderr
    assert "read-only file system (EROFS)" in proc.stderr and "Traceback" not in proc.stderr


def test_a_corrupt_trainer_state_is_reported_with_its_path(run_copy):
    config, run = run_copy
    shutil.rmtree(run / "checkpoints" / "step-00000002")
    state = run / "checkpoints" / "step-00000004" / "trainer_state.json"
    state.write_text('{"step": 4, "tokens')
    with pytest.raises(ModelLoadError, match=rf"{state}.* cannot be read"):
        train(update_config(config, train={"max_steps": 6}), run, resume=True)


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous_one(run_copy, caplog):
    config, run = run_copy
    weights = run / "checkpoints" / "step-00000004" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with caplog.at_level("WARNING", logger="proseco.training"):
        result = train(update_config(config, train={"max_steps": 6}), run, resume=True)
    assert result.step == 6
    assert "step-00000004 cannot be loaded" in caplog.text
    assert "falling back to the previous checkpoint, step-00000002" in caplog.text
    (record,) = _resume_log(run)
    assert record["checkpoint"] == "step-00000002" and "step-00000004" in record["skipped"]
    assert [r["step"] for r in read_metrics(run, "train")] == [1, 2, 3, 4, 5, 6]


# ----------------------------------------------------------------------- 6. batch vs the data
def test_a_global_batch_larger_than_the_training_split_is_an_error(tmp_path):
    config = tiny(tmp_path, train={"global_batch_size": 1000, "max_steps": 1})
    with pytest.raises(DataError, match=r"global_batch_size=1000 is larger than the training "):
        train(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


# -------------------------------------------------------------------- 7. random state on resume
class _Hostile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def test_a_random_state_that_cannot_be_restored_stops_an_exact_resume(run_copy, caplog):
    config, run = run_copy
    marker = run.parent / "pwned"
    rng = run / "checkpoints" / "step-00000004" / "random_states_0.pkl"
    rng.write_bytes(pickle.dumps(_Hostile(marker), protocol=2))
    longer = update_config(config, train={"max_steps": 6})
    with pytest.raises(ModelLoadError, match=r"cannot resume exactly from .*random_states_0\.pkl"):
        train(longer, run, resume=True)
    assert not marker.exists()  # the pickle was refused, not run
    assert [r["step"] for r in read_metrics(run, "train")] == [1, 2, 3, 4]  # nothing changed
    allowed = update_config(longer, train={"allow_inexact_resume": True})
    with caplog.at_level("WARNING", logger="proseco.training"):
        assert train(allowed, run, resume=True).step == 6
    assert "WITHOUT its random state" in caplog.text and not marker.exists()
    (record,) = _resume_log(run)
    assert "random_states_0.pkl" in record["inexact"]
