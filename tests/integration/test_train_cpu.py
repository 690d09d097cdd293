"""End-to-end CPU training with tiny models: loss falls, export loads, bad inputs fail early."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from proseco.training import TrainingDivergedError, load_config, train
from proseco.training.config_io import update_config
from proseco.training.metrics import read_metrics
from proseco.training.rundir import LOCK_FILE

FIXTURES = Path(__file__).parents[2] / "src" / "proseco" / "assets" / "text"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and far faster when other jobs share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(tmp_path: Path, recipe: str = "text-cpu-tiny", **sections) -> object:
    """A shipped tiny recipe with absolute fixture paths, a private cache and no progress bar."""
    config = load_config(recipe)
    source = str(FIXTURES / Path(config.data.source).name)
    base = {
        "data": {"source": source, "cache_dir": str(tmp_path / "cache")},
        "train": {"progress_bar": False},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return update_config(config, **base)


def test_tiny_text_recipe_trains_its_loss_falls_and_exports(tmp_path):
    config = tiny(tmp_path, train={"max_steps": 60, "log_every": 10, "eval_every": 30})
    result = train(config, tmp_path / "run")
    records = read_metrics(result.output_dir, "train")
    assert [r["step"] for r in records] == [10, 20, 30, 40, 50, 60]
    first, last = records[0]["mdm_loss"], records[-1]["mdm_loss"]
    assert last < first - 0.5, (first, last)  # ~4.6 -> ~3.0 nats per token
    assert [r["step"] for r in read_metrics(result.output_dir, "validation")] == [30, 60]
    assert result.validation["nelbo"] < 4.0 and result.validation["tokens"] > 0

    from transformers import AutoModelForMaskedLM, AutoTokenizer

    import proseco.models.dit  # noqa: F401 - registers the DiT

    model = AutoModelForMaskedLM.from_pretrained(result.final_dir)
    tok = AutoTokenizer.from_pretrained(result.final_dir)
    assert len(tok) == model.config.vocab_size and tok.mask_token_id == model.config.mask_token_id
    ema = load_file(str(result.checkpoint / "ema.safetensors"))
    for name, param in model.named_parameters():
        assert torch.equal(param.detach(), ema[f"shadow.{name}"]), name
    assert load_config(result.output_dir / "config.yaml") == config


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    import proseco.training.loop as loop

    real = loop.batch_loss

    def poisoned(*args, step, **kwargs):
        out = real(*args, step=step, **kwargs)
        if step >= 6:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(loop, "batch_loss", poisoned)
    config = tiny(tmp_path, train={"max_steps": 20, "save_every": 4, "global_batch_size": 8})
    with pytest.raises(
        TrainingDivergedError, match=r"non-finite at optimizer step 7.*step-00000004"
    ):
        train(config, tmp_path / "run")
    ckpt = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpt.iterdir()) == ["step-00000004"]
    assert json.loads((ckpt / "step-00000004" / "trainer_state.json").read_text())["step"] == 4
    assert not (tmp_path / "run" / "final").exists()


def test_two_backward_mode_gives_the_same_weights(tmp_path):
    finals = []
    for two in (False, True):
        config = tiny(
            tmp_path, loss={"two_backward": two},
            train={"max_steps": 3, "global_batch_size": 8, "ema_decay": 0.0},
        )  # fmt: skip
        finals.append(
            load_file(str(train(config, tmp_path / f"run{two}").final_dir / "model.safetensors"))
        )
    for name, value in finals[0].items():
        torch.testing.assert_close(finals[1][name], value, rtol=1e-4, atol=1e-6)


def test_bf16_autocast_with_gradient_accumulation_after_an_fp32_run(tmp_path):
    fp32 = tiny(tmp_path, train={"max_steps": 1, "global_batch_size": 8})
    train(fp32, tmp_path / "fp32")
    bf16 = update_config(fp32, train={"mixed_precision": "bf16", "micro_batch_size": 4})
    result = train(bf16, tmp_path / "bf16")
    assert result.step == 1 and result.validation["nelbo"] > 0


def test_labelled_time_conditioned_run_with_label_dropout(tmp_path):
    path = tmp_path / "labelled.jsonl"
    lines = [json.dumps({"text": f"molecule {i} " + "C" * (i % 7), "y": i % 3}) for i in range(40)]
    path.write_text("\n".join(lines))
    config = tiny(
        tmp_path,
        data={"source": str(path), "label": "y", "num_classes": 3, "max_length": 24},
        loss={"cond_dropout": 0.2},
        model={"time_conditioning": True},
        train={"max_steps": 4, "global_batch_size": 8},
    )
    result = train(config, tmp_path / "run")
    saved = json.loads((result.final_dir / "config.json").read_text())
    assert saved["num_classes"] == 3 and saved["time_conditioning"] is True
    assert result.validation is not None


def test_sft_recipe_trains(tmp_path):
    config = tiny(tmp_path, "sft-cpu-tiny", train={"max_steps": 4, "global_batch_size": 8})
    result = train(config, tmp_path / "run")
    assert result.step == 4 and (result.final_dir / "tokenizer.json").is_file()


def test_missing_data_file_fails_before_anything_is_written(tmp_path):
    config = tiny(tmp_path, data={"source": str(tmp_path / "nope.txt")})
    with pytest.raises(FileNotFoundError, match="nope.txt' not found"):
        train(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_sequences_longer_than_the_model_fail_before_training(tmp_path):
    config = tiny(tmp_path, model={"max_length": 16})
    with pytest.raises(ValueError, match="data.max_length=32 is longer than model.max_length=16"):
        train(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_an_existing_run_is_never_overwritten_and_resume_checks_the_config(tmp_path):
    config = tiny(tmp_path, train={"max_steps": 2, "global_batch_size": 8})
    run = tmp_path / "run"
    train(config, run)

    def files() -> dict:  # the lock file only names the last process that held it
        return {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != LOCK_FILE}

    before = files()
    with pytest.raises(ValueError, match="already holds a run.*--resume"):
        train(config, run)
    changed = update_config(config, model={"hidden_size": 32})
    with pytest.raises(ValueError, match=r"differs from the saved one in model\.hidden_size"):
        train(changed, run, resume=True)
    with pytest.raises(ValueError, match="at step 2, past train.max_steps=1"):
        train(update_config(config, train={"max_steps": 1}), run, resume=True)
    assert files() == before
    # a longer run may resume: only the new steps are trained
    longer = train(update_config(config, train={"max_steps": 3}), run, resume=True)
    assert [r["step"] for r in read_metrics(run, "train")] == [2, 3]
    assert longer.step == 3
