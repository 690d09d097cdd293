"""What the ProSeCo corrector spends, before and after rows leave the batch, in one run.

On the shipped QM9 ProSeCo checkpoint (``proseco.shipped_checkpoints()["proseco"]``), for each
``T`` (unmasking steps) and ``S`` (corrector calls per loop, ``Corrector(S, every=1)``), the same
sampling run (same seed) is made twice:

* **before** — ``sample(shrink_batch=False)``: every model call covers the whole batch; a corrector
  loop stops early only once *every* row has reached its fixed point;
* **after** — ``sample(shrink_batch=True)`` (the default): a row leaves a corrector loop at its own
  fixed point, rows without masks get no denoiser call, unchanged rows reuse their logits.

Reported per setting: the nominal corrector row-forwards ``S x loops x B`` (``loops`` = firings =
``T``), the mean corrector calls per sample (``corrector_nfe``), corrector row-forwards actually
computed and their share of nominal, all row-forwards (denoiser + corrector), model calls, wall
time (median of ``--repeats``, the two modes interleaved) and whether the samples are identical.

    python benchmarks/corrector_spend.py --threads 1 [--batch 256] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

import proseco
from proseco.pretrained import load_pretrained
from proseco.sampling import Corrector, sample

MODES = {"before": False, "after": True}


def run_setting(model, config, *, steps: int, corrector_steps: int, batch: int, length: int,
                mask_id: int, repeats: int, seed: int) -> dict:  # fmt: skip
    """Both modes of one ``(T, S)`` setting; returns one result row."""
    setting = config.replace(steps=steps, corrector=Corrector(corrector_steps, every=1))
    outs, walls = {}, {m: [] for m in MODES}
    for _ in range(repeats):
        for mode, shrink in MODES.items():
            generator = torch.Generator().manual_seed(seed)
            with torch.inference_mode():
                out = sample(
                    model, setting, mask_id=mask_id, batch_size=batch, length=length,
                    generator=generator, shrink_batch=shrink,
                )  # fmt: skip
            walls[mode].append(out.wall_time)
            outs[mode] = out
    loops = outs["before"].num_steps  # every=1: the corrector fires at every step
    nominal = corrector_steps * loops * batch
    differing = int((outs["before"].tokens != outs["after"].tokens).any(dim=1).sum())
    row = {"T": steps, "S": corrector_steps, "batch": batch, "loops": loops, "nominal": nominal}
    for mode, out in outs.items():
        row[mode] = {
            "corrector_nfe": out.corrector_nfe,
            "corrector_row_forwards": out.corrector_row_forwards,
            "share_of_nominal": out.corrector_row_forwards / nominal,
            "nfe": out.nfe,
            "row_forwards": out.row_forwards,
            "model_calls": out.model_calls,
            "wall_s": statistics.median(walls[mode]),
        }
    row["identical"] = differing == 0
    row["differing_rows"] = differing
    return row


def markdown(rows: list[dict]) -> str:
    """The before/after table."""
    lines = [
        "| T | S | nominal corrector row-forwards | corrector calls / sample before -> after "
        "| corrector row-forwards before -> after | share of nominal before -> after "
        "| all row-forwards before -> after | model calls before -> after "
        "| wall s before -> after | identical samples |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        b, a = r["before"], r["after"]
        same = "yes" if r["identical"] else f"no ({r['differing_rows']} rows differ)"
        lines.append(
            f"| {r['T']} | {r['S']} | {r['nominal']:,} "
            f"| {b['corrector_nfe']:.2f} -> {a['corrector_nfe']:.2f} "
            f"| {b['corrector_row_forwards']:,} -> {a['corrector_row_forwards']:,} "
            f"| {b['share_of_nominal']:.2f} -> {a['share_of_nominal']:.2f} "
            f"| {b['row_forwards']:,} -> {a['row_forwards']:,} "
            f"| {b['model_calls']} -> {a['model_calls']} "
            f"| {b['wall_s']:.2f} -> {a['wall_s']:.2f} | {same} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="proseco", help="a shipped checkpoint name or path")
    parser.add_argument("--steps", type=int, nargs="+", default=[8, 32], help="values of T")
    parser.add_argument("--corrector-steps", type=int, nargs="+", default=[2, 8], help="S")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    path = proseco.shipped_checkpoints().get(args.checkpoint, args.checkpoint)
    model, tokenizer, config = load_pretrained(path)
    print(
        f"checkpoint {Path(path).name}: batch {args.batch} x length {args.length}, "
        f"Corrector(S, every=1), {args.threads} thread(s), {args.repeats} repeats, "
        f"torch {torch.__version__}",
        flush=True,
    )
    rows = []
    for steps in args.steps:
        for s in args.corrector_steps:
            rows.append(
                run_setting(
                    model, config, steps=steps, corrector_steps=s, batch=args.batch,
                    length=args.length, mask_id=tokenizer.mask_token_id, repeats=args.repeats,
                    seed=args.seed,
                )
            )  # fmt: skip
            print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    print(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
