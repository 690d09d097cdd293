"""Command line: ``proseco train | sample | eval | demo | bench``.

Each subcommand lives in its own module, which provides ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported lazily so ``proseco --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("proseco.demo", "QM9 demo: MDLM vs ProSeCo sampling with shipped checkpoints"),
    "train": ("proseco.training.cli", "train a model from a YAML recipe"),
    "sample": ("proseco.sampling.cli", "sample from a trained model directory"),
    "eval": ("proseco.eval.cli", "evaluate samples (e.g. `proseco eval molecules SAMPLES.jsonl`)"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; only ``command``'s module is imported."""
    parser = argparse.ArgumentParser(
        prog="proseco", description="Progressive self-correction for masked diffusion models."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if command == name:
            module = importlib.import_module(module_name)
            module.add_arguments(sp)
            sp.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
