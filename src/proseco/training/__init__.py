"""Training: recipes, data splits and batch order, the Accelerate loop, checkpoints and EMA.

>>> from proseco.training import train
>>> result = train("text-cpu-tiny", "runs/tiny")          # doctest: +SKIP
>>> result.final_dir                                       # doctest: +SKIP
PosixPath('runs/tiny/final')
"""

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
from proseco.training.ema import EMA
from proseco.training.loop import TrainingDivergedError, TrainResult, train

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
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "list_recipes",
    "load_config",
    "save_config",
    "train",
    "update_config",
]
