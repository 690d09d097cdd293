"""Train issue 19's SFT study: per task, vanilla and ProSeCo SFT models with 3 seeds each.

For each task of :data:`proseco.data.synthetic.STUDY_TASKS` the script writes the data
(``python -m proseco.data.synthetic --tasks TASK --n-train N --n-test 1000 --seed 0``), trains
``sft-synth-vanilla-cpu`` and ``sft-synth-proseco-cpu`` (identical but for ``loss.sc_weight``) with
``train.seed`` 0, 1, 2, all runs in parallel, keeping a checkpoint every ``--save-every`` steps.

Budget rule (fixed before the run, as issue 19 asks: "train until vanilla at 1 token/step is
between 30 % and 80 % and loses at least 10 points at 4-8 tokens/step"): for each task, the vanilla
models' EMA weights at every checkpoint answer ``--select-problems`` problems that are *not* test
problems (``generate_synthetic`` seed 99) at 1 and 8 tokens per step; the chosen step is the
latest checkpoint where the mean over seeds at 1 token/step lies in [30 %, 80 %] and drops by
>= 10 points at 8 tokens/step (if none does, the checkpoint whose 1-token accuracy is closest to
the range). Every model of that task, vanilla and ProSeCo alike, is exported at the chosen step
(EMA weights, stored in fp16) to ``OUT/TASK-OBJECTIVE-seedS/``, so the two objectives always get
the same budget.

With ``--deadline SECONDS`` the runs are stopped at that wall time and the rule chooses among the
checkpoints every run of the task has by then.

Run (the GPU makes this minutes instead of hours; ``--device cpu`` works too)::

    python benchmarks/sft_train.py --runs runs/sft19 --out docs/results/sft_models
    python benchmarks/sft_train.py --runs runs/sft19 --out docs/results/sft_models --select-only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sft  # noqa: E402  (benchmarks/sft.py: settings, evaluation)

from proseco.data.synthetic import STUDY_TASKS, generate_synthetic, write_synthetic  # noqa: E402

RECIPES = {"vanilla": "sft-synth-vanilla-cpu", "proseco": "sft-synth-proseco-cpu"}
RANGE = (0.30, 0.80)
MIN_DROP = 0.10


def run_name(task: str, objective: str, seed: int) -> str:
    return f"{task}-{objective}-seed{seed}"


def launch(args: argparse.Namespace) -> None:
    """Write the data and train every run in parallel (resumes runs that already have checkpoints)."""
    procs = []
    for task in args.tasks:
        data = Path(args.runs) / "data" / task
        if not (data / "train.jsonl").is_file():
            write_synthetic(data, n_train=args.n_train, n_test=sft.N_TEST, seed=0, tasks=[task])
        for objective, recipe in RECIPES.items():
            for seed in args.seeds:
                out = Path(args.runs) / run_name(task, objective, seed)
                cmd = [sys.executable, "-m", "proseco", "train", recipe, "--output-dir", str(out),
                       "--data.source", str(data / "train.jsonl"), "--train.seed", str(seed),
                       "--train.max_steps", str(args.max_steps),
                       "--train.global_batch_size", str(args.batch),
                       "--train.save_every", str(args.save_every), "--train.keep_checkpoints",
                       "1000", "--train.eval_every", str(args.save_every), "--train.log_every",
                       "100", *args.extra]  # fmt: skip
                if (out / "checkpoints").is_dir():
                    cmd.append("--resume")
                env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
                log = Path(args.runs) / f"{run_name(task, objective, seed)}.log"
                print(" ".join(cmd), flush=True)
                with log.open("w") as f:
                    procs.append((out, subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT,
                                                        env=env)))  # fmt: skip
    deadline = time.monotonic() + args.deadline if args.deadline else None
    while any(p.poll() is None for _, p in procs):
        if deadline is not None and time.monotonic() > deadline:
            print(f"deadline of {args.deadline} s reached: stopping the runs; the budget rule "
                  "chooses among the checkpoints written so far", flush=True)  # fmt: skip
            for _, p in procs:
                p.terminate()
            for _, p in procs:
                p.wait()
            return
        time.sleep(2)
    failed = [str(out) for out, p in procs if p.returncode != 0]
    if failed:
        raise SystemExit(f"sft_train.py: training failed in {failed} (see their .log)")


def checkpoint_model(run: Path, step: int, device: str) -> tuple[Any, Any]:
    """The run's model with the EMA weights of checkpoint ``step`` (float32, eval mode)."""
    from safetensors.torch import load_file

    from proseco.data.char_tokenizer import char_tokenizer
    from proseco.models.dit import ProsecoDiT, ProsecoDiTConfig

    path = run / "checkpoints" / f"step-{step:08d}"
    model = ProsecoDiT(ProsecoDiTConfig.from_pretrained(str(path))).eval()
    tokenizer = char_tokenizer()  # the recipes' data.tokenizer: char
    model.load_state_dict(load_file(str(path / "model.safetensors")))  # buffers, non-EMA params
    saved = load_file(str(path / "ema.safetensors"))
    ema = {k.removeprefix("shadow."): v for k, v in saved.items() if k.startswith("shadow.")}
    params = dict(model.named_parameters())
    missing = {n for n, p in params.items() if p.requires_grad} - set(ema)
    if missing:
        raise SystemExit(f"sft_train.py: {run} step {step}: EMA lacks {sorted(missing)[:3]}")
    with torch.no_grad():
        for name, value in ema.items():
            params[name].copy_(value)
    return model.to(device), tokenizer


