"""Built-in learners. Any built `keras.Model` works as a learner."""

from tfmeta.models.batchnorm import BatchNorm, batch_norm_layers
from tfmeta.models.conv4 import conv4
from tfmeta.models.mlp import mlp

__all__ = ["BatchNorm", "batch_norm_layers", "conv4", "mlp"]
