"""The gradient-based family: learners that adapt by gradient steps on the support set."""

from tfmeta.learners.gradient.inner_loop import InnerLoopResult, adapt_network, inner_loop
from tfmeta.learners.gradient.maml import ANIL, MAML, MetaSGD
from tfmeta.learners.gradient.per_step import PerStepBatchNorm
from tfmeta.learners.gradient.rates import InnerRates
from tfmeta.learners.gradient.reptile import Reptile
from tfmeta.learners.gradient.schedules import cosine_annealing, multi_step_loss_weights

__all__ = [
    "ANIL", "InnerLoopResult", "InnerRates", "MAML", "MetaSGD", "PerStepBatchNorm", "Reptile", "adapt_network",
    "cosine_annealing", "inner_loop", "multi_step_loss_weights",
]
