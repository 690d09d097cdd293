"""``proseco eval TASK ...``: score generated samples.

Tasks: ``molecules`` (validity, uniqueness, novelty, QED, rings; see :mod:`proseco.eval.molecules`)::

    proseco eval molecules samples.jsonl --train-set qm9 --output metrics.json

The samples file holds one JSON object per line with a ``"smiles"`` or ``"text"`` field (the
format ``proseco sample`` writes). Heavy imports (RDKit, QM9) happen only when a task runs.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

from proseco.errors import ConfigError, DataError
from proseco.fileio import atomic_open

TRAIN_SETS = ("qm9", "qm9-train", "none")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``eval`` tasks to ``parser``."""
    parser.set_defaults(_eval_parser=parser)
    tasks = parser.add_subparsers(dest="eval_task", metavar="TASK")
    p = tasks.add_parser(
        "molecules",
        help="validity, uniqueness, novelty, QED and ring counts of generated SMILES",
        description="Score generated SMILES (RDKit-canonical comparisons throughout).",
    )
    p.add_argument(
        "samples", type=Path, help="JSONL file, one object per line with 'smiles' or 'text'"
    )
    p.add_argument(
        "--train-set",
        choices=TRAIN_SETS,
        default="qm9",
        help="molecules that are not novel: all of QM9 (as the research code), its train split, or none",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=None,
        help="metrics JSON (default: SAMPLES with suffix .metrics.json)",
    )
    p.add_argument(
        "--properties", default="qed,ring_count", help="comma-separated: qed, ring_count"
    )
    p.add_argument(
        "--fcd",
        type=int,
        default=0,
        metavar="N",
        help="FCD against N random QM9 train molecules (needs fcd-torch; 0 = skip)",
    )
    p.add_argument(
        "--num-workers", type=int, default=None, help="processes for RDKit (default: all cores)"
    )
    p.add_argument(
        "--cache-dir", type=Path, default=None, help="QM9 cache (default ~/.cache/proseco/qm9)"
    )
    p.set_defaults(_eval_run=run_molecules)


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen task; print the task list when none is given."""
    task = getattr(args, "_eval_run", None)
    if task is None:
        args._eval_parser.print_help()
        return 2
    return task(args)


def read_samples(path: Path) -> list[str]:
    """The ``smiles`` (else ``text``) field of each non-blank line of a JSONL file."""
    if not path.is_file():
        raise DataError(f"samples file {path} does not exist; write one with `proseco sample`")
    out = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{path}:{lineno} is not valid JSON ({e.msg}); expected one object per line"
                ) from e
            if not isinstance(record, dict) or not isinstance(
                record.get("smiles", record.get("text")), str
            ):
                raise DataError(
                    f"{path}:{lineno} has no string field 'smiles' or 'text'; got {line.strip()[:80]!r}"
                )
            out.append(record.get("smiles", record.get("text")))
    if not out:
        raise DataError(f"samples file {path} holds no samples; nothing to evaluate")
    return out


def run_molecules(args: argparse.Namespace) -> int:
    """``proseco eval molecules``: compute, print and write molecule metrics."""
    from proseco.chem import MOLECULE_PROPERTIES
    from proseco.eval.molecules import molecule_metrics

    properties = [p.strip() for p in args.properties.split(",") if p.strip()]
    unknown = [p for p in properties if p not in MOLECULE_PROPERTIES]
    if unknown:
        raise ConfigError(f"unknown --properties {unknown}; choose from {MOLECULE_PROPERTIES}")
    if args.fcd and args.train_set == "none":
        raise ConfigError("--fcd draws its reference from QM9; use --train-set qm9 or qm9-train")
    smiles = read_samples(args.samples)

    train, reference = None, None
    if args.train_set != "none":
        from proseco.data.qm9 import load_qm9

        data = load_qm9("all" if args.train_set == "qm9" else "train", cache_dir=args.cache_dir)
        train = set(data.smiles)
        if args.fcd:
            pool = load_qm9("train", cache_dir=args.cache_dir).smiles
            reference = random.Random(0).sample(pool, min(args.fcd, len(pool)))
    metrics = molecule_metrics(
        smiles,
        train,
        properties,
        canonicalize_train=False,
        fcd_reference=reference,
        num_workers=args.num_workers,
    )
    output = args.output or args.samples.with_suffix(".metrics.json")
    report = {"samples": str(args.samples), "train_set": args.train_set, "metrics": metrics}
    with atomic_open(output) as f:
        f.write(json.dumps(report, indent=2) + "\n")
    print(format_table(metrics))
    print(f"wrote {output}", file=sys.stderr)
    return 0


def format_table(metrics: dict[str, Any]) -> str:
    """Two aligned columns, metric and value (floats to 4 decimals, undefined as ``-``)."""
    width = max(len(k) for k in metrics)
    lines = []
    for key, value in metrics.items():
        text = "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)
        lines.append(f"{key:<{width}}  {text}")
    return "\n".join(lines)
