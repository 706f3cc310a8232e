"""Meta-learners. Every one implements `tfmeta.learners.Learner` (see `base.py`).

Families (one folder each): `gradient` (MAML, FOMAML, ANIL, Meta-SGD, MAML++,
Reptile), `metric` (Prototypical, Matching and Relation Networks, fine-tuning baselines, ...), `amortized`
(Conditional and Attentive Neural Processes, HyperNetworks). `registry` names them all:
`build(name, model, **kwargs)`. `Ensemble` averages the class probabilities of trained learners of any family.
"""

from tfmeta.learners.base import (
    CLASSIFICATION,
    REGRESSION,
    Learner,
    TaskLoss,
    Weights,
    map_over_tasks,
    task_loss_and_metrics,
)
from tfmeta.learners.ensemble import Ensemble, EnsembleNotTrainableError
from tfmeta.learners.gradient import (
    ANIL,
    MAML,
    InnerLoopResult,
    MetaSGD,
    Reptile,
    adapt_network,
    cosine_annealing,
    inner_loop,
    multi_step_loss_weights,
)
from tfmeta.learners.metric import EmbeddingLearner, PrototypicalNetwork
from tfmeta.learners.metric import MatchingNetwork, RelationNetwork
from tfmeta.learners.metric import FineTuneBaseline
from tfmeta.learners.amortized import (
    CNPClassifier,
    ConditionalNeuralProcess,
    FiLMHyperNetwork,
    HyperHead,
    HyperNetwork,
)
from tfmeta.learners.recurrent import LSTMMetaLearner
from tfmeta.learners.registry import MAML_PLUS_PLUS_DEFAULTS, build, entry, names, register

__all__ = [
    "CNPClassifier", "ConditionalNeuralProcess", "FiLMHyperNetwork", "HyperHead", "HyperNetwork",
    "ANIL", "CLASSIFICATION", "EmbeddingLearner", "Ensemble", "EnsembleNotTrainableError", "FineTuneBaseline",
    "InnerLoopResult", "PrototypicalNetwork", "Learner", "MAML", "MAML_PLUS_PLUS_DEFAULTS", "MetaSGD",
    "REGRESSION", "Reptile", "TaskLoss", "Weights", "adapt_network", "build", "cosine_annealing", "entry",
    "inner_loop", "map_over_tasks", "multi_step_loss_weights", "names", "register", "task_loss_and_metrics",
]
__all__ += ["MatchingNetwork", "RelationNetwork"]
__all__ += ["LSTMMetaLearner"]
