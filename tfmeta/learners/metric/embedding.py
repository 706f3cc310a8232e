"""`EmbeddingLearner`: what the metric family shares, an embedding network whose outputs are compared.

A metric learner adapts without gradient steps: its task state is computed
from the embeddings of the support set (class prototypes, the support
embeddings and their labels, class feature maps), for any number of classes
and of shots per class. The embedding runs with `training=True` while
meta-training, on the support and query sets of a task in one batch (as Snell
et al.'s code does), and with its BatchNorm moving statistics at evaluation
and in served models (`training_at_test = False`), so a query's answer does not
depend on the other queries of a request.
"""

import abc

import keras
import tensorflow as tf

from tfmeta.data.episode import Episode
from tfmeta.learners.base import CLASSIFICATION, Learner, TaskLoss, Weights


def num_classes(labels) -> tf.Tensor:
    """The number of classes of labels `0..N-1`: `max(labels) + 1` (a scalar tensor)."""
    return tf.reduce_max(labels) + 1


def class_means(embeddings, labels, ways=None) -> tf.Tensor:
    """The mean embedding of each class: `(ways, *E)` from `(n, *E)` embeddings and labels in `[0, ways)`."""
    ways = num_classes(labels) if ways is None else ways
    return tf.math.unsorted_segment_mean(embeddings, labels, ways)


def embedding_shape(model: keras.Model) -> tuple:
    """The shape of one embedding: the network's output shape without the batch axis.

    Learners that build networks on top of the embedding (Matching Networks'
    LSTMs, Relation Networks' relation module) size them from it.

    Raises:
        ValueError: if the network has no defined output shape (a subclassed
            model: build it on a `keras.Input`, functional or Sequential).
    """
    shape = tuple(model.outputs[0].shape[1:]) if model.outputs else None
    if not shape or any(d is None for d in shape):
        raise ValueError(
            "The embedding network needs a fully defined output shape (build it on a keras.Input: "
            f"Sequential or functional). Received: model={model.name!r} with output shape {shape}"
        )
    return tuple(int(d) for d in shape)


class EmbeddingLearner(Learner):
    """Base of the metric learners: an embedding network, evaluated on its moving statistics.

    Args:
        embedding: the embedding network, a built `keras.Model` mapping examples
            to embeddings (e.g. `tfmeta.models.conv4(ways=None)`).
        name: the registry name.
    """

    any_ways = True
    has_embedding = True
    training_at_test = False

    def __init__(self, embedding: keras.Model, name: str | None = None):
        super().__init__(embedding, CLASSIFICATION, name=name)

    def embed_with_state(self, x, training: bool, state=None):
        """Embeddings of `x` and the embedding network's new non-trainable state.

        Args:
            x: examples `(n, ...)`.
            training: passed to the network.
            state: the network's non-trainable values to start from (None: the
                current ones).

        Returns:
            `(embeddings, new_state)`; embeddings in float32 (also under mixed precision).
        """
        state = [v.value for v in self.model.non_trainable_variables] if state is None else state
        outputs, new_state = self.call_network(Weights([v.value for v in self.model.trainable_variables], state),
                                               x, training=training)
        return tf.cast(outputs, tf.float32), list(new_state)

    def embed(self, x, training: bool = False):
        return self.embed_with_state(x, training)[0]

    def embed_episode(self, episode: Episode, training: bool):
        """The support and query embeddings of one task, from one pass over both.

        Returns:
            `(support_embeddings, query_embeddings, new_state)`.
        """
        support_size = tf.shape(episode.support_x)[0]
        both = tf.concat([episode.support_x, tf.cast(episode.query_x, episode.support_x.dtype)], axis=0)
        embeddings, state = self.embed_with_state(both, training)
        return embeddings[:support_size], embeddings[support_size:], state

    def adapt(self, support_x, support_y, steps=None, training: bool = False):
        self.check_adapt_steps(steps)
        return self.task_state(self.embed(support_x, training=training), support_y)

    @abc.abstractmethod
    def task_state(self, support_embeddings, support_y):
        """The task state from the support embeddings and labels (what `adapt` returns)."""

    @abc.abstractmethod
    def predict_embedded(self, task_state, query_embeddings):
        """Outputs `(Q, N)` for query embeddings under a task state."""

    def predict(self, task_state, x, training: bool = False):
        return self.predict_embedded(task_state, self.embed(x, training=training))

    def task_loss(self, episode: Episode, step=None, training: bool = True) -> TaskLoss:
        support, query, state = self.embed_episode(episode, training)
        outputs = self.predict_embedded(self.task_state(support, episode.support_y), query)
        loss, metrics = self.loss_and_metrics(outputs, episode.query_y)
        return TaskLoss(loss, metrics, state)
