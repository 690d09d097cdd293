"""Metric sinks: JSONL records, truncation on resume, optional trackers."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest

from proseco.training.metrics import MetricsLogger, read_metrics, tracker_names


def _accelerator():
    return SimpleNamespace(is_main_process=True, log_with=[])


def test_records_are_jsonl_and_resume_drops_the_lost_steps(tmp_path):
    log = MetricsLogger(_accelerator(), tmp_path)
    for step in (10, 20, 30):
        log.log("train", step, {"loss": 1.0 / step})
    log.log("validation", 20, {"nelbo": float("nan")})
    assert [r["step"] for r in read_metrics(tmp_path, "train")] == [10, 20, 30]
    assert read_metrics(tmp_path, "validation")[0]["nelbo"] == "nan"
    MetricsLogger(_accelerator(), tmp_path, resume_step=20)  # resumed from the step-20 checkpoint
    assert [(r["split"], r["step"]) for r in read_metrics(tmp_path)] == [
        ("train", 10), ("train", 20), ("validation", 20),
    ]  # fmt: skip
    MetricsLogger(_accelerator(), tmp_path)  # a fresh run starts an empty file
    assert read_metrics(tmp_path) == []


def test_trackers_are_optional_and_missing_packages_are_named(monkeypatch):
    assert tracker_names(False, None) == []
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="pip install tensorboard"):
        tracker_names(True, None)
    with pytest.raises(ImportError, match="pip install wandb"):
        tracker_names(False, "my-project")
