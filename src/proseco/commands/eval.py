"""``proseco eval TASK ...``: score generated samples.

Tasks: ``molecules`` (validity, uniqueness, novelty, QED, rings; see :mod:`proseco.eval.molecules`),
``text`` (generative perplexity, unigram entropy, MAUVE; see :mod:`proseco.eval.text`) and
``nelbo`` (a diffusion model's validation NELBO / perplexity bound on held-out text)::

    proseco eval molecules samples.jsonl --train-set qm9 --output metrics.json
    proseco eval text samples.jsonl --reference heldout.jsonl --evaluator smollm2-135m
    proseco eval nelbo runs/text/final --data heldout.jsonl --length 128

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

from proseco.commands.eval_code import add_humaneval_arguments, add_lm_eval_arguments
from proseco.errors import ConfigError, DataError
from proseco.fileio import atomic_open, read_jsonl_objects

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
    add_text_arguments(tasks)
    add_nelbo_arguments(tasks)
    add_humaneval_arguments(tasks)
    add_lm_eval_arguments(tasks)


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen task; print the task list when none is given."""
    task = getattr(args, "_eval_run", None)
    if task is None:
        args._eval_parser.print_help()
        return 2
    return task(args)


def read_samples(path: Path) -> list[str]:
    """The ``smiles`` (else ``text``) field of each non-blank line of a JSONL file."""
    out = []
    for lineno, record in read_jsonl_objects(path):
        value = record.get("smiles", record.get("text"))
        if not isinstance(value, str):
            raise DataError(
                f"{path}:{lineno} has no string field 'smiles' or 'text'; "
                f"got {json.dumps(record)[:80]!r}"
            )
        out.append(value)
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


# --- text ------------------------------------------------------------------------------------


def add_text_arguments(tasks: Any) -> None:
    """The ``eval text`` task."""
    p = tasks.add_parser(
        "text",
        help="generative perplexity, unigram entropy and MAUVE of generated text",
        description="Score text samples: gen-PPL under an evaluator LM (re-tokenized), mean "
        "per-sample unigram entropy of the model's own tokens, MAUVE against --reference. "
        "Every metric sees a sample cut at its first EOS.",
    )
    p.add_argument("samples", type=Path, help="JSONL of `proseco sample` ('text', 'tokens')")
    p.add_argument("--reference", default=None, metavar="FILE",
                   help="held-out texts for MAUVE and the data row (.jsonl/.txt/... or corpus:kjv)")  # fmt: skip
    p.add_argument("--reference-field", default="text", help="field of --reference records")
    p.add_argument("--max-reference", type=int, default=None, metavar="N",
                   help="use the first N reference texts (default: as many as samples)")  # fmt: skip
    p.add_argument("--evaluator", default="smollm2-135m",
                   help="smollm2-135m (offline, default), a model directory or a hub causal LM "
                   "such as gpt2-large")  # fmt: skip
    p.add_argument("--no-mauve", action="store_true", help="skip MAUVE")
    p.add_argument("--output", type=Path, default=None,
                   help="metrics JSON (default: SAMPLES with suffix .text-metrics.json)")  # fmt: skip
    p.add_argument("--tokenizer", default=None, metavar="MODEL_DIR",
                   help="re-decode 'tokens' with this model's tokenizer after the EOS cut, "
                   "instead of using the 'text' field")  # fmt: skip
    p.add_argument("--eos-id", type=int, default=None,
                   help="EOS of the samples' layout (default: the samples' sampling_config)")  # fmt: skip
    p.add_argument("--bos-id", type=int, default=None,
                   help="a leading BOS to skip before looking for EOS (needed when BOS == EOS)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=None, help="evaluator tokens per sample")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the evaluator")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0, help="MAUVE's k-means seed")
    p.set_defaults(_eval_run=run_text)


