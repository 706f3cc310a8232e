"""Meta-training: configuration, the training loop, checkpoints and `run(config)`."""

from tfmeta.training.config import MetaTrainConfig
from tfmeta.training.distribute import configure_logical_devices, make_strategy
from tfmeta.training.loop import MetaTrainer, NonFiniteLossError
from tfmeta.training.presets import preset
from tfmeta.training.runner import RunResult, run

__all__ = [
    "MetaTrainConfig", "MetaTrainer", "NonFiniteLossError", "RunResult", "configure_logical_devices", "make_strategy",
    "preset", "run",
]
