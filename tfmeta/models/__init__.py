"""Built-in learners and backbones. Any built `keras.Model` works as a learner."""

from tfmeta.models.backbones import BACKBONES, build_backbone
from tfmeta.models.batchnorm import BatchNorm, batch_norm_layers
from tfmeta.models.conv4 import conv4
from tfmeta.models.conv4_relation import conv4_relation
from tfmeta.models.dropblock import DropBlock
from tfmeta.models.mlp import mlp
from tfmeta.models.resnet12 import resnet12

__all__ = ["BACKBONES", "BatchNorm", "DropBlock", "batch_norm_layers", "build_backbone", "conv4", "conv4_relation", "mlp", "resnet12"]
