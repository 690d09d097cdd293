"""Does a stored copy of a QM9 model sample the same molecules as the original? (issue 25)

Samples the same number of molecules, with the same seed and decoding settings, from a reference
model directory (e.g. a run's float32 ``final/``) and a candidate (e.g. its float16 copy in
``src/proseco/assets/qm9/``), and compares their validity. Because both draw the same random
numbers, the samples are paired: the difference in validity gets a paired bootstrap interval,
an exact McNemar test on the pairs where only one copy is valid, and the share of identical
molecules shows how often the rounding changed a sample at all. Usage::

    python benchmarks/qm9_precision_check.py REFERENCE_DIR CANDIDATE_DIR [--steps 32]
        [--num-samples 1000] [--batch-size 500] [--seed 0] [--threads N] [--json OUT.json]

Both are decoded with the candidate's ``sampling_config.json`` (a shipped MDLM: T=32; a shipped
ProSeCo: T=8 with one corrector call per step), its number of steps replaced by ``--steps`` if
given; molecules end at their first ``<eos>``.
The verdict is "same within noise" unless McNemar's exact two-sided p-value is below 0.05 (a
bootstrap interval alone would call four flips out of 1000, all one way, a difference).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import torch


def paired_difference(
    reference: torch.Tensor, candidate: torch.Tensor, draws: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of ``candidate - reference`` with a paired percentile-bootstrap 95 % interval.

    Args:
        reference, candidate: ``(n,)`` 0/1 outcomes of the same ``n`` paired draws.

    Returns:
        ``(difference, low, high)`` as fractions.
    """
    if reference.shape != candidate.shape or reference.ndim != 1 or len(reference) == 0:
        raise ValueError("reference and candidate must be equal-length non-empty 1-D tensors")
    diff = candidate.double() - reference.double()
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(len(diff), (draws, len(diff)), generator=generator)
    means = diff[index].mean(dim=1)
    low, high = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64))
    return float(diff.mean()), float(low), float(high)


def mcnemar_exact(reference: torch.Tensor, candidate: torch.Tensor) -> tuple[int, int, float]:
    """Exact two-sided McNemar test of paired 0/1 outcomes ``(n,)``.

    Returns:
        ``(lost, gained, p)``: pairs valid only in the reference, only in the candidate, and the
        two-sided binomial p-value of ``min(lost, gained)`` out of ``lost + gained`` at 1/2.
    """
    ref, cand = reference.bool(), candidate.bool()
    lost, gained = int((ref & ~cand).sum()), int((~ref & cand).sum())
    n, k = lost + gained, min(lost, gained)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n if n else 1.0
    return lost, gained, min(1.0, 2 * tail)


def load(path: Path):
    """``(model, tokenizer, sampling_config, stored_dtype)`` of the model directory ``path``."""
    from proseco.pretrained import load_pretrained

    model, tokenizer, sampling = load_pretrained(path)
    try:  # a hub name or package: path has no local config.json to read
        config = json.loads((path / "config.json").read_text())
        stored = config.get("dtype") or config.get("torch_dtype") or "float32"
    except (OSError, ValueError):
        stored = "unknown"
    return model, tokenizer, sampling, stored


def sample_validity(
    model, tokenizer, sampling, steps: int | None, num_samples: int, seed: int, batch_size: int
):
    """``(smiles, valid, sampling_config)``: ``num_samples`` molecules, ``valid`` ``(n,)`` bool."""
    from proseco.chem import canonicalize
    from proseco.eval.study import SamplerSetting, generate

    length = int(getattr(model.config, "max_length", 32))
    sampling = dataclasses.replace(sampling, steps=steps or sampling.steps or length)
    result = generate(
        model,
        tokenizer,
        SamplerSetting("check", "check", sampling),
        num_samples=num_samples,
        batch_size=batch_size,
        seed=seed,
        length=length,
        eos_rule="first",
    )
    valid = torch.tensor([canonicalize(s) is not None for s in result["smiles"]], dtype=torch.bool)
    return result["smiles"], valid, sampling


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reference", type=Path, help="model directory sampled as the reference")
    parser.add_argument("candidate", type=Path, help="model directory compared with it")
    parser.add_argument(
        "--steps", type=int, default=None, help="unmasking steps (default: the candidate's)"
    )
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    for name in ("num_samples", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    from proseco.errors import ProsecoError

    args = parse_args(argv)
    if args.json and not args.json.parent.is_dir():
        print(
            f"error: --json {args.json}: its folder does not exist; create it first",
            file=sys.stderr,
        )
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    try:  # both load before either samples, so a bad path fails at once
        loaded = {role: load(getattr(args, role)) for role in ("reference", "candidate")}
    except ProsecoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sampling = loaded["candidate"][2]  # one decoding setting for both
    ref_smiles, ref_valid, _ = sample_validity(
        *loaded["reference"][:2], sampling, args.steps, args.num_samples, args.seed, args.batch_size
    )
    cand_smiles, cand_valid, sampling = sample_validity(
        *loaded["candidate"][:2], sampling, args.steps, args.num_samples, args.seed, args.batch_size
    )
    ref_dtype, cand_dtype = loaded["reference"][3], loaded["candidate"][3]
    diff, low, high = paired_difference(ref_valid, cand_valid, seed=args.seed)
    identical = sum(a == b for a, b in zip(ref_smiles, cand_smiles)) / len(ref_smiles)
    lost, gained, p_value = mcnemar_exact(ref_valid, cand_valid)
    same = p_value >= 0.05
    summary = {
        "reference": {
            "path": args.reference.name,
            "stored_dtype": ref_dtype,
            "validity": float(ref_valid.double().mean()),
        },
        "candidate": {
            "path": args.candidate.name,
            "stored_dtype": cand_dtype,
            "validity": float(cand_valid.double().mean()),
        },
        "steps": sampling.steps,
        "corrector": None if sampling.corrector is None else sampling.corrector.steps,
        "num_samples": args.num_samples,
        "seed": args.seed,
        "eos_rule": "first",
        "difference": diff,
        "difference_interval": [low, high],
        "valid_only_in_reference": lost,
        "valid_only_in_candidate": gained,
        "mcnemar_p": p_value,
        "identical_share": identical,
        "verdict": "same within noise" if same else "differs",
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(
        f"T={sampling.steps}, {args.num_samples} samples, seed {args.seed}, first <eos>\n"
        f"  reference ({ref_dtype}): validity {100 * summary['reference']['validity']:.1f} %\n"
        f"  candidate ({cand_dtype}): validity {100 * summary['candidate']['validity']:.1f} %\n"
        f"  paired difference {100 * diff:+.1f} points [{100 * low:+.1f}, {100 * high:+.1f}];"
        f" identical molecules {100 * identical:.1f} %\n"
        f"  valid only in the reference {lost}, only in the candidate {gained}:"
        f" McNemar exact p = {p_value:.3g}\n"
        f"  verdict: {summary['verdict']}"
    )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
