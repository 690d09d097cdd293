"""``proseco accelerate-config NAME``: print the path of a shipped Accelerate config.

For ``accelerate launch --config_file $(proseco accelerate-config fsdp) -m proseco train ...``;
``--list`` names them all (see :mod:`proseco.training.launch`).
"""

from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "example:\n"
        "  accelerate launch --config_file $(proseco accelerate-config fsdp) \\\n"
        "      -m proseco train sft-llada-8b --output-dir runs/llada-proseco"
    )
    parser.add_argument("name", nargs="?", help="ddp, fsdp or deepspeed-zero3")
    parser.add_argument("--list", action="store_true", help="list the shipped configs and exit")


def run(args: argparse.Namespace) -> int:
    from proseco.errors import ConfigError
    from proseco.training.launch import accelerate_config, list_accelerate_configs

    if args.list:
        print("\n".join(list_accelerate_configs()))
        return 0
    if not args.name:
        raise ConfigError(
            f"name a config: one of {', '.join(list_accelerate_configs())} (or pass --list)"
        )
    print(accelerate_config(args.name))
    return 0
