"""docs/results/qm9_small_runs/pipeline.sh (issue 25) runs unattended for hours, so its decisions
are pinned here with stand-ins for `proseco train` and the benchmark scripts: which runs it
trains to which step, the one low-learning-rate continuation when MDLM is under the 60 % gate,
PRISM's 15 % budget, ProSeCo fine-tuned from the shipped MDLM, and that a rerun after the end
trains nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PIPELINE = REPO / "docs" / "results" / "qm9_small_runs" / "pipeline.sh"

# `proseco train RECIPE --output-dir DIR ... --train.max_steps N [--optim.min_lr X]`: records the
# call and leaves DIR as a finished run at step N.
PROSECO = r"""#!/usr/bin/env bash
echo "$*" >> "$CALLS"
dir= steps=
while [ $# -gt 0 ]; do
  case $1 in --output-dir) dir=$2;; --train.max_steps) steps=$2;; esac; shift
done
mkdir -p "$dir/final"
echo '{}' > "$dir/final/config.json"
echo "{\"step\": $steps}" > "$dir/final/export_info.json"
printf 'train:\n  max_steps: %s\n' "$steps" > "$dir/config.yaml"
"""

# The benchmark scripts: record the call; the curve gives MDLM's final/ the validity $VALIDITY.
CURVE = """import json, os, sys
from pathlib import Path
open(os.environ["CALLS"], "a").write("curve\\n")
out = Path(sys.argv[sys.argv.index("--out") + 1]); out.mkdir(parents=True, exist_ok=True)
step = json.loads(Path("runs/qm9-mdlm-small/final/export_info.json").read_text())["step"]
row = {"run": "mdlm-small", "source": "final", "step": step,
       "validity": float(os.environ["VALIDITY"])}
(out / "qm9_training_curve.json").write_text(json.dumps({"rows": [row]}))
(out / "qm9_training_curve.png").write_bytes(b"png")
"""
RECORD = """import os, sys
from pathlib import Path
open(os.environ["CALLS"], "a").write("{name} " + " ".join(sys.argv[1:]) + "\\n")
args = sys.argv[1:]
for flag, name in (("--json", None), ("--out", "qm9_rows.json")):
    if flag in args:
        path = Path(args[args.index(flag) + 1])
        path = path / name if name else path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{{}}")
"""


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    script = root / "docs" / "results" / "qm9_small_runs" / "pipeline.sh"
    script.parent.mkdir(parents=True)
    shutil.copy(PIPELINE, script)
    (root / "docs" / "results" / "qm9_baselines_notes.md").write_text("notes")
    stubs = root / ".venv" / "bin"
    stubs.mkdir(parents=True)
    real = Path(sys.executable).parent
    (stubs / "activate").write_text(f'export PATH="{stubs}:{real}:$PATH"\n')
    (stubs / "proseco").write_text(PROSECO)
    (stubs / "proseco").chmod(0o755)
    bench = root / "benchmarks"
    bench.mkdir()
    (bench / "qm9_training_curve.py").write_text(CURVE)
    for name in ("ship_checkpoints", "qm9_precision_check", "qm9"):
        (bench / f"{name}.py").write_text(RECORD.format(name=name))
    assets = root / "src" / "proseco" / "assets" / "qm9" / "mdlm"
    assets.mkdir(parents=True)
    runs = root / "runs"
    for name in ("mdlm", "proseco"):  # runs in progress: configured for the recipes' steps
        (runs / f"qm9-{name}-small").mkdir(parents=True)
        steps = 32000 if name == "mdlm" else 16000
        (runs / f"qm9-{name}-small" / "config.yaml").write_text(f"train:\n  max_steps: {steps}\n")
    return root


def _run(root: Path, validity: float) -> list[str]:
    calls = root / "calls.log"
    calls.unlink(missing_ok=True)
    env = {**os.environ, "CALLS": str(calls), "VALIDITY": str(validity)}
    script = root / "docs" / "results" / "qm9_small_runs" / "pipeline.sh"
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return calls.read_text().splitlines() if calls.exists() else []


def _trained(calls: list[str]) -> list[str]:
    """``recipe steps [min_lr]`` of each training call."""
    out = []
    for call in calls:
        if call.startswith("train "):
            words = call.split()
            steps = words[words.index("--train.max_steps") + 1]
            extra = words[words.index("--optim.min_lr") + 1] if "--optim.min_lr" in words else ""
            out.append(f"{words[1]} {steps} {extra}".strip())
    return out


@pytest.mark.skipif(shutil.which("flock") is None, reason="needs flock (util-linux)")
def test_over_the_gate_trains_the_recipes_steps_and_a_rerun_trains_nothing(tmp_path):
    root = _tree(tmp_path)
    calls = _run(root, validity=0.62)
    assert _trained(calls) == [
        "qm9-mdlm-small-cpu 32000",
        "qm9-prism-cpu 4800",
        "qm9-proseco-small-ft-cpu 2500",
    ]
    assert sum(c.startswith("ship_checkpoints") for c in calls) == 2
    assert calls[-1].startswith("qm9 --checkpoints runs/qm9-ckpts --out docs/results")
    assert (root / "docs" / "results" / "qm9_training_curve.json").is_file()
    assert _trained(_run(root, validity=0.62)) == []


@pytest.mark.skipif(shutil.which("flock") is None, reason="needs flock (util-linux)")
def test_under_the_gate_continues_both_runs_at_a_low_learning_rate_once(tmp_path):
    root = _tree(tmp_path)
    calls = _run(root, validity=0.58)
    assert _trained(calls) == [
        "qm9-mdlm-small-cpu 32000",
        "qm9-mdlm-small-cpu 40000 1e-5",
        "qm9-prism-cpu 6000",
        "qm9-proseco-small-ft-cpu 2500",
    ]
    assert _trained(_run(root, validity=0.58)) == []  # still under: no second continuation


@pytest.mark.skipif(shutil.which("flock") is None, reason="needs flock (util-linux)")
def test_an_interrupted_continuation_is_resumed_not_skipped(tmp_path):
    root = _tree(tmp_path)
    run = root / "runs" / "qm9-mdlm-small"
    (run / "final").mkdir()  # exported at 32000, then resumed towards 40000 and stopped
    (run / "final" / "config.json").write_text("{}")
    (run / "final" / "export_info.json").write_text(json.dumps({"step": 32000}))
    (run / "config.yaml").write_text("train:\n  max_steps: 40000\n")
    calls = _run(root, validity=0.65)  # the gate is met by now: the continuation still ends
    assert _trained(calls)[:2] == ["qm9-mdlm-small-cpu 40000 1e-5", "qm9-prism-cpu 6000"]
