"""Average the weights of several checkpoints of one training run into a model directory.

Checkpoint averaging (a uniform average of the EMA weights at several steps) is a cheap way to
get a longer-horizon average than the run's EMA; issue 25 used it as a pilot (it gave nothing
at QM9 step 12500; see ``docs/results/qm9_small_runs/``). Usage::

    python benchmarks/average_checkpoints.py RUN_DIR OUT_DIR --steps 10500 11000 11500
        [--weights ema|raw]

``--weights ema`` (the default) averages each checkpoint's ``ema.safetensors`` shadows, ``raw``
the training weights. ``OUT_DIR`` gets a ``from_pretrained`` directory (config, float32 weights,
the run's tokenizer); it must not exist yet, and is written to a temporary name and renamed, so
a failed run leaves nothing half-written. A missing run, step or weights file is one line on
stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from qm9_training_curve import load_with_ema, run_config, tokenizer_of  # noqa: E402


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step-{step:08d}"


def average(run_dir: Path, steps: list[int], weights: str = "ema"):
    """The run's model with the mean of its weights at ``steps`` (float64 sums, stored float32).

    Raises:
        FileNotFoundError: a checkpoint, or its ``ema.safetensors`` with ``weights="ema"``.
    """
    import torch

    from proseco.models.dit import ProsecoDiT

    total, model = None, None
    for step in steps:
        path = checkpoint_dir(run_dir, step)
        if not (path / "model.safetensors").is_file():
            raise FileNotFoundError(f"{path} is not a checkpoint (no model.safetensors)")
        if weights == "ema":
            if not (path / "ema.safetensors").is_file():
                raise FileNotFoundError(f"{path} has no ema.safetensors; use --weights raw")
            model, _ = load_with_ema(path, "checkpoint")
        else:
            model = ProsecoDiT.from_pretrained(str(path)).eval()
        state = {k: v.double() for k, v in model.state_dict().items()}
        total = state if total is None else {k: total[k] + v for k, v in state.items()}
    mean = {k: (v / len(steps)).to(torch.float32) for k, v in total.items()}
    model.load_state_dict(mean)
    return model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a proseco train output directory")
    parser.add_argument("out_dir", type=Path, help="the model directory to write (must not exist)")
    parser.add_argument("--steps", type=int, nargs="+", required=True, help="checkpoint steps")
    parser.add_argument("--weights", choices=("ema", "raw"), default="ema")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.out_dir.exists():
        print(f"error: {args.out_dir} exists; give a new directory", file=sys.stderr)
        return 2
    if not (args.run_dir / "config.yaml").is_file():
        print(f"error: {args.run_dir} is not a training run (no config.yaml)", file=sys.stderr)
        return 2
    try:
        model = average(args.run_dir, sorted(set(args.steps)), args.weights)
    except (FileNotFoundError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    tmp = args.out_dir.with_name(f".{args.out_dir.name}.tmp-{os.getpid()}")
    try:
        model.save_pretrained(tmp)
        tokenizer_of(args.run_dir, run_config(args.run_dir)).save_pretrained(tmp)
        tmp.rename(args.out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"averaged {args.weights} weights of steps {sorted(set(args.steps))} -> {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
