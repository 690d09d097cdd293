"""``proseco sample MODEL_DIR``: generate samples in batches and write them as JSONL.

MODEL_DIR is loaded with :func:`proseco.load_pretrained` (model, tokenizer and, when the directory
has one, its ``sampling_config.json``). Decoding settings start from that saved config (or
``--config FILE``) and every flag given on the command line overrides one field of it; flags left
out keep the saved value. ``--preset fast|balanced|max`` (:mod:`proseco.sampling.presets`) sits in
between: saved config (or ``--config``) < preset < explicit flags. A preset sets only the decoding
regime (steps, unmasking, corrector, temperature, block length, sized for ``--length`` tokens) and
keeps the model's own fields (EOS, padding, guidance, schedule). Choices (unmasking strategies, corrector updates, schedules) come from
the library's registries, and settings of a strategy are written as ``name:key=value,...``.
A causal model (``config.causal``, trained with ``loss.objective: ar``) is sampled left to right
by :func:`proseco.sample_autoregressive` with the same temperature / top-k / top-p / guidance
flags (NFE = generated positions; rows stop at EOS unless ``--no-stop-at-eos``)::

    proseco sample runs/q/final --steps 32 --corrector-steps 2 \\
        --unmasking remdm:mode=loop,eta=0.02 --top-p 0.9

Each output line is one sample::

    {"index": 0, "text": "...", "tokens": [...], "nfe": 64, "denoiser_nfe": 32,
     "corrector_nfe": 32, "num_corrected": 3, "batch": 0, "seed": 0,
     "sampling_config": {...}, "settings": {...}, "command": "proseco sample MODEL_DIR ..."}

A ``--prompt`` is laid out as SFT laid out the model's prompts (:func:`proseco.data.text.prompt_ids`):
the tokenizer's chat template applied to one user turn when it has one, else ``[BOS] prompt``;
``--chat-template none`` forces the latter, and by default the model's own SFT run decides
(``data.chat_template`` in its ``config.yaml``). ``--prompt-ids`` are used as given. With
``--preset``, EOS comes from the tokenizer and rows stop at it (``--no-stop-at-eos`` to decode
the whole length), as ``eval lm-eval`` does. MODEL_DIR may be a LoRA adapter run's ``final/``
(its base is loaded with the adapter merged in), or pass ``--lora ADAPTER`` with the base.

``text`` is written only when a tokenizer is found. ``length`` is the number of tokens the batch
generated. ``sampling_config`` is the full resolved config,
``settings`` the run options and ``command`` the exact command line, so a file can be reproduced
from itself: samples are drawn batch after batch from one ``torch.Generator`` seeded with
``--seed`` (same device type, same tokens). The file is written to a temporary name and moved into
place only when every sample is done, so a failed or interrupted run leaves an earlier file intact.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from proseco.commands.options import add_cache_option, add_model_options
from proseco.errors import ConfigError, OutputError
from proseco.fileio import atomic_open, read_jsonl_objects

__all__ = ["add_arguments", "run", "build_config", "read_config"]

_RUN_OPTIONS = (
    "num_samples", "batch_size", "length", "seed", "mask_id", "device", "dtype", "eos_rule",
    "chat_template", "lora",
)  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``proseco sample``; decoding flags default to "not given" (keep the saved value)."""
    from proseco.sampling import CORRECTOR_UPDATES, UNMASKING
    from proseco.sampling.presets import describe
    from proseco.schedules import SCHEDULES

    parser.add_argument("model_dir", help="a save_pretrained model directory (or a hub name)")
    parser.add_argument("--output", "-o", type=Path, default=Path("samples.jsonl"))
    parser.add_argument("--num-samples", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--length", type=int, default=None, help="tokens to generate (default: "
                        "the model's maximum length minus the prompt)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mask-id", type=int, default=None)
    parser.add_argument("--config", type=Path, default=None,
                        help="a sampling_config.json, or a samples .jsonl written by this command, "
                        "to start from (default: MODEL_DIR's own sampling_config.json)")  # fmt: skip
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved sampling config as JSON and exit")  # fmt: skip
    g = parser.add_argument_group("decoding (each flag overrides the saved sampling config)")
    g.add_argument("--preset", default=None, metavar="NAME",
                   help="start from a decoding preset (then flags override it): "
                   f"{describe()}")  # fmt: skip
    g.add_argument("--steps", type=int, default=None, help="unmasking steps T (default: length)")
    g.add_argument("--unmasking", default=None, metavar="NAME[:KEY=VALUE,...]",
                   help=f"one of {UNMASKING.names()}, e.g. threshold:threshold=0.8 or "
                   "remdm:mode=loop,eta=0.02")  # fmt: skip
    g.add_argument("--block-length", type=int, default=None)
    g.add_argument("--temperature", type=float, default=None)
    g.add_argument("--top-p", type=float, default=None)
    g.add_argument("--top-k", type=int, default=None)
    g.add_argument("--float64", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--schedule", default=None, choices=SCHEDULES.names())
    g.add_argument("--eps", type=float, default=None)
    g.add_argument("--eos-id", type=int, default=None)
    g.add_argument("--stop-at-eos", action=argparse.BooleanOptionalAction, default=None)
    add_cache_option(g)
    g = parser.add_argument_group("ProSeCo corrector")
    g.add_argument("--corrector-steps", type=int, default=None, help="S (0 = no corrector)")
    g.add_argument("--corrector-every", type=int, default=None, help="omega: fire every W steps")
    g.add_argument("--corrector-start", type=int, default=None)
    g.add_argument("--corrector-update", default=None, metavar="NAME[:KEY=VALUE,...]",
                   help=f"one of {CORRECTOR_UPDATES.names()}, e.g. "
                   "top_k_positions:positions=4")  # fmt: skip
    g.add_argument("--corrector-early-exit", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--corrector-final", type=int, default=None, metavar="N",
                   help="after each block is decoded, one more corrector loop of up to N calls "
                   "over it (0 = the paper's Algorithm 2)")  # fmt: skip
    g = parser.add_argument_group("guidance and conditioning")
    g.add_argument("--condition", type=int, default=None, help="class label")
    g.add_argument("--guidance-gamma", type=float, default=None, help="CFG strength")
    g.add_argument("--null-label", type=int, default=None)
    g.add_argument("--guidance-conditional-corrector", action="store_true", default=None,
                   help="research-code behaviour: corrector calls use the conditional model only")  # fmt: skip
    g = parser.add_argument_group("prompts and output")
    g.add_argument("--prompt", action="append", default=None, help="text prompt (repeatable)")
    g.add_argument("--prompt-ids", action="append", default=None, help="comma-separated ids")
    g.add_argument("--keep-special-tokens", action="store_true", help="keep them in 'text'")
    g.add_argument("--eos-rule", choices=["first", "research"], default="first",
                   help="'text' ends at the first EOS of the generated tokens (first), or special "
                   "tokens are stripped wherever they are, as the research code does (research)")  # fmt: skip
    g = parser.add_argument_group("runtime")
    add_model_options(g)
    g.add_argument("--no-progress", action="store_true",
                   help="no progress bars (sampling, loading weights)")  # fmt: skip


def _corrector(args: argparse.Namespace, base: Any) -> Any:
    from proseco.sampling import Corrector

    flags = {
        "steps": args.corrector_steps,
        "every": args.corrector_every,
        "start": args.corrector_start,
        "update": args.corrector_update,
        "early_exit": args.corrector_early_exit,
        "final_steps": args.corrector_final,
    }
    given = {k: v for k, v in flags.items() if v is not None}
    if not given:
        return base
    if base is None:
        if given.get("steps", 1) == 0:
            return None
        if "steps" not in given:
            raise ConfigError(
                "--corrector-every/-start/-update/-final need a corrector: add --corrector-steps S"
            )
        base = Corrector()
    corrector = Corrector(**{**base.to_dict(), **given})
    return None if corrector.steps == 0 else corrector


def _guidance(args: argparse.Namespace, base: Any) -> tuple[Any, dict[str, Any] | None]:
    """``(guidance, conditioning)`` from the flags and the saved guidance ``base``."""
    from proseco.sampling import Guidance

    if args.guidance_gamma is None:
        if base is not None and args.condition is not None:
            return Guidance(**{**_fields(base), "condition": args.condition}), None
        if args.condition is not None:
            return base, {"class_labels": args.condition}
        return base, None
    condition = args.condition if args.condition is not None else getattr(base, "condition", None)
    if condition is None:
        raise ConfigError("--guidance-gamma needs --condition (the class label to guide toward)")
    fields = {**_fields(base), "gamma": args.guidance_gamma, "condition": condition}
    if args.null_label is not None:
        fields["null_label"] = args.null_label
    if args.guidance_conditional_corrector:
        fields["in_corrector"] = False
    return Guidance(**fields), None


def _fields(obj: Any) -> dict[str, Any]:
    import dataclasses

    return {} if obj is None else {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def build_config(args: argparse.Namespace, base: Any) -> Any:
    """The :class:`~proseco.SamplingConfig` of ``base`` with the flags that were given applied."""
    direct = ("steps", "unmasking", "block_length", "temperature", "top_p", "top_k", "float64",
              "schedule", "eps", "eos_id", "stop_at_eos", "cache")  # fmt: skip
    changes: dict[str, Any] = {k: getattr(args, k) for k in direct if getattr(args, k) is not None}
    changes["corrector"] = _corrector(args, base.corrector)
    guidance, conditioning = _guidance(args, base.guidance)
    changes["guidance"] = guidance
    if conditioning is not None:
        changes["conditioning"] = {**(base.conditioning or {}), **conditioning}
    return base.replace(**changes)


def _check_run_options(args: argparse.Namespace) -> None:
    for name in ("num_samples", "batch_size"):
        if getattr(args, name) < 1:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} must be >= 1, got {getattr(args, name)}")
    if args.length is not None and args.length < 1:
        raise ConfigError(f"--length must be >= 1, got {args.length}")
    if args.output.is_dir():
        raise OutputError(f"--output {args.output} is a directory; pass a file name")


def _check_condition(args: argparse.Namespace, model: Any) -> None:
    """``--condition`` must name one of the model's classes (and the model must have some)."""
    if args.condition is None:
        return
    classes = getattr(getattr(model, "config", None), "num_classes", None) or 0
    if classes <= 0:
        raise ConfigError(
            f"--condition {args.condition}: {args.model_dir} is an unconditional model "
            "(num_classes=0); drop --condition (and --guidance-gamma)"
        )
    if not 0 <= args.condition < classes:
        raise ConfigError(
            f"--condition {args.condition}: {args.model_dir} has classes 0..{classes - 1}"
        )


def _out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is a failed allocation (CPU or accelerator)."""
    if isinstance(err, MemoryError):
        return True
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    text = str(err).lower()
    return isinstance(err, oom) or (
        isinstance(err, RuntimeError)
        and ("can't allocate memory" in text or "out of memory" in text)
    )


@contextmanager
def _allocation_errors(batch: int) -> Iterator[None]:
    """Report a batch that does not fit in memory as one :class:`ConfigError`."""
    try:
        yield
    except (RuntimeError, MemoryError) as err:
        if not _out_of_memory(err):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"a batch of {batch} samples does not fit in memory ({first[:200]}); lower --batch-size"
        ) from None


def _device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"--device {spec!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {spec}: CUDA is not available here; use --device cpu")
    return device


def _prompts(
    args: argparse.Namespace, tokenizer: Any, chat_template: str = "auto"
) -> list[list[int]] | None:
    """``--prompt-ids`` as given, then each ``--prompt`` laid out as SFT did
    (:func:`proseco.data.text.prompt_ids` with ``chat_template``)."""
    prompts = []
    for text in args.prompt_ids or []:
        try:
            prompts.append([int(i) for i in text.split(",") if i.strip()])
        except ValueError:
            raise ConfigError(
                f"--prompt-ids {text!r}: write comma-separated integer ids, e.g. 1,2,3"
            ) from None
    if args.prompt:
        if tokenizer is None:
            raise ConfigError("--prompt needs a tokenizer in MODEL_DIR; use --prompt-ids instead")
        from proseco.data.text import prompt_ids

        prompts += [prompt_ids(tokenizer, p, chat_template) for p in args.prompt]
    return prompts or None


def _mask_id(args: argparse.Namespace, model: Any, tokenizer: Any) -> int:
    """``--mask-id``, else the model config's, else the tokenizer's
    (:func:`proseco.special_tokens.resolve_special_ids`)."""
    from proseco.special_tokens import resolve_special_ids

    mask = resolve_special_ids(model, tokenizer, mask=args.mask_id).mask
    if mask is None:
        raise ConfigError(
            "no mask id: pass --mask-id, or set config.mask_token_id / a tokenizer mask"
        )
    return int(mask)


def _row_nfe(out: Any, i: int) -> dict[str, Any]:
    """Model evaluations row ``i`` took part in (rows that finish early leave the batch), falling
    back to the batch means when the sampler keeps no per-row counts."""
    if out.nfe_per_row is None:
        return {
            "nfe": out.nfe,
            "denoiser_nfe": out.denoiser_nfe,
            "corrector_nfe": out.corrector_nfe,
        }
    nfe = int(out.nfe_per_row[i])
    corrector = int(out.corrector_nfe_per_row[i]) if out.corrector_nfe_per_row is not None else 0
    return {"nfe": nfe, "denoiser_nfe": nfe - corrector, "corrector_nfe": corrector}


def _until_eos(row: list[int], eos_id: int | None, bos_id: int | None = None) -> list[int]:
    """``row`` up to (without) its first ``eos_id``: a sample ends at its end token.

    When the layout's BOS is the same token as its EOS (GPT-2's ``<|endoftext|>``), a leading one
    opens the sample rather than ending it, so it is dropped before cutting.
    """
    from proseco.eval.text import cut_at_eos

    return cut_at_eos(row, eos_id, bos_id=bos_id if bos_id == eos_id else None)


def _preset_length(args: argparse.Namespace, model: Any, prompts: list[list[int]] | None) -> int:
    """Tokens a preset is sized for: ``--length``, else what sampling will default to (the
    model's maximum length minus the widest prompt), else the presets' 256."""
    from proseco.models.protocol import model_max_length
    from proseco.sampling.presets import DEFAULT_LENGTH

    if args.length is not None:
        return args.length
    max_length = model_max_length(model)
    width = max((len(p) for p in prompts), default=0) if prompts else 0
    if max_length is None or max_length <= width:
        return DEFAULT_LENGTH
    return max_length - width


def _preset_eos(args: argparse.Namespace, config: Any, model: Any, tokenizer: Any) -> Any:
    """A preset's EOS: the config's, else the tokenizer's (else SEP), else the model config's
    (:func:`proseco.special_tokens.resolve_special_ids`), and rows stop at it unless
    ``--no-stop-at-eos`` (flags set later still override both)."""
    from proseco.special_tokens import resolve_special_ids

    eos = resolve_special_ids(model, tokenizer, eos=config.eos_id).eos
    if eos is None:
        return config
    return config.replace(eos_id=eos, stop_at_eos=args.stop_at_eos is not False)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in _RUN_OPTIONS}


def read_config(path: Path) -> Any:
    """A sampling config from a ``sampling_config.json`` or from the first line of a samples
    file written by ``proseco sample`` (its ``sampling_config`` record)."""
    from proseco.sampling import SamplingConfig

    if path.suffix != ".jsonl":
        return SamplingConfig.from_pretrained(path)
    if not path.is_file():
        raise ConfigError(f"--config {path} does not exist")

    def not_samples(why: str) -> ConfigError:
        return ConfigError(f"--config {path}: not a samples file of `proseco sample` ({why})")

    try:
        first = read_jsonl_objects(
            path, what="--config", empty=None, max_objects=1,
            on_bad_line=lambda line: not_samples(line.message()),
        )  # fmt: skip
    except OSError as e:
        raise not_samples(f"{type(e).__name__}: {e}") from None
    data = first[0][1].get("sampling_config") if first else None
    if data is None:
        raise not_samples("its first record has no sampling_config")
    return SamplingConfig.from_dict(data)


def _command(args: argparse.Namespace) -> str:
    """A command line that reproduces the run: the run options, with every decoding setting
    read back from the output file's own ``sampling_config`` records."""
    parts = ["proseco", "sample", str(args.model_dir), "--config", str(args.output)]
    for key, value in _settings(args).items():
        if value is not None:
            parts += ["--" + key.replace("_", "-"), str(value)]
    for flag, values in (("--prompt", args.prompt), ("--prompt-ids", args.prompt_ids)):
        for value in values or []:
            parts += [flag, value]
    if args.keep_special_tokens:
        parts.append("--keep-special-tokens")
    return shlex.join(parts)


def _sampler(model: Any, args: argparse.Namespace) -> tuple[Any, Any]:
    """``(check, sample)`` for ``model`` (:func:`proseco.sampling.dispatch.sampler_for`): left to
    right for a causal model, else the masked diffusion sampler. ``--stop-at-eos`` /
    ``--no-stop-at-eos`` are in the config; without either, ``stop_at_eos`` stays the config's
    (by default ``None``: an AR model stops at EOS, a diffusion model does not)."""
    from proseco.sampling.dispatch import sampler_for

    del args
    return sampler_for(model)


def run(args: argparse.Namespace) -> int:
    """Generate ``--num-samples`` samples in batches and write them to ``--output``."""
    from proseco.commands.options import chat_template, load_model_from_args
    from proseco.sampling import SamplingConfig
    from proseco.sampling.presets import apply_preset
    from proseco.special_tokens import resolve_special_ids

    _check_run_options(args)
    if args.preset is not None:
        apply_preset(SamplingConfig(), args.preset)  # an unknown name fails before loading
    device = _device(args.device)
    args.chat_template = chat_template(args)  # resolved, so the record reproduces the run
    model, tokenizer, saved = load_model_from_args(args, device)
    base = read_config(args.config) if args.config is not None else saved
    prompts = _prompts(args, tokenizer, args.chat_template)
    if args.preset is not None:
        base = apply_preset(base, args.preset, length=_preset_length(args, model, prompts))
        base = _preset_eos(args, base, model, tokenizer)
    config = build_config(args, base)
    if args.print_config:
        print(config.to_json(), end="")
        return 0
    _check_condition(args, model)
    mask_id = _mask_id(args, model, tokenizer)
    ids = resolve_special_ids(model, tokenizer, pad=config.pad_id, eos=config.eos_id)
    if config.pad_id is None and ids.pad is not None:
        config = config.replace(pad_id=ids.pad)
    check_sample_args, sample = _sampler(model, args)
    # every setting is checked before any file is touched
    with _allocation_errors(args.batch_size):
        check_sample_args(model, config, mask_id=mask_id, batch_size=args.batch_size,
                          length=args.length, prompt=prompts[:1] if prompts else None)  # fmt: skip
    eos_id = ids.eos
    torch.manual_seed(args.seed)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    record_base = {"seed": args.seed, "sampling_config": config.to_dict(),
                   "settings": _settings(args), "command": _command(args)}  # fmt: skip
    written, total_nfe, started = 0, 0, time.perf_counter()
    bar = tqdm(total=args.num_samples, unit="sample", disable=args.no_progress, desc="sampling")
    with atomic_open(args.output) as f:
        for batch_index in range((args.num_samples + args.batch_size - 1) // args.batch_size):
            batch = min(args.batch_size, args.num_samples - written)
            batch_prompts = None
            if prompts:
                batch_prompts = [prompts[(written + i) % len(prompts)] for i in range(batch)]
            with _allocation_errors(batch):
                out = sample(model, config, mask_id=mask_id, batch_size=batch,
                             length=args.length, prompt=batch_prompts,
                             generator=generator)  # fmt: skip
            for i, row in enumerate(out.generated.tolist()):
                record: dict[str, Any] = {"index": written + i}
                if tokenizer is not None:
                    record["text"] = tokenizer.decode(
                        _until_eos(row, eos_id, ids.bos) if args.eos_rule == "first" else row,
                        skip_special_tokens=not args.keep_special_tokens,
                    )
                record["tokens"] = row
                if batch_prompts is not None:
                    record["prompt_tokens"] = batch_prompts[i]
                record.update(
                    length=int(out.generated.shape[1]), **_row_nfe(out, i),
                    num_corrected=int(out.num_corrected[i]), batch=batch_index, **record_base,
                )  # fmt: skip
                f.write(json.dumps(record) + "\n")
            written += batch
            total_nfe += out.model_calls or out.nfe
            bar.update(batch)
    bar.close()
    elapsed = time.perf_counter() - started
    print(
        f"wrote {written} samples to {args.output} in {elapsed:.1f}s "
        f"({total_nfe} model evaluations)",
        file=sys.stderr,
    )
    return 0