def steps_of(run: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("step-*"))


def common_steps(args: argparse.Namespace, task: str) -> list[int]:
    """Checkpoint steps that every run of ``task`` (both objectives, every seed) has."""
    runs = [Path(args.runs) / run_name(task, o, s) for o in RECIPES for s in args.seeds]
    return sorted(set.intersection(*(set(steps_of(r)) for r in runs)))


def select(args: argparse.Namespace) -> dict[str, Any]:
    """The budget rule of the module docstring, per task; returns what it measured and chose."""
    chosen: dict[str, Any] = {}
    for task in args.tasks:
        records = generate_synthetic(0, args.select_problems, seed=99, tasks=[task])[1]
        runs = [Path(args.runs) / run_name(task, "vanilla", s) for s in args.seeds]
        curve = []
        for step in common_steps(args, task):
            acc = {1: [], 8: []}
            for run in runs:
                model, tok = checkpoint_model(run, step, args.device)
                for k in acc:
                    acc[k].append(sft.evaluate(model, tok, records, sft.Setting(k))["acc"])
            point = {"step": step, **{f"acc{k}": sum(v) / len(v) for k, v in acc.items()}}
            print(f"{task} step {step}: vanilla 1 tok/step {100 * point['acc1']:.1f}%, "
                  f"8 tok/step {100 * point['acc8']:.1f}%", flush=True)  # fmt: skip
            curve.append(point)
        ok = [p for p in curve if RANGE[0] <= p["acc1"] <= RANGE[1]
              and p["acc1"] - p["acc8"] >= MIN_DROP]  # fmt: skip
        if ok:
            pick, why = ok[-1], "latest checkpoint inside the rule"
        else:
            pick = min(curve, key=lambda p: max(RANGE[0] - p["acc1"], p["acc1"] - RANGE[1]))
            why = "no checkpoint inside the rule: closest 1-token accuracy to [30%, 80%]"
        chosen[task] = {"step": pick["step"], "why": why, "curve": curve}
    return chosen


def export(args: argparse.Namespace, chosen: dict[str, Any]) -> None:
    """Every model of each task at its chosen step, fp16 EMA weights, into ``args.out``."""
    for task, pick in chosen.items():
        for objective in RECIPES:
            for seed in args.seeds:
                run = Path(args.runs) / run_name(task, objective, seed)
                model, tok = checkpoint_model(run, pick["step"], "cpu")
                out = Path(args.out) / run_name(task, objective, seed)
                tmp = out.with_name(f".tmp-{out.name}")
                shutil.rmtree(tmp, ignore_errors=True)
                model.half().save_pretrained(str(tmp))
                tok.save_pretrained(str(tmp))
                for name in ("config.yaml", "metrics.jsonl"):
                    shutil.copy(run / name, tmp / f"train_{name}")
                shutil.rmtree(out, ignore_errors=True)
                tmp.rename(out)
    selection = {t: {k: v for k, v in c.items()} for t, c in chosen.items()}
    (Path(args.out) / "selection.json").write_text(json.dumps(selection, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="runs/sft19", help="where runs and data go")
    parser.add_argument("--out", default=sft.MODELS_DIR, help="where chosen models are exported")
    parser.add_argument("--tasks", default=",".join(STUDY_TASKS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--n-train", type=int, default=100_000, help="training problems per task")
    parser.add_argument("--max-steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--save-every", type=int, default=500)
    parser.add_argument("--select-problems", type=int, default=500)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--select-only", action="store_true", help="runs exist: select, export")
    parser.add_argument("--deadline", type=float, default=0, help="stop training after SECONDS")
    parser.add_argument("extra", nargs="*", help="more --section.field VALUE overrides")
    args = parser.parse_args(argv)
    args.tasks = [t for t in args.tasks.split(",") if t]
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    started = time.perf_counter()
    if not args.select_only:
        launch(args)
    print(f"training wall time: {time.perf_counter() - started:.0f} s", flush=True)
    chosen = select(args)
    export(args, chosen)
    print(json.dumps({t: (c["step"], c["why"]) for t, c in chosen.items()}), flush=True)
    print(f"total wall time: {time.perf_counter() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
