"""Command line: ``proseco [--debug] train | sample | generate | chat | serve | eval | demo ...``.

Each subcommand lives in its own module, which provides ``add_arguments(parser)`` and
``run(args) -> int``; :data:`COMMANDS` maps the command's name to that module and a one-line help.
Modules are imported lazily, so ``proseco --help`` stays fast. Adding a command is one module
plus one line in :data:`COMMANDS`.

A :class:`~proseco.errors.ProsecoError` (bad input or environment) raised by a command is printed
as one line, ``proseco COMMAND: error: MESSAGE``, and the exit status is 2. With ``--debug``
(before the command) or ``PROSECO_DEBUG=1`` it propagates with its traceback instead.

Ctrl-C (SIGINT) ends any command with one line, ``proseco COMMAND: interrupted``, and status 130.
SIGTERM ends the commands that write result files (:data:`CLEAN_ON_SIGTERM`) the same way, with
status 143, after their temporary files are removed (instead of dying where they stand).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from proseco.errors import ProsecoError

__all__ = ["CLEAN_ON_SIGTERM", "COMMANDS", "Terminated", "build_parser", "main"]

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "proseco.commands.demo",
        "QM9 demo: MDLM vs ProSeCo sampling with shipped checkpoints",
    ),
    "train": ("proseco.commands.train", "train a model from a YAML recipe"),
    "sample": ("proseco.commands.sample", "sample from a trained model directory"),
    "generate": (
        "proseco.commands.generate",
        'answer one prompt, streaming the text (`proseco generate MODEL_DIR "prompt"`)',
    ),
    "chat": ("proseco.commands.chat", "chat with a model on the terminal (turns from stdin)"),
    "serve": (
        "proseco.commands.serve",
        "serve a model behind an OpenAI-compatible HTTP API (needs proseco[serve])",
    ),
    "accelerate-config": (
        "proseco.commands.accelerate_config",
        "print the path of a shipped Accelerate config (ddp, fsdp, deepspeed-zero3)",
    ),
    "eval": (
        "proseco.commands.eval",
        "evaluate samples (e.g. `proseco eval molecules SAMPLES.jsonl`)",
    ),
}


CLEAN_ON_SIGTERM = frozenset({"sample", "eval", "demo"})
"""Commands that turn SIGTERM into :class:`Terminated`, so their ``finally`` blocks (removing
temporary output files) run before they exit."""


class Terminated(BaseException):
    """Raised in the main thread when SIGTERM arrives (see :data:`CLEAN_ON_SIGTERM`)."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


@contextmanager
def _sigterm_raises(enabled: bool) -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`Terminated` (main thread only)."""
    if not enabled:
        yield
        return
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: leave the signal alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; only ``command``'s module is imported."""
    parser = argparse.ArgumentParser(
        prog="proseco", description="Progressive self-correction for masked diffusion models."
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the full traceback of input errors (same as PROSECO_DEBUG=1)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if command == name:
            module = importlib.import_module(module_name)
            module.add_arguments(sp)
            sp.set_defaults(_run=module.run)
    return parser


def _command_name(argv: list[str]) -> str | None:
    """The command named in ``argv``: its first word that is not an option (``--debug``)."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return word if word in COMMANDS else None


def _debug_env() -> bool:
    return os.environ.get("PROSECO_DEBUG", "").strip() not in ("", "0")


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command and return its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_name(argv))
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        with _sigterm_raises(args.command in CLEAN_ON_SIGTERM):
            return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"proseco {args.command}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print(f"proseco {args.command}: terminated (SIGTERM)", file=sys.stderr)
        return 143
    except ProsecoError as err:
        if args.debug or _debug_env():
            raise
        message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        print(f"proseco {args.command}: error: {message or type(err).__name__}", file=sys.stderr)
        return 2
