"""benchmarks/average_checkpoints.py: the mean of two checkpoints' EMA (or raw) weights, and
one-line errors for bad input."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tests.unit.benchmark_scripts import load_benchmark

from proseco.training import train

sys.path.insert(0, str(Path(__file__).parent))
from test_train_cpu import one_thread, tiny  # noqa: E402, F401 - one_thread is autouse


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("avg")
    config = tiny(
        tmp,
        train={"max_steps": 4, "save_every": 2, "eval_every": 0, "keep_checkpoints": 0,
               "ema_decay": 0.9},
    )  # fmt: skip
    return train(config, tmp / "run").output_dir


def _shadows(path: Path) -> dict[str, torch.Tensor]:
    ema = load_file(str(path / "ema.safetensors"))
    return {k.removeprefix("shadow."): v for k, v in ema.items() if k.startswith("shadow.")}


@pytest.mark.parametrize("weights", ["ema", "raw"])
def test_the_average_is_the_mean_of_the_checkpoints(run, tmp_path, weights, capsys):
    script = load_benchmark("average_checkpoints.py")
    out = tmp_path / "avg"
    assert script.main([str(run), str(out), "--steps", "2", "4", "--weights", weights]) == 0
    got = load_file(str(out / "model.safetensors"))
    a, b = (run / "checkpoints" / f"step-{s:08d}" for s in (2, 4))
    if weights == "ema":
        first, second = _shadows(a), _shadows(b)
    else:
        first, second = (load_file(str(p / "model.safetensors")) for p in (a, b))
    assert set(first) <= set(got)
    for name, value in first.items():
        expected = (value.double() + second[name].double()) / 2
        torch.testing.assert_close(got[name].double(), expected, rtol=0, atol=1e-6)
    assert not torch.equal(first[name], second[name])  # the two steps differ: a real average
    assert (out / "tokenizer_config.json").is_file()
    assert "steps [2, 4]" in capsys.readouterr().out


def test_bad_input_is_one_line_and_exit_2(run, tmp_path, capsys):
    script = load_benchmark("average_checkpoints.py")
    assert script.main([str(run), str(tmp_path / "x"), "--steps", "2", "3"]) == 2
    assert "step-00000003 is not a checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert script.main([str(tmp_path), str(tmp_path / "y"), "--steps", "2"]) == 2
    assert "not a training run" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    assert script.main([str(run), str(tmp_path / "taken"), "--steps", "2"]) == 2
    assert "exists" in capsys.readouterr().err
