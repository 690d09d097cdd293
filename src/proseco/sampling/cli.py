"""``proseco sample MODEL_DIR``: generate samples in batches and write them as JSONL.

MODEL_DIR is a ``save_pretrained`` directory, loaded with ``AutoModelForMaskedLM`` (the bundled DiT
registers itself on import) and, when present, its tokenizer. Each output line is one sample::

    {"index": 0, "text": "...", "tokens": [...], "nfe": 64, "denoiser_nfe": 32,
     "corrector_nfe": 32, "num_corrected": 3, "batch": 0, "seed": 0, "settings": {...},
     "command": "proseco sample MODEL_DIR --steps 32 ..."}

``text`` is written only when a tokenizer is found. ``settings`` holds every option and ``command``
the exact command line, so a file can be reproduced from itself: samples are drawn batch after batch
from one ``torch.Generator`` seeded with ``--seed`` (same device type, same tokens).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

__all__ = ["add_arguments", "run", "build_sample_kwargs"]

_SKIP = {"command", "model_dir", "_run", "output", "no_progress"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``proseco sample``; every ``--flag-name`` maps to the setting ``flag_name``."""
    parser.add_argument("model_dir", type=Path, help="a save_pretrained model directory")
    parser.add_argument("--output", "-o", type=Path, default=Path("samples.jsonl"))
    parser.add_argument("--num-samples", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--length", type=int, default=None, help="tokens to generate (default: "
                        "the model's maximum length minus the prompt)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=None, help="unmasking steps (default: length)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mask-id", type=int, default=None)
    g = parser.add_argument_group("ProSeCo corrector")
    g.add_argument("--corrector-steps", type=int, default=0, help="S (0 = plain MDLM)")
    g.add_argument("--corrector-every", type=int, default=1, help="omega: fire every W steps")
    g.add_argument("--corrector-start", type=int, default=0)
    g.add_argument("--corrector-update", choices=["argmax", "sample", "top_k"], default="argmax")
    g.add_argument("--corrector-top-k", type=int, default=0)
    g = parser.add_argument_group("unmasking and logits")
    g.add_argument("--unmasking", choices=["ancestral", "confidence", "threshold"],
                   default="ancestral")  # fmt: skip
    g.add_argument("--threshold", type=float, default=0.9, help="for --unmasking threshold")
    g.add_argument("--block-length", type=int, default=None)
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--float64", action="store_true")
    g.add_argument("--schedule", default="loglinear")
    g.add_argument("--eps", type=float, default=1e-5)
    g = parser.add_argument_group("prompts and stopping")
    g.add_argument("--prompt", action="append", default=None, help="text prompt (repeatable)")
    g.add_argument("--prompt-ids", action="append", default=None, help="comma-separated ids")
    g.add_argument("--eos-id", type=int, default=None)
    g.add_argument("--stop-at-eos", action="store_true")
    g.add_argument("--keep-special-tokens", action="store_true", help="keep them in 'text'")
    g = parser.add_argument_group("guidance and conditioning")
    g.add_argument("--condition", type=int, default=None, help="class label")
    g.add_argument("--guidance-gamma", type=float, default=None, help="CFG strength")
    g.add_argument("--null-label", type=int, default=None)
    g.add_argument("--guidance-conditional-corrector", action="store_true",
                   help="research-code behaviour: corrector calls use the conditional model only")  # fmt: skip
    g = parser.add_argument_group("ReMDM baseline")
    g.add_argument("--remdm", choices=["cap", "rescale", "conf", "loop"], default=None)
    g.add_argument("--eta", type=float, default=0.02)
    g.add_argument("--t-on", type=float, default=0.55)
    g.add_argument("--t-off", type=float, default=0.05)
    g.add_argument("--alpha-on", type=float, default=0.9)
    g = parser.add_argument_group("runtime")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ...")
    g.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    g.add_argument("--trust-remote-code", action="store_true")
    g.add_argument("--no-progress", action="store_true")


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in sorted(vars(args).items())
        if k not in _SKIP and not k.startswith("_")
    }


def _command(args: argparse.Namespace) -> str:
    parts = ["proseco", "sample", str(args.model_dir)]
    for key, value in _settings(args).items():
        flag = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            parts.append(flag)
        elif isinstance(value, list):
            for item in value:
                parts += [flag, str(item)]
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


def _load(args: argparse.Namespace, device: torch.device) -> tuple[Any, Any]:
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    import proseco.data.smiles  # noqa: F401  (registers SmilesTokenizer with AutoTokenizer)
    import proseco.models.dit  # noqa: F401  (registers the DiT with the Auto classes)

    if not args.model_dir.is_dir():
        raise ValueError(f"model directory {args.model_dir} does not exist")
    dtype = getattr(torch, args.dtype)
    model = AutoModelForMaskedLM.from_pretrained(
        str(args.model_dir), dtype=dtype, trust_remote_code=args.trust_remote_code
    )
    model.to(device).eval()
    tokenizer = None
    if any((args.model_dir / f).exists() for f in ("tokenizer_config.json", "tokenizer.json")):
        tokenizer = AutoTokenizer.from_pretrained(
            str(args.model_dir), trust_remote_code=args.trust_remote_code
        )
    return model, tokenizer


def _prompts(args: argparse.Namespace, tokenizer: Any) -> list[list[int]] | None:
    prompts = [[int(i) for i in p.split(",") if i.strip()] for p in args.prompt_ids or []]
    if args.prompt:
        if tokenizer is None:
            raise ValueError("--prompt needs a tokenizer in MODEL_DIR; use --prompt-ids instead")
        prompts += [tokenizer(p, add_special_tokens=False)["input_ids"] for p in args.prompt]
    return prompts or None


def _mask_id(args: argparse.Namespace, model: Any, tokenizer: Any) -> int:
    for value in (
        args.mask_id,
        getattr(model.config, "mask_token_id", None),
        getattr(tokenizer, "mask_token_id", None),
    ):
        if value is not None:
            return int(value)
    raise ValueError("no mask id: pass --mask-id, or set config.mask_token_id / a tokenizer mask")


def build_sample_kwargs(
    args: argparse.Namespace, model: Any, mask_id: int, prompt_length: int
) -> dict[str, Any]:
    """Keyword arguments of :func:`proseco.sample` (except batch, prompt and generator)."""
    from proseco.models.protocol import model_max_length
    from proseco.sampling import Corrector, Guidance, ReMDM, Threshold

    length = args.length
    if length is None:
        max_length = model_max_length(model) or getattr(model.config, "max_length", None)
        if max_length is None:
            raise ValueError("the model declares no maximum length: pass --length")
        length = max_length - prompt_length
    kwargs: dict[str, Any] = dict(
        mask_id=mask_id,
        length=length,
        steps=args.steps if args.steps is not None else length,
        corrector=Corrector(
            steps=args.corrector_steps,
            every=args.corrector_every,
            start=args.corrector_start,
            update=args.corrector_update,
            top_k=args.corrector_top_k,
        ),
        block_length=args.block_length,
        unmasking=Threshold(args.threshold) if args.unmasking == "threshold" else args.unmasking,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        float64=args.float64,
        schedule=args.schedule,
        eps=args.eps,
        eos_id=args.eos_id,
        stop_at_eos=args.stop_at_eos,
    )
    if args.guidance_gamma is not None:
        if args.condition is None:
            raise ValueError("--guidance-gamma needs --condition (the class label to guide toward)")
        kwargs["guidance"] = Guidance(
            gamma=args.guidance_gamma,
            condition=args.condition,
            null_label=args.null_label,
            in_corrector=not args.guidance_conditional_corrector,
        )
    elif args.condition is not None:
        kwargs["conditioning"] = {"class_labels": args.condition}
    if args.remdm is not None:
        kwargs["remasking"] = ReMDM(args.remdm, args.eta, args.t_on, args.t_off, args.alpha_on)
    return kwargs


def _decode(tokenizer: Any, ids: list[int], keep_special: bool) -> str:
    return tokenizer.decode(ids, skip_special_tokens=not keep_special)


def run(args: argparse.Namespace) -> int:
    """Generate ``--num-samples`` samples in batches and write them to ``--output``."""
    from proseco.sampling import sample

    for name in ("num_samples", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    model, tokenizer = _load(args, device)
    mask_id = _mask_id(args, model, tokenizer)
    prompts = _prompts(args, tokenizer)
    longest = max((len(p) for p in prompts), default=0) if prompts else 0
    kwargs = build_sample_kwargs(args, model, mask_id, longest)
    pad_id = getattr(tokenizer, "pad_token_id", None)
    torch.manual_seed(args.seed)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    settings, command = _settings(args), _command(args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    written, total_nfe, started = 0, 0, time.perf_counter()
    bar = tqdm(total=args.num_samples, unit="sample", disable=args.no_progress, desc="sampling")
    with args.output.open("w", encoding="utf-8") as f:
        for batch_index in range(0, (args.num_samples + args.batch_size - 1) // args.batch_size):
            batch = min(args.batch_size, args.num_samples - written)
            batch_prompts = None
            if prompts:
                batch_prompts = [prompts[(written + i) % len(prompts)] for i in range(batch)]
            out = sample(
                model, batch_size=batch, prompt=batch_prompts, pad_id=pad_id,
                generator=generator, **kwargs,
            )  # fmt: skip
            for i, row in enumerate(out.generated.tolist()):
                record: dict[str, Any] = {"index": written + i}
                if tokenizer is not None:
                    record["text"] = _decode(tokenizer, row, args.keep_special_tokens)
                record["tokens"] = row
                if batch_prompts is not None:
                    record["prompt_tokens"] = batch_prompts[i]
                record.update(
                    nfe=out.nfe, denoiser_nfe=out.denoiser_nfe, corrector_nfe=out.corrector_nfe,
                    num_corrected=int(out.num_corrected[i]), batch=batch_index, seed=args.seed,
                    settings=settings, command=command,
                )  # fmt: skip
                f.write(json.dumps(record) + "\n")
            written += batch
            total_nfe += out.nfe
            bar.update(batch)
    bar.close()
    elapsed = time.perf_counter() - started
    print(
        f"wrote {written} samples to {args.output} in {elapsed:.1f}s "
        f"({total_nfe} model evaluations)",
        file=sys.stderr,
    )
    return 0
