"""The metric family: learners that adapt by embedding the support set and comparing."""

from tfmeta.learners.metric.embedding import EmbeddingLearner, class_means, num_classes
from tfmeta.learners.metric.finetune import FineTuneBaseline
from tfmeta.learners.metric.heads import Head
from tfmeta.learners.metric.protonet import PrototypicalNetwork, cosine_similarities, squared_distances
from tfmeta.learners.metric.matching import MatchingNetwork, class_log_probabilities
from tfmeta.learners.metric.relation import RelationNetwork, relation_module

__all__ = ["EmbeddingLearner", "PrototypicalNetwork", "class_means", "cosine_similarities", "num_classes",
           "squared_distances"]
__all__ += ["MatchingNetwork", "RelationNetwork", "class_log_probabilities", "relation_module"]
__all__ += ["FineTuneBaseline", "Head"]
