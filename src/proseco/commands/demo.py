"""``proseco demo``: MDLM vs ProSeCo on QM9 with the checkpoints that ship with the package.

Loads the MDLM and ProSeCo QM9 models in ``proseco/assets/qm9`` (5 M-parameter DiTs: MDLM from the
committed recipe ``qm9-mdlm-small-cpu``, 40000 steps, and ProSeCo fine-tuned from it with
``qm9-proseco-small-ft-cpu``; about 16 h of CPU training together), samples with MDLM and
with ProSeCo corrector loops at several unmasking step counts, scores the molecules with RDKit and
writes ``results.json``, ``samples.jsonl`` and ``pareto.png`` (validity vs model calls) to
``--output-dir``. Runs offline on a laptop CPU in a few minutes. ``--train`` first trains a quick
pair of its own instead (the 1 M-parameter recipes ``qm9-mdlm-cpu`` / ``qm9-proseco-cpu``, 4500
steps each, about 1.5 h on one core; weaker than the shipped pair).

All three files are written to temporary names and moved into place together at the end, after
every argument was checked, so a failed or interrupted demo leaves earlier results untouched.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["add_arguments", "run", "demo_settings", "headline"]


def demo_settings(steps: list[int], budgets: list[tuple[int, int]]):
    """The demo's table: MDLM, the ProSeCo model without corrector, and ProSeCo budgets."""
    from proseco.eval.study import SamplerSetting
    from proseco.sampling import Corrector, SamplingConfig

    settings = []
    for t in steps:
        mdlm = SamplingConfig(steps=t)
        settings.append(SamplerSetting("MDLM", "mdlm", mdlm))
        settings.append(SamplerSetting("ProSeCo model, MDLM sampling", "proseco", mdlm))
        for s, every in budgets:
            config = SamplingConfig(steps=t, corrector=Corrector(steps=s, every=every))
            settings.append(SamplerSetting(f"ProSeCo S={s} every={every}", "proseco", config))
    return settings


def _budget(text: str) -> tuple[int, int]:
    try:
        s, every = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"corrector budget {text!r} must look like S:EVERY, e.g. 1:1 or 2:2"
        ) from None
    if s < 1 or every < 1:
        raise argparse.ArgumentTypeError(f"corrector budget {text!r}: S and EVERY must be >= 1")
    return s, every


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", default="proseco-demo", help="where results go")
    parser.add_argument(
        "--steps", type=int, nargs="+", default=[2, 4, 8, 16, 32], help="unmasking step counts T"
    )
    parser.add_argument(
        "--corrector",
        type=_budget,
        nargs="+",
        default=[(1, 1), (2, 2)],
        metavar="S:EVERY",
        help="ProSeCo corrector budgets (steps:every)",
    )
    parser.add_argument("--num-samples", type=int, default=256, help="molecules per row")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument(
        "--checkpoints",
        default=None,
        help="directory with mdlm/ and proseco/ model dirs (default: shipped)",
    )
    parser.add_argument(
        "--train",
        action="store_true",
        help="first train a quick pair of 1 M-parameter models (qm9-mdlm-cpu, qm9-proseco-cpu; "
        "about 1.5 h on one core) and use them instead of the shipped 5 M-parameter pair",
    )


def _train(output_dir: Path) -> dict[str, Path]:
    from proseco.training import train

    paths = {}
    for key in ("mdlm", "proseco"):
        run_dir = output_dir / "checkpoints" / key
        print(f"training {key} with recipe qm9-{key}-cpu -> {run_dir}")
        result = train(f"qm9-{key}-cpu", run_dir, resume=True)
        paths[key] = Path(result.final_dir)
    return paths


def _print_table(rows: list[dict[str, Any]]) -> None:
    head = f"{'method':<32}{'T':>4}{'S':>3}{'w':>3}{'NFE':>8}{'valid':>8}{'unique':>8}{'novel':>8}{'sec':>7}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['method']:<32}{r['steps']:>4}{r['corrector_steps']:>3}{r['corrector_every']:>3}"
            f"{r['nfe']:>8.1f}{r['validity']:>8.3f}{r['uniqueness'] or 0:>8.3f}"
            f"{r['novelty'] or 0:>8.3f}{r['seconds']:>7.1f}"
        )


def _label(row: dict[str, Any]) -> str:
    extra = f", S={row['corrector_steps']} every={row['corrector_every']}"
    return f"T={row['steps']}{extra if row['corrector_steps'] else ''}"


