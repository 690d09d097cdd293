"""Training throughput (tokens/s) of MDLM vs ProSeCo on this machine, measured in one run.

Each mode trains the same recipe through :func:`proseco.training.train` (the real loop: data
order, loss, backward, clipping, AdamW, EMA) for ``--steps`` optimizer steps, logging every
``--window`` steps. The first window (warm-up) is dropped and the median of the others is kept.
Modes are interleaved over ``--repeats`` rounds so that background load hits them alike.

    python benchmarks/train_throughput.py                        # text-cpu-tiny, 1 thread
    python benchmarks/train_throughput.py --recipe qm9-proseco-cpu --steps 30 --window 10 --threads 2

Modes: ``mdlm`` (``loss.sc_weight 0``: one forward/backward), ``proseco-two-backward``
(``loss.two_backward: true``, the default: backward of the MDLM term before pass 2) and
``proseco-one-backward`` (``loss.two_backward: false``: both passes, then one backward). The table
gives each mode's step time relative to MDLM and projects the wall time of the recipe's full
``train.max_steps``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from proseco.training import load_config, train, update_config
from proseco.training.metrics import read_metrics

MODES = {
    "mdlm": {"sc_weight": 0.0},
    "proseco-two-backward": {"sc_weight": 1.0, "two_backward": True},
    "proseco-one-backward": {"sc_weight": 1.0, "two_backward": False},
}


def _one_run(config, mode: str, steps: int, window: int, root: Path) -> list[float]:
    run = update_config(
        config,
        loss=MODES[mode],
        train={
            "max_steps": steps,
            "log_every": window,
            "eval_every": 0,
            "save_every": 0,
            "progress_bar": False,
            "keep_checkpoints": 1,
        },
        data={"validation_fraction": 0.0},
    )
    out = root / f"{mode}-{time.monotonic_ns()}"
    train(run, out)
    return [r["tokens_per_s"] for r in read_metrics(out, "train")][1:]


def measure(
    recipe: str,
    *,
    steps: int,
    window: int,
    repeats: int,
    modes: list[str] | None = None,
    source: str | None = None,
) -> dict:
    """Train each mode ``repeats`` times; returns ``{"recipe", "batch", "length", "rows"}``.

    Each row: ``mode``, ``tokens_per_s`` (median window), ``steps_per_s``, ``step_time_ratio``
    (step time over the first mode's, within each repeat, median over repeats), ``full_run_min``
    and ``windows`` (timing windows kept).
    """
    modes = list(modes or MODES)
    config = load_config(recipe)
    if source:
        config = update_config(config, data={"source": source})
    full_steps = config.train.max_steps
    tokens_per_step = config.train.global_batch_size * config.data.max_length
    samples: dict[str, list[list[float]]] = {m: [] for m in modes}  # per repeat, per window
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            for mode in modes:
                samples[mode].append(_one_run(config, mode, steps, window, Path(tmp)))
    rows = []
    for mode in modes:
        tok_s = statistics.median(w for run in samples[mode] for w in run)
        # the runs of one repeat are adjacent in time: compare within a repeat, then take the
        # median over repeats, so that load drifting between repeats cancels out
        ratios = [
            statistics.median(base) / statistics.median(run)
            for base, run in zip(samples[modes[0]], samples[mode])
        ]
        rows.append(
            {
                "mode": mode,
                "tokens_per_s": tok_s,
                "steps_per_s": tok_s / tokens_per_step,
                "step_time_ratio": statistics.median(ratios),
                "full_run_min": full_steps * tokens_per_step / tok_s / 60,
                "windows": sum(len(run) for run in samples[mode]),
            }
        )
    return {
        "recipe": recipe,
        "batch": config.train.global_batch_size,
        "length": config.data.max_length,
        "max_steps": full_steps,
        "rows": rows,
    }


def markdown(results: list[dict]) -> str:
    """One table over recipes and modes."""
    lines = [
        "| recipe | mode | tokens/s | steps/s | step time vs MDLM | full run (min) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        for row in r["rows"]:
            lines.append(
                f"| {r['recipe']} ({r['max_steps']} steps) | {row['mode']} | "
                f"{row['tokens_per_s']:,.0f} | {row['steps_per_s']:.2f} | "
                f"{row['step_time_ratio']:.2f} | {row['full_run_min']:.1f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", nargs="+", default=["text-cpu-tiny"])
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per run")
    parser.add_argument("--window", type=int, default=10, help="steps per timing window")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--source", help="override data.source (e.g. an absolute fixture path)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.steps < 2 * args.window:
        parser.error("--steps must cover at least two --window s (the first is warm-up)")
    torch.set_num_threads(args.threads)
    results = []
    for recipe in args.recipe:
        results.append(
            measure(
                recipe, steps=args.steps, window=args.window, repeats=args.repeats,
                modes=args.modes, source=args.source,
            )
        )  # fmt: skip
    print(
        f"{args.threads} thread(s), torch {torch.__version__}, {args.steps} steps x "
        f"{args.repeats} repeats per mode"
    )
    print(markdown(results))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