def read_sample_records(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a samples file, one per non-blank line."""
    return [record for _, record in read_jsonl_objects(path)]


def _layout_eos(records: list[dict[str, Any]], given: int | None) -> int | None:
    if given is not None:
        return given
    config = records[0].get("sampling_config") or {}
    value = config.get("eos_id") if isinstance(config, dict) else None
    return int(value) if isinstance(value, int) else None


def _column(records: list[dict[str, Any]], field: str, path: Path) -> list[Any] | None:
    present = [field in r for r in records]
    if not any(present):
        return None
    if not all(present):
        raise DataError(f"{path}: some records have {field!r} and some do not")
    return [r[field] for r in records]


def _is_token_list(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in value
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_FIELD_TYPES = {
    "text": (lambda v: isinstance(v, str), "a string"),
    "tokens": (_is_token_list, "a list of integer token ids"),
    "nfe": (_is_number, "a number"),
}


def _check_fields(numbered: list[tuple[int, dict[str, Any]]], path: Path) -> None:
    """A :class:`DataError` naming the line of the first ``text`` / ``tokens`` / ``nfe`` value
    of the wrong type (``{"text": 5}``, ``{"text": null}``)."""
    for lineno, record in numbered:
        for field, (check, expected) in _FIELD_TYPES.items():
            if field in record and not check(record[field]):
                got = json.dumps(record[field])
                got = got if len(got) <= 40 else got[:37] + "..."
                raise DataError(f"{path}:{lineno}: {field!r} must be {expected}, got {got}")


def _reference_texts(args: argparse.Namespace, count: int) -> list[str] | None:
    if args.reference is None:
        return None
    from proseco.data.text import read_records, record_field

    try:
        records = read_records(args.reference)
        texts = record_field(records, args.reference_field)
    except (OSError, ValueError) as e:
        raise DataError(f"--reference {args.reference}: {e}") from None
    texts = [t for t in texts if t.strip()]
    return texts[: args.max_reference or count]


def run_text(args: argparse.Namespace) -> int:
    """``proseco eval text``: compute, print and write text metrics."""
    from proseco.eval.text import load_evaluator, text_metrics

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    numbered = read_jsonl_objects(args.samples)
    _check_fields(numbered, args.samples)  # before the evaluator is loaded
    records = [record for _, record in numbered]
    tokens = _column(records, "tokens", args.samples)
    texts = _column(records, "text", args.samples)
    tokenizer = None
    if args.tokenizer is not None:
        from proseco.pretrained import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer)
        if tokenizer is None or tokens is None:
            raise ConfigError("--tokenizer needs a model directory with a tokenizer and samples "
                              "with 'tokens'")  # fmt: skip
        texts = None
    elif texts is None:
        raise DataError(f"{args.samples} has no 'text' field; pass --tokenizer MODEL_DIR to "
                        "decode its 'tokens'")  # fmt: skip
    eos_id = _layout_eos(records, args.eos_id)
    reference = _reference_texts(args, len(records))
    evaluator = load_evaluator(args.evaluator, device=args.device)
    metrics = text_metrics(
        texts, evaluator, token_ids=tokens, tokenizer=tokenizer, eos_id=eos_id,
        bos_id=args.bos_id, reference=reference, mauve=not args.no_mauve,
        batch_size=args.batch_size, max_length=args.max_length, bf16=args.bf16, seed=args.seed,
    )  # fmt: skip
    nfe = _column(records, "nfe", args.samples)
    if nfe is not None:
        metrics["mean_nfe"] = sum(nfe) / len(nfe)
    output = args.output or args.samples.with_suffix(".text-metrics.json")
    report = {
        "samples": str(args.samples), "evaluator": args.evaluator, "reference": args.reference,
        "num_reference": len(reference) if reference else 0, "eos_id": eos_id,
        "bos_id": args.bos_id, "metrics": metrics,
    }  # fmt: skip
    with atomic_open(output) as f:
        f.write(json.dumps(report, indent=2) + "\n")
    print(format_table(metrics))
    print(f"wrote {output}", file=sys.stderr)
    return 0


# --- nelbo -----------------------------------------------------------------------------------


def add_nelbo_arguments(tasks: Any) -> None:
    """The ``eval nelbo`` task."""
    p = tasks.add_parser(
        "nelbo",
        help="validation NELBO and perplexity bound of a diffusion model on held-out text",
        description="Tokenize held-out documents with the model's tokenizer (wrapped or padded "
        "layout) and report the MDLM NELBO per token and exp(NELBO).",
    )
    p.add_argument("model_dir", help="a save_pretrained model directory with a tokenizer")
    p.add_argument("--data", required=True, help="held-out documents (.jsonl/.txt/..., corpus:kjv)")
    p.add_argument("--field", default="text", help="field of --data records")
    p.add_argument("--length", type=int, default=None,
                   help="sequence length L (default: the model's max length)")  # fmt: skip
    p.add_argument("--layout", choices=["wrapped", "padded"], default="wrapped")
    p.add_argument("--max-records", type=int, default=None)
    p.add_argument("--num-draws", type=int, default=1, help="noise draws per sequence")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--output", type=Path, default=None, help="also write the result as JSON")
    p.set_defaults(_eval_run=run_nelbo)


def run_nelbo(args: argparse.Namespace) -> int:
    """``proseco eval nelbo``: validation NELBO of a model directory."""
    from proseco.data.text import encode_pretraining, read_records, record_field
    from proseco.eval.text import validation_nelbo
    from proseco.models.protocol import model_max_length
    from proseco.pretrained import load_pretrained
    from proseco.special_tokens import resolve_special_ids

    model, tokenizer, _ = load_pretrained(args.model_dir, device=args.device)
    if tokenizer is None:
        raise ConfigError(f"{args.model_dir} has no tokenizer; eval nelbo needs one")
    if getattr(model.config, "causal", False):
        raise ConfigError(
            f"{args.model_dir} is a causal (AR) model: a diffusion NELBO means nothing for it; its "
            "exact validation NLL is the `nll` that `proseco train` logs in metrics.jsonl"
        )
    mask_id = resolve_special_ids(model, tokenizer).mask
    if mask_id is None:
        raise ConfigError(f"{args.model_dir}: neither the model nor the tokenizer has a mask id")
    length = args.length or model_max_length(model) or getattr(model.config, "max_length", None)
    if not length:
        raise ConfigError("pass --length: the model does not declare its maximum length")
    try:
        records = read_records(args.data, max_records=args.max_records)
        batch = encode_pretraining(
            record_field(records, args.field), tokenizer, max_length=length, layout=args.layout,
            overlong="truncate" if args.layout == "padded" else "error",
        )  # fmt: skip
    except (OSError, ValueError) as e:
        raise DataError(f"--data {args.data}: {e}") from None
    result = validation_nelbo(
        model, batch["input_ids"], mask_id=int(mask_id), loss_mask=batch["loss_mask"],
        attention_mask=batch.get("attention_mask"), batch_size=args.batch_size,
        num_draws=args.num_draws, seed=args.seed,
    )  # fmt: skip
    result = {"sequences": int(batch["input_ids"].shape[0]), "length": int(length), **result}
    if args.output is not None:
        report = {"model": str(args.model_dir), "data": args.data, "layout": args.layout, **result}
        with atomic_open(args.output) as f:
            f.write(json.dumps(report, indent=2) + "\n")
    print(format_table(result))
    return 0
