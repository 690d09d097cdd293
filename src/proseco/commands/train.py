"""``proseco train RECIPE [--section.field VALUE ...] --output-dir DIR [--resume]``.

RECIPE is a YAML file or the name of a shipped recipe (``--list`` shows them). Overrides use the
config's dotted names (``--optim.lr 1e-3``, ``--loss.sc_weight=0``); values are parsed as YAML.
``--resume`` continues the run as it was launched (the ``config.yaml`` saved in ``--output-dir``,
launch overrides included); only the overrides given on the resume command change it.
For several processes launch it with ``accelerate launch -m proseco.cli train ...`` or
``torchrun --nproc_per_node N -m proseco.cli train ...``.
"""

from __future__ import annotations

import argparse
import shlex
import sys

__all__ = ["add_arguments", "run", "split_overrides"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``train`` arguments; everything after RECIPE is parsed by :func:`split_overrides`."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "examples:\n"
        "  proseco train text-cpu-tiny --output-dir runs/tiny\n"
        "  proseco train qm9-proseco-cpu --optim.lr 5e-4 --train.max_steps 500 --output-dir runs/q\n"
        "  proseco train qm9-proseco-cpu --output-dir runs/q --resume"
    )
    parser.add_argument("recipe", nargs="?", help="a recipe YAML path or a shipped recipe name")
    parser.add_argument("--output-dir", dest="output_dir", help="run directory (required)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint in --output-dir, with the config the run was "
        "launched with (its config.yaml); only overrides given with --resume change it",
    )
    parser.add_argument("--list", action="store_true", help="list the shipped recipes and exit")
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config (recipe + overrides) as YAML and exit",
    )
    parser.add_argument(
        "overrides",
        nargs=argparse.REMAINDER,
        help="--section.field VALUE overrides (e.g. --optim.lr 1e-3 --loss.sc_weight 0)",
    )


def split_overrides(tokens: list[str]) -> tuple[dict[str, object], list[str]]:
    """Separate ``--output-dir``, ``--resume``, ``--list``, ``--print-config`` from overrides.

    Returns:
        ``(flags, override_tokens)``.
    """
    flags: dict[str, object] = {}
    rest: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token in ("--output-dir", "--output_dir"):
            if i + 1 >= len(tokens):
                raise ValueError("--output-dir needs a directory")
            flags["output_dir"] = tokens[i + 1]
            i += 2
            continue
        if token.startswith(("--output-dir=", "--output_dir=")):
            flags["output_dir"] = token.split("=", 1)[1]
        elif token in ("--resume", "--list", "--print-config"):
            flags[token[2:].replace("-", "_")] = True
        else:
            rest.append(token)
        i += 1
    return flags, rest


def _console_log() -> None:
    """Show the trainer's notes (``proseco.training`` at INFO: LoRA's trainable-parameter
    count, ...) on stderr, from the main process only."""
    import logging
    import os

    log = logging.getLogger("proseco.training")
    if log.handlers or os.environ.get("RANK", "0") != "0":
        return

    class CurrentStderr(logging.StreamHandler):
        def emit(self, record: logging.LogRecord) -> None:
            self.stream = sys.stderr  # the stream of now (tests swap it)
            super().emit(record)

    handler = CurrentStderr()
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


def run(args: argparse.Namespace) -> int:
    """Run ``proseco train``; returns the exit status (2 on a bad config or data)."""
    from proseco.training.config_io import apply_overrides, list_recipes, load_config

    try:
        flags, tokens = split_overrides(list(args.overrides or []))
    except ValueError as err:
        print(f"proseco train: error: {err}", file=sys.stderr)
        return 2
    output_dir = flags.get("output_dir", args.output_dir)
    resume = bool(flags.get("resume", args.resume))
    if flags.get("list", args.list):
        print("\n".join(list_recipes()))
        return 0
    if not args.recipe:
        print(
            "proseco train: error: give a RECIPE (a YAML path or one of: "
            f"{', '.join(list_recipes())})",
            file=sys.stderr,
        )
        return 2
    try:
        recipe = load_config(args.recipe)
        config = apply_overrides(recipe, tokens)
        if resume and output_dir:  # continue the run as launched: only these flags change it
            from proseco.training.checkpoint import resume_config

            config = resume_config(recipe, tokens, output_dir)
    except ValueError as err:
        print(f"proseco train: error: {err}", file=sys.stderr)
        return 2
    if flags.get("print_config", args.print_config):
        import yaml

        from proseco.training.config_io import config_to_dict

        print(yaml.safe_dump(config_to_dict(config), sort_keys=False), end="")
        return 0
    if not output_dir:
        print("proseco train: error: --output-dir DIR is required", file=sys.stderr)
        return 2
    from proseco.training.interrupt import TrainingInterrupted
    from proseco.training.loop import TrainingDivergedError, train

    _console_log()
    try:
        result = train(config, output_dir, resume=resume)
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"proseco train: error: {err}", file=sys.stderr)
        return 2
    except TrainingDivergedError as err:
        print(f"proseco train: stopped: {err}", file=sys.stderr)
        return 3
    except TrainingInterrupted as stop:
        if _is_main_process():  # every process stops after the same step; one says so
            again = shlex.join(["proseco", "train", args.recipe, "--output-dir", str(output_dir)])
            print(
                f"proseco train: stopped by {stop.signal_name} after step {stop.step}; "
                f"checkpoint {stop.checkpoint}. Continue with: {again} --resume",
                file=sys.stderr,
            )
        return stop.exit_code
    if _is_main_process():
        print(f"done: {result.step} steps; model exported to {result.final_dir}")
    return 0


def _is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process
