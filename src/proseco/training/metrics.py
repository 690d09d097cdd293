"""Metric sinks: a JSONL file always; TensorBoard and Weights & Biases through Accelerate trackers.

``metrics.jsonl`` gets one JSON object per record (``{"step": ..., "split": "train", ...}``),
written by the main process only. When a run resumes from step ``k``, records after ``k`` (from
the interrupted attempt) are dropped first, so the file reads as one uninterrupted run. That
rewrite goes to a temporary file renamed over ``metrics.jsonl``, so a kill during it leaves the
old file whole; a record torn by a kill while it was appended is dropped.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from proseco.errors import DataError
from proseco.fileio import BadLine, atomic_write_text, read_jsonl_objects, writing
from proseco.training.rundir import METRICS_FILE

__all__ = ["MetricsLogger", "tracker_names", "read_metrics"]


def tracker_names(tensorboard: bool, wandb_project: str | None) -> list[str]:
    """Accelerate tracker names for the options; raises if a requested package is missing."""
    names = []
    if tensorboard:
        if (
            importlib.util.find_spec("tensorboard") is None
            and importlib.util.find_spec("tensorboardX") is None
        ):
            raise ImportError("train.tensorboard: true needs TensorBoard: pip install tensorboard")
        names.append("tensorboard")
    if wandb_project:
        if importlib.util.find_spec("wandb") is None:
            raise ImportError("train.wandb_project is set, which needs wandb: pip install wandb")
        names.append("wandb")
    return names


def _parse(path: Path) -> list[dict[str, Any]]:
    """The records of ``path``; a torn last line (no newline, not JSON) is skipped."""

    def bad(line: BadLine) -> DataError:
        return DataError(f"{path} line {line.lineno} is not a JSON record: {line.text[:80]!r}")

    records = read_jsonl_objects(
        path, what="metrics file", hint="", empty=None, torn_tail=True, on_bad_line=bad
    )
    return [record for _, record in records]


def read_metrics(path: str | Path, split: str | None = None) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (optionally only one ``split``).

    A torn last line (the run was killed while appending it) is skipped.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        return []
    return [r for r in _parse(path) if split is None or r.get("split") == split]


def _clean(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLogger:
    """Writes metrics to ``OUTPUT/metrics.jsonl`` and to Accelerate's trackers.

    Args:
        accelerator: built with ``log_with=tracker_names(...)`` if trackers are wanted.
        output_dir: the run directory.
        resume_step: when resuming, drop records with ``step > resume_step`` first.
        project_name, config: passed to ``accelerator.init_trackers``.
    """

    def __init__(
        self,
        accelerator: Accelerator,
        output_dir: str | Path,
        *,
        resume_step: int | None = None,
        project_name: str = "proseco",
        config: dict[str, Any] | None = None,
    ) -> None:
        self.accelerator = accelerator
        self.path = Path(output_dir) / METRICS_FILE
        if accelerator.is_main_process:
            with writing(self.path, "metrics to"):
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if resume_step is None:
                    atomic_write_text(self.path, "")
                else:
                    kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
                    text = "".join(json.dumps(r) + "\n" for r in kept)
                    atomic_write_text(self.path, text, fault="metrics-rewrite")
        if accelerator.log_with:
            accelerator.init_trackers(project_name, config=config)

    def log(self, split: str, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
        """Record ``metrics`` for ``split`` at ``step``; returns the cleaned record."""
        record = {"step": step, "split": split, **{k: _clean(v) for k, v in metrics.items()}}
        if self.accelerator.is_main_process:
            with writing(self.path, "metrics to"), self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        if self.accelerator.log_with:
            numeric = {
                f"{split}/{k}": v
                for k, v in record.items()
                if k not in ("step", "split") and isinstance(v, (int, float))
            }
            self.accelerator.log(numeric, step=step)
        return record

    def close(self) -> None:
        """Flush and close the trackers."""
        if self.accelerator.log_with:
            self.accelerator.end_training()
