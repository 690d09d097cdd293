"""Shipped checkpoints are stored in float16 and load as float32 on a CPU with the same outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors import safe_open

from proseco import load_pretrained
from proseco.pretrained import shipped_checkpoints
from tests.unit.benchmark_scripts import load_benchmark


def _script():
    return load_benchmark("ship_checkpoints.py")


def _fake_run(tmp_path: Path) -> Path:
    """A run directory (final/, config.yaml, metrics.jsonl) made from a shipped checkpoint."""
    source = shipped_checkpoints()["mdlm-ring"]
    run = tmp_path / "run"
    shutil.copytree(source, run / "final")
    shutil.copy(source / "config.yaml", run / "config.yaml")
    shutil.copy(source / "metrics.jsonl", run / "metrics.jsonl")
    return run


def _stored_dtypes(directory: Path) -> set[str]:
    with safe_open(str(directory / "model.safetensors"), "pt") as f:
        return {str(f.get_slice(k).get_dtype()) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(ids)
    return (out.logits if hasattr(out, "logits") else out).float()


def test_ship_stores_float16_and_cpu_loading_upcasts(tmp_path):
    run = _fake_run(tmp_path)
    reference = load_pretrained(run / "final", dtype="float32").model
    target = _script().ship(run, "mdlm-ring", dtype="float16", assets=tmp_path / "assets")

    assert _stored_dtypes(target) == {"F16"}
    assert json.loads((target / "config.json").read_text()).get("dtype") == "float16"
    assert "stored in float16" in (target / "README.md").read_text()

    loaded = load_pretrained(target)
    assert {p.dtype for p in loaded.model.parameters()} == {torch.float32}
    ids = torch.randint(
        0, reference.config.vocab_size, (4, 32), generator=torch.Generator().manual_seed(0)
    )
    expected, got = _logits(reference, ids), _logits(loaded.model, ids)
    # float16 keeps ~3 decimal digits: the logits move by far less than their spread
    assert (got - expected).abs().max() < 0.05 * expected.std()
    assert not torch.equal(got, expected) or _stored_dtypes(run / "final") == {"F16"}


def test_an_explicit_dtype_keeps_the_stored_precision(tmp_path):
    run = _fake_run(tmp_path)
    target = _script().ship(run, "mdlm-ring", dtype="float16", assets=tmp_path / "assets")
    model = load_pretrained(target, dtype="float16").model
    assert {p.dtype for p in model.parameters()} == {torch.float16}


def test_float32_shipping_leaves_the_weights_as_they_are(tmp_path):
    run = _fake_run(tmp_path)
    target = _script().ship(run, "mdlm-ring", dtype="float32", assets=tmp_path / "assets")
    assert _stored_dtypes(target) == _stored_dtypes(run / "final")


def test_shipping_again_replaces_the_directory_and_leaves_no_temporaries(tmp_path):
    run = _fake_run(tmp_path)
    assets = tmp_path / "assets"
    _script().ship(run, "mdlm-ring", dtype="float32", assets=assets)
    (assets / "mdlm-ring" / "stale.txt").write_text("from the last ship")
    _script().ship(run, "mdlm-ring", dtype="float16", assets=assets)
    assert sorted(p.name for p in assets.iterdir()) == ["mdlm-ring"]
    assert not (assets / "mdlm-ring" / "stale.txt").exists()
    assert _stored_dtypes(assets / "mdlm-ring") == {"F16"}


def test_the_readme_gives_the_command_and_the_resume_history(tmp_path):
    run = _fake_run(tmp_path)
    entries = [
        {"step": 1000, "changed": {}},
        {"step": 3500, "changed": {"train.max_steps": [8000, 16000]}},
    ]
    (run / "resume_log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    target = _script().ship(run, "mdlm-ring", recipe="qm9-{name}-cpu", assets=tmp_path / "assets")
    readme = (target / "README.md").read_text()
    assert "proseco train qm9-mdlm-ring-cpu --output-dir runs/run\n" in readme
    assert "resumed from its checkpoints 2 times" in readme
    assert "`train.max_steps` 8000 -> 16000 at step 3500." in readme
    assert (target / "resume_log.jsonl").read_text().count("\n") == 2


def test_training_time_counts_lines_logged_again_after_a_resume_once():
    rows = [
        {"split": "train", "tokens_seen": 1000, "tokens_per_s": 10.0},
        {"split": "train", "tokens_seen": 2000, "tokens_per_s": 10.0},
        {"split": "train", "tokens_seen": 1500, "tokens_per_s": 10.0},  # after a resume
        {"split": "train", "tokens_seen": 2500, "tokens_per_s": 10.0},
    ]
    assert _script()._hours(rows) == f"{(1000 + 1000 + 0 + 1000) / 10 / 60:.0f} min"
    assert _script()._hours([{**rows[0], "tokens_per_s": 0.1}]) == f"{10000 / 3600:.1f} h"


def test_a_fine_tuned_run_names_its_base_in_the_readme(tmp_path):
    run = _fake_run(tmp_path)
    config = (
        (run / "config.yaml")
        .read_text()
        .replace("  pretrained: null", "  pretrained: package:assets/qm9/mdlm")
    )
    assert "package:assets/qm9/mdlm" in config
    (run / "config.yaml").write_text(config)
    target = _script().ship(
        run, "proseco", dtype="float16", assets=tmp_path / "assets", recipe="qm9-x-ft-cpu"
    )
    readme = (target / "README.md").read_text()
    assert "Fine-tuned from `package:assets/qm9/mdlm`" in readme
    assert "proseco train qm9-x-ft-cpu" in readme
    assert (
        "Fine-tuned"
        not in _script()
        .ship(_fake_run(tmp_path / "b"), "m", assets=tmp_path / "assets")
        .joinpath("README.md")
        .read_text()
    )
