"""`PrototypicalNetwork` (Snell, Swersky and Zemel, 2017): the nearest class mean in an embedding space."""

import keras
import tensorflow as tf

from tfmeta.learners.base import check_positive
from tfmeta.learners.metric.embedding import EmbeddingLearner, class_means

DISTANCES = ("euclidean", "cosine")


def squared_distances(queries, prototypes) -> tf.Tensor:
    """`||q - p||^2` for every query and prototype: `(Q, N)` from `(Q, E)` and `(N, E)`."""
    return (tf.reduce_sum(tf.square(queries), axis=-1, keepdims=True)
            - 2.0 * tf.matmul(queries, prototypes, transpose_b=True)
            + tf.reduce_sum(tf.square(prototypes), axis=-1)[None, :])


def cosine_similarities(queries, prototypes) -> tf.Tensor:
    """`cos(q, p)` for every query and prototype: `(Q, N)`."""
    return tf.matmul(tf.math.l2_normalize(queries, axis=-1), tf.math.l2_normalize(prototypes, axis=-1),
                     transpose_b=True)


class PrototypicalNetwork(EmbeddingLearner):
    """Prototypical Networks: each class is the mean of its support embeddings.

    ```
    c_k = mean_{i: y_i = k} f(x_i)                       # prototypes: the task state (N, E)
    logits(x)_k = -||f(x) - c_k||^2                      # "euclidean" (the paper's)
    logits(x)_k = scale * cos(f(x), c_k)                 # "cosine"
    loss = cross-entropy of the query logits
    ```

    Any number of classes and of shots per class (unequal too). While
    meta-training, the support and query sets of a task are embedded in one
    batch with BatchNorm on its statistics; at evaluation and in served models
    the embedding uses its moving statistics (as the paper's code, in `eval()` mode).

    Args:
        embedding: the embedding network, a built `keras.Model` (the paper's:
            `tfmeta.models.conv4(ways=None)`, 64 filters).
        distance: `"euclidean"` (squared) or `"cosine"`.
        cosine_scale: the scale of cosine similarities (they lie in [-1, 1],
            too flat for a softmax; 10 as in TADAM's metric scaling).
        name: the registry name.

    Raises:
        ValueError: on an unknown `distance` or a non-positive `cosine_scale`.

    Example:

    ```python
    protonet = tfmeta.learners.PrototypicalNetwork(tfmeta.models.conv4(ways=None))
    prototypes = protonet.adapt(support_x, support_y)        # (ways, 64)
    logits = protonet.predict(prototypes, query_x)           # (queries, ways)
    ```
    """

    def __init__(self, embedding: keras.Model, distance: str = "euclidean", cosine_scale: float = 10.0,
                 name: str = "protonet"):
        if distance not in DISTANCES:
            raise ValueError(f"`distance` must be one of {DISTANCES}. Received: distance={distance!r}")
        super().__init__(embedding, name=name)
        self.distance = distance
        self.cosine_scale = check_positive("cosine_scale", cosine_scale)

    def config(self) -> dict:
        return {**super().config(), "distance": self.distance, "cosine_scale": self.cosine_scale}

    def task_state(self, support_embeddings, support_y):
        """The class prototypes `(ways, E)`: the mean support embedding of each class."""
        return class_means(support_embeddings, support_y)

    def predict_embedded(self, prototypes, query_embeddings):
        if self.distance == "euclidean":
            return -squared_distances(query_embeddings, prototypes)
        return self.cosine_scale * cosine_similarities(query_embeddings, prototypes)
