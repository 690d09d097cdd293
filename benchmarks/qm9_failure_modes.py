"""Why are a QM9 model's molecules invalid? Validity and the failure causes of one model (issue 25).

Samples ``--num-samples`` molecules (seed, batch size and first-``<eos>`` rule as in
``qm9_training_curve.py``, so the validity is the same figure) from a model directory and sorts
the invalid ones by :func:`proseco.chem.invalid_reason`: unmatched ring-closure labels,
unbalanced parentheses, valence, aromaticity, empty strings. Usage::

    python benchmarks/qm9_failure_modes.py MODEL_DIR [--steps 32] [--weights ema|raw]
        [--num-samples 1000] [--batch-size 500] [--seed 0] [--threads N] [--examples 3]
        [--json OUT.json]

``MODEL_DIR`` is an exported model (a run's ``final/``, a shipped asset) or a training
checkpoint (``checkpoints/step-N``), whose EMA weights are used unless ``--weights raw``.
The sampler is plain MDLM ancestral decoding with ``--steps`` steps (``--steps 1000`` decodes
about one token at a time in random order, which separates the model's errors from those of
decoding many tokens at once).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qm9_training_curve import load_with_ema  # noqa: E402


def tally(smiles: list[str], examples: int = 3) -> dict:
    """``{"num_samples", "num_valid", "validity", "reasons": {reason: count},
    "examples": {reason: [smiles, ...]}}`` with reasons in :data:`INVALID_REASONS` order."""
    from proseco.chem import INVALID_REASONS, invalid_reason

    counts: collections.Counter = collections.Counter()
    shown: dict[str, list[str]] = collections.defaultdict(list)
    for s in smiles:
        reason = invalid_reason(s)
        if reason is None:
            continue
        counts[reason] += 1
        if len(shown[reason]) < examples:
            shown[reason].append(s)
    valid = len(smiles) - sum(counts.values())
    return {
        "num_samples": len(smiles),
        "num_valid": valid,
        "validity": valid / len(smiles) if smiles else None,
        "reasons": {r: counts[r] for r in INVALID_REASONS if counts[r]},
        "examples": {r: shown[r] for r in INVALID_REASONS if shown[r]},
    }


def load(path: Path, weights: str):
    """``(model, tokenizer, weights_used)`` of an exported model or a training checkpoint."""
    from proseco.pretrained import load_tokenizer
    from proseco.training.build import build_tokenizer

    exported = not (path / "trainer_state.json").is_file()
    if exported:
        if weights == "raw":
            raise ValueError(
                f"{path} is an exported model (its weights are already the EMA ones); "
                "--weights raw needs a training checkpoint (checkpoints/step-N)"
            )
        model, used = load_with_ema(path, "final")[0], "as exported"
    elif weights == "raw":
        from proseco.models.dit import ProsecoDiT

        model, used = ProsecoDiT.from_pretrained(str(path)).eval(), "raw"
    else:
        model, used = load_with_ema(path, "checkpoint")
    tokenizer = load_tokenizer(path) if exported else None
    if tokenizer is None:
        tokenizer = build_tokenizer("smiles")
    return model, tokenizer, used


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="an exported model or a checkpoints/step-N folder")
    p.add_argument("--steps", type=int, default=32, help="sampling steps T (default 32)")
    p.add_argument("--weights", choices=("ema", "raw"), default="ema")
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--examples", type=int, default=3, help="invalid molecules shown per cause")
    p.add_argument("--json", type=Path, default=None, help="also write the tally here")
    args = p.parse_args(argv)
    for name in ("steps", "num_samples", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if not (args.model / "config.json").is_file():
        p.exit(2, f"error: {args.model} has no config.json: pass a model or checkpoint folder\n")
    if args.json is not None and not args.json.parent.is_dir():
        p.exit(2, f"error: --json: folder {args.json.parent} does not exist\n")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from proseco.eval.study import SamplerSetting, generate
    from proseco.sampling import SamplingConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    try:
        model, tokenizer, used = load(args.model, args.weights)
    except (OSError, ValueError, RuntimeError) as e:  # ModelLoadError is an OSError
        print(f"error: {e}", file=sys.stderr)
        return 2
    length = int(getattr(model.config, "max_length", 32))
    result = generate(
        model,
        tokenizer,
        SamplerSetting("MDLM", "model", SamplingConfig(steps=args.steps)),
        num_samples=args.num_samples,
        batch_size=args.batch_size,
        seed=args.seed,
        length=length,
        eos_rule="first",
    )
    out = tally(result["smiles"], args.examples)
    out["settings"] = {
        "model": str(args.model),
        "weights": used,
        "steps": args.steps,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "eos_rule": "first",
        "denoiser_nfe": result["denoiser_nfe"],
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(
        f"{args.model} ({used} weights), MDLM T={args.steps}, {args.num_samples} samples, "
        f"seed {args.seed}: validity {100 * out['validity']:.1f} %"
    )
    for reason, count in out["reasons"].items():
        shown = ", ".join(s or "''" for s in out["examples"][reason])
        print(f"  {reason:<24} {count:>5}  e.g. {shown}")
    if args.json is not None:
        tmp = args.json.with_name(f".{args.json.name}.{os.getpid()}.tmp")  # two at once: no clash
        tmp.write_text(json.dumps(out, indent=1))
        tmp.replace(args.json)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
