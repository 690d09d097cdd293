"""The Accelerate config files shipped with proseco (``proseco/accelerate_configs/*.yaml``).

``proseco accelerate-config NAME`` prints the path of one, for
``accelerate launch --config_file $(proseco accelerate-config fsdp) -m proseco train ...``:

* ``ddp`` — data parallel, every GPU holds the whole model;
* ``fsdp`` — FSDP2, parameters, gradients and optimizer states sharded per transformer block;
* ``deepspeed-zero3`` — DeepSpeed ZeRO stage 3 (needs ``pip install deepspeed``).

Each is written for one node of 8 GPUs; ``accelerate launch`` flags (``--num_processes``,
``--num_machines``, ...) override any of its values.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from proseco.errors import ConfigError

__all__ = ["accelerate_config", "list_accelerate_configs"]


def _config_dir() -> Path:
    return Path(str(resources.files("proseco") / "accelerate_configs"))


def list_accelerate_configs() -> list[str]:
    """Names of the shipped Accelerate configs."""
    return sorted(p.stem for p in _config_dir().glob("*.yaml"))


def accelerate_config(name: str) -> Path:
    """The path of the shipped Accelerate config ``name`` (``fsdp``, ``deepspeed-zero3``, ...).

    Raises:
        ConfigError: no config has that name.
    """
    path = _config_dir() / f"{name.removesuffix('.yaml')}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"no shipped Accelerate config named {name!r}; choose one of "
            f"{', '.join(list_accelerate_configs())}"
        )
    return path
