"""Training: recipes, data splits and batch order, the Accelerate loop, checkpoints and EMA.

>>> from proseco.training import train
>>> result = train("text-cpu-tiny", "runs/tiny")          # doctest: +SKIP
>>> result.final_dir                                       # doctest: +SKIP
PosixPath('runs/tiny/final')
"""

from typing import TYPE_CHECKING, Any

from proseco.training.config import (
    DataSection,
    LossSection,
    ModelSection,
    OptimSection,
    TrainConfig,
    TrainSection,
)
from proseco.training.config_io import (
    apply_overrides,
    config_from_dict,
    config_to_dict,
    list_recipes,
    load_config,
    save_config,
    update_config,
)

if TYPE_CHECKING:
    from proseco.training.ema import EMA
    from proseco.training.interrupt import TrainingInterrupted
    from proseco.training.loop import TrainingDivergedError, TrainResult, train

_LAZY = {
    "EMA": "proseco.training.ema",
    "TrainingDivergedError": "proseco.training.loop",
    "TrainingInterrupted": "proseco.training.interrupt",
    "TrainResult": "proseco.training.loop",
    "train": "proseco.training.loop",
}


def __getattr__(name: str) -> Any:
    """The training loop loads on first use (it pulls in Accelerate): ``proseco train --list``
    and config handling stay fast."""
    if name not in _LAZY:
        raise AttributeError(f"module 'proseco.training' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "EMA",
    "DataSection",
    "LossSection",
    "ModelSection",
    "OptimSection",
    "TrainConfig",
    "TrainResult",
    "TrainSection",
    "TrainingDivergedError",
    "TrainingInterrupted",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "list_recipes",
    "load_config",
    "save_config",
    "train",
    "update_config",
]
