"""The run directory (issue 9): the lock, foreign directories, atomic writes, I/O error messages,
and the settings a resumed run may change (no training needed)."""

from __future__ import annotations

import errno
import json
import os

import pytest
import yaml

from proseco import fileio
from proseco.errors import ConfigError, OutputError
from proseco.training.checkpoint import RESUMABLE_FIELDS, plan_resume
from proseco.training.config_io import apply_overrides, load_config, save_config, update_config
from proseco.training.metrics import read_metrics
from proseco.training.rundir import (
    LOCK_FILE,
    RunLock,
    atomic_write_text,
    inspect_run_dir,
    output_error,
    writing,
)


def test_a_second_lock_on_the_same_directory_is_refused_naming_the_holder(tmp_path):
    run = tmp_path / "run"
    with RunLock(run) as first:
        assert first.held and (run / LOCK_FILE).is_file()
        holder = json.loads((run / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] and holder["started"]
        # flock locks belong to an open file, so a second open in this process conflicts too
        with pytest.raises(
            OutputError, match=rf"in use by another proseco run \(pid {os.getpid()}"
        ):
            RunLock(run).acquire()
        assert first.held
    # released: a run that wrote nothing leaves no trace, not even the directory
    assert not run.exists()
    with RunLock(run):
        (run / "config.yaml").write_text("x")
    assert (run / LOCK_FILE).is_file()  # kept next to a run's files
    with RunLock(run) as again:
        assert again.held


def test_the_lock_file_of_a_vanished_holder_is_not_trusted(tmp_path):
    """A process that removed the lock file while we waited does not leave us two holders."""
    lock = RunLock(tmp_path)
    lock.acquire()
    lock.release()  # tmp_path held only the lock file: it is removed
    assert not (tmp_path / LOCK_FILE).exists()
    lock.acquire()
    assert os.path.samestat(os.fstat(lock._fd), os.stat(tmp_path / LOCK_FILE))
    lock.release()


def test_directories_holding_other_files_are_not_runs(tmp_path):
    assert not inspect_run_dir(tmp_path / "new").exists
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "metrics.jsonl").write_text('{"step": 1}\n')
    found = inspect_run_dir(tmp_path / "mine")
    assert found.entries == ["metrics.jsonl"] and not found.is_run
    config = load_config("text-cpu-tiny")
    with pytest.raises(OutputError, match="does not hold a proseco run"):
        plan_resume(config, tmp_path / "mine", resume=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is an existing file, not a directory"):
        inspect_run_dir(tmp_path / "file")
    (tmp_path / "ours").mkdir()
    save_config(config, tmp_path / "ours" / "config.yaml")
    found = inspect_run_dir(tmp_path / "ours")
    assert found.is_run and not found.has_progress  # a start that failed: may start again
    assert plan_resume(config, tmp_path / "ours", resume=False).candidates == []


def test_atomic_write_replaces_whole_files_and_cleans_stale_temporaries(tmp_path):
    target = tmp_path / "metrics.jsonl"
    target.write_text("old\n")
    (tmp_path / ".metrics.jsonl.tmp-999999").write_text("half")  # from a killed writer
    atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_a_record_torn_by_a_kill_is_skipped_but_other_damage_is_reported(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "split": "train"}\n{"step": 2, "spl')
    assert [r["step"] for r in read_metrics(path)] == [1]
    path.write_text('{"step": 1}\ngarbage\n{"step": 3}\n')
    with pytest.raises(ValueError, match="line 2 is not a JSON record"):
        read_metrics(path)


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (errno.ENOSPC, "no space left on device (ENOSPC)"),
        (errno.EROFS, "read-only file system (EROFS)"),
        (errno.EACCES, "permission denied"),
    ],
)
def test_write_errors_name_the_path_and_the_cause(tmp_path, code, text):
    err = output_error(OSError(code, os.strerror(code), str(tmp_path / "x")), tmp_path)
    assert isinstance(err, OutputError) and text in str(err) and str(tmp_path / "x") in str(err)


def test_torch_style_write_failures_are_diagnosed_by_a_probe(tmp_path, monkeypatch):

    full = OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(fileio, "_probe", lambda directory: full)
    no_space = r"cannot write .*ckpt: no space left on device"
    with pytest.raises(OutputError, match=no_space), writing(tmp_path / "ckpt"):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64")
    monkeypatch.setattr(fileio, "_probe", lambda directory: None)
    with pytest.raises(RuntimeError, match="unexpected pos"), writing(tmp_path):
        raise RuntimeError("unexpected pos 64")  # not a disk problem: left alone


# --------------------------------------------------------------------- finite settings (case 2)
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("optim.lr", "nan"),
        ("optim.lr", "inf"),
        ("optim.grad_clip", ".inf"),
        ("optim.min_lr", "nan"),
        ("optim.eps", "inf"),
        ("optim.weight_decay", "nan"),
        ("optim.betas", "[.nan, 0.99]"),
        ("loss.sc_weight", "nan"),
        ("loss.mdm_weight", "inf"),
        ("loss.t_min", "nan"),
        ("loss.cond_dropout", "nan"),
        ("model.dropout", "nan"),
        ("train.ema_decay", "nan"),
        ("data.validation_fraction", "nan"),
    ],
)
def test_non_finite_settings_are_rejected_naming_the_field(field, value):
    base = load_config("text-cpu-tiny")
    with pytest.raises(ConfigError, match=rf"{field} must be a finite number"):
        apply_overrides(base, [f"--{field}", value])


def test_print_config_rejects_a_nan_learning_rate(capsys):
    from proseco.commands import main

    assert main(["train", "text-cpu-tiny", "--optim.lr", "nan", "--print-config"]) == 2
    assert "optim.lr must be a finite number" in capsys.readouterr().err


# -------------------------------------------------------------------- resumable settings (case 3)
def test_the_recovery_settings_may_change_on_resume(tmp_path):
    assert {
        "optim.lr", "optim.min_lr", "optim.warmup_steps", "optim.lr_schedule",
        "optim.grad_clip", "train.max_steps", "train.log_every", "train.save_every",
        "train.eval_every", "train.allow_inexact_resume",
    } <= RESUMABLE_FIELDS  # fmt: skip
    assert not {"optim.betas", "optim.eps", "train.seed", "train.global_batch_size"} & (
        RESUMABLE_FIELDS
    )
    config = update_config(load_config("text-cpu-tiny"), train={"max_steps": 10})
    run = tmp_path / "run"
    ckpt = run / "checkpoints" / "step-00000004"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text('{"step": 4}')
    save_config(config, run / "config.yaml")
    new = update_config(config, optim={"lr": 1e-3, "grad_clip": 0.5})
    plan = plan_resume(new, run, resume=True)
    assert plan.candidates == [ckpt]
    assert plan.changes == {"optim.lr": (0.003, 1e-3), "optim.grad_clip": (1.0, 0.5)}
    with pytest.raises(ConfigError, match=r"differs from the saved one in optim\.betas; only"):
        plan_resume(update_config(config, optim={"betas": (0.8, 0.9)}), run, resume=True)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["optim"]["lr"] == 0.003  # planning writes nothing
