"""The amortized family: learners that adapt in one forward pass (Neural Processes, HyperNetworks)."""

from tfmeta.learners.amortized.cnp import CNPClassifier, ConditionalNeuralProcess
from tfmeta.learners.amortized.common import gaussian_log_likelihood, gaussian_loss_and_metrics, identity_features
from tfmeta.learners.amortized.hypernet import FiLMHyperNetwork, HyperHead, HyperNetwork, build_hypernet
from tfmeta.learners.amortized.sets import MultiHeadAttention, SelfAttentionBlock, set_mean

__all__ = ["CNPClassifier", "ConditionalNeuralProcess", "FiLMHyperNetwork", "HyperHead", "HyperNetwork",
           "MultiHeadAttention", "SelfAttentionBlock", "build_cnp", "build_hypernet", "gaussian_log_likelihood",
           "gaussian_loss_and_metrics", "identity_features", "set_mean"]


def build_cnp(model=None, task: str = "classification", **kwargs):
    """The registry's `"cnp"`: `ConditionalNeuralProcess` for regression (`model`: the
    network of the inputs, None for the identity), `CNPClassifier` for classification
    (`model`: the embedding)."""
    if task == "regression":
        return ConditionalNeuralProcess(model, **kwargs)
    if task != "classification":
        raise ValueError(f"`task` must be 'classification' or 'regression'. Received: task={task!r}")
    return CNPClassifier(model, **kwargs)