def headline(rows: list[dict[str, Any]], num_samples: int) -> list[str]:
    """What the table says, in two sentences: the fewest model calls with which a ProSeCo
    setting reaches MDLM's best validity, and ProSeCo's best validity against MDLM's, with the
    95 % half-width of a difference of two validities at this sample size.

    Args:
        rows: the demo's result rows (``method``, ``steps``, ``corrector_steps``,
            ``corrector_every``, ``nfe``, ``validity``).
        num_samples: molecules per row.
    """
    mdlm = [r for r in rows if r["method"] == "MDLM"]
    proseco = [r for r in rows if r["method"].startswith("ProSeCo S=")]
    if not mdlm or not proseco:
        return []
    best = max(mdlm, key=lambda r: (r["validity"], -r["nfe"]))
    top = max(proseco, key=lambda r: (r["validity"], -r["nfe"]))
    p, q = best["validity"], top["validity"]
    noise = 196 * math.sqrt((p * (1 - p) + q * (1 - q)) / num_samples)
    lines = []
    match = [r for r in proseco if r["validity"] >= p]
    mdlm_text = f"{100 * p:.1f} % valid at {best['nfe']:.1f} NFE ({_label(best)})"
    if match:
        cheap = min(match, key=lambda r: (r["nfe"], -r["validity"]))
        lines.append(
            f"ProSeCo reaches MDLM's best, {mdlm_text}, with {cheap['nfe']:.1f} NFE "
            f"({_label(cheap)}: {100 * cheap['validity']:.1f} %), "
            f"{best['nfe'] / cheap['nfe']:.1f}x fewer model calls."
        )
    else:
        lines.append(f"No ProSeCo setting here reaches MDLM's best, {mdlm_text}.")
    lines.append(
        f"ProSeCo's best: {100 * q:.1f} % at {top['nfe']:.1f} NFE ({_label(top)}), "
        f"{100 * (q - p):+.1f} points against MDLM's best (differences within about "
        f"{noise:.0f} points are sampling noise at {num_samples} molecules per row)."
    )
    return lines


def _trajectory(models, seed: int) -> str:
    """One ProSeCo sample at T=8 with its step-by-step history (corrections in {old>new})."""
    from proseco.eval.study import SamplerSetting, generate
    from proseco.sampling import Corrector, SamplingConfig

    model, tok = models["proseco"]
    config = SamplingConfig(steps=8, corrector=Corrector(steps=2, every=1))
    setting = SamplerSetting("trajectory", "proseco", config)
    for offset in range(16):  # find a run where the corrector changed something
        out = generate(
            model,
            tok,
            setting,
            num_samples=1,
            batch_size=1,
            seed=seed + offset,
            return_history=True,
        )
        history = out["history"]
        if int(history.corrections().sum()) > 0:
            break
    short = {"<pad>": ".", "<bos>": "^", "<eos>": "$"}
    text = history.render(
        lambda ids: short.get(tok.convert_ids_to_tokens(ids[0]), tok.convert_ids_to_tokens(ids[0])),
        mask_text="_",
        only_changes=True,
    )
    return text + f"\nfinal: {out['smiles'][0]}"


def _check(args: argparse.Namespace) -> None:
    """Every argument, before anything is loaded or written."""
    from proseco.errors import ConfigError, OutputError

    for flag, value, low in (("--num-samples", args.num_samples, 1),
                             ("--batch-size", args.batch_size, 1), ("--threads", args.threads, 0),
                             ("--steps", min(args.steps), 1)):  # fmt: skip
        if value < low:
            raise ConfigError(f"{flag} must be >= {low}, got {value}")
    out_dir = Path(args.output_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--output-dir {out_dir} is a file; pass a directory")


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from proseco.data.qm9 import load_qm9
    from proseco.eval.study import evaluate_setting, load_model_dir, plot_pareto
    from proseco.fileio import atomic_open
    from proseco.pretrained import shipped_checkpoints

    _check(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    out_dir = Path(args.output_dir)
    if args.train:
        paths = _train(out_dir)
    elif args.checkpoints:
        paths = {k: Path(args.checkpoints) / k for k in ("mdlm", "proseco")}
    else:
        shipped = shipped_checkpoints()
        paths = {k: shipped[k] for k in ("mdlm", "proseco")}
    models = {key: load_model_dir(path) for key, path in paths.items()}
    print("loading QM9 training set for novelty (cached after the first run) ...")
    train_smiles = set(load_qm9("train").smiles)
    settings = demo_settings(sorted(args.steps), args.corrector)
    rows, records = [], []
    for setting in tqdm(settings, desc="sampling", unit="setting"):
        row, smiles = evaluate_setting(
            models,
            setting,
            train_smiles=train_smiles,
            num_samples=args.num_samples,
            batch_size=args.batch_size,
            seed=args.seed,
        )
        row["checkpoint"] = str(paths[setting.model])
        rows.append(row)
        head = {k: row[k] for k in ("method", "steps", "corrector_steps", "corrector_every")}
        records += [{**head, "seed": args.seed, "text": s} for s in smiles]
    with atomic_open(out_dir / "pareto.png", "wb") as f:
        plot_pareto(rows, f, title=f"QM9, {args.num_samples} samples per point: validity vs NFE")
    with atomic_open(out_dir / "samples.jsonl") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    with atomic_open(out_dir / "results.json") as f:
        f.write(json.dumps(rows, indent=1))
    print()
    _print_table(rows)
    print()
    print("\n".join(headline(rows, args.num_samples)))
    best = max(rows, key=lambda r: (r["validity"], -r["nfe"]))
    examples = [
        r["text"] for r in records if (r["method"], r["steps"]) == (best["method"], best["steps"])
    ]
    print(f"\nexample molecules ({best['method']}, T={best['steps']}):")
    print(" ", " ".join(examples[:6]))
    print(
        "\none ProSeCo trajectory (T=8, S=2): _ mask, [x] newly unmasked, {old>new} corrected, "
        "C = corrector fired; ^ bos, $ eos, . pad"
    )
    print(_trajectory(models, args.seed))
    print(
        f"\nwrote {out_dir}/results.json, samples.jsonl, pareto.png "
        f"in {time.perf_counter() - start:.0f} s"
    )
    return 0
