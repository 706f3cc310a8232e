"""The metric family: learners that adapt by embedding the support set and comparing."""

from tfmeta.learners.metric.embedding import EmbeddingLearner, class_means, num_classes
from tfmeta.learners.metric.finetune import FineTuneBaseline
from tfmeta.learners.metric.heads import Head
from tfmeta.learners.metric.protonet import PrototypicalNetwork, cosine_similarities, squared_distances

__all__ = ["EmbeddingLearner", "FineTuneBaseline", "Head", "PrototypicalNetwork", "class_means", "cosine_similarities",
           "num_classes", "squared_distances"]
