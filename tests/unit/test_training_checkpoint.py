"""Checkpoint discovery and atomic publication (no training needed)."""

from __future__ import annotations

from proseco.training.checkpoint import (
    CHECKPOINTS,
    STATE_FILE,
    _publish,
    latest_checkpoint,
    list_checkpoints,
)


def _checkpoint(root, name, complete=True):
    path = root / CHECKPOINTS / name
    path.mkdir(parents=True)
    (path / "model.safetensors").write_text("weights")
    if complete:
        (path / STATE_FILE).write_text("{}")
    return path


def test_only_complete_published_checkpoints_count(tmp_path):
    _checkpoint(tmp_path, "step-00000010")
    _checkpoint(tmp_path, "step-00000002")
    _checkpoint(tmp_path, "step-00000030", complete=False)  # killed while writing
    _checkpoint(tmp_path, ".tmp-step-00000040")  # never renamed into place
    _checkpoint(tmp_path, "best")
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 10]
    assert latest_checkpoint(tmp_path).name == "step-00000010"
    assert latest_checkpoint(tmp_path / "elsewhere") is None


def test_publish_replaces_an_existing_directory_whole(tmp_path):
    final = _checkpoint(tmp_path, "step-00000005")
    (final / "stale.bin").write_text("old")
    tmp = _checkpoint(tmp_path, ".tmp-step-00000005")
    (tmp / "model.safetensors").write_text("new weights")
    _publish(tmp, final)
    assert not tmp.exists() and not (final / "stale.bin").exists()
    assert (final / "model.safetensors").read_text() == "new weights"
    assert [p.name for p in (tmp_path / CHECKPOINTS).iterdir()] == ["step-00000005"]
