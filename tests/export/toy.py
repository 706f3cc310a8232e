"""A tiny MAML-style algorithm and learners for the export tests.

Used only where the real `tfmeta.algorithms.MAML` is not importable; the tests
prefer the real one (see `make_classifier_algorithm`).
"""

import keras
import numpy as np
import tensorflow as tf

from tfmeta.algorithms.base import Algorithm, Weights, task_loss_and_metrics
from tfmeta.data.episode import Episode

IMAGE_SHAPE = (16, 16, 1)
WAYS = 3


class SGDInnerLoop(Algorithm):
    """Plain SGD inner loop over `stateless_call` (a first-order-free MAML stand-in)."""

    def __init__(self, model, task="classification", inner_steps=2, inner_lr=0.3):
        super().__init__(model, task)
        self.inner_steps = inner_steps
        self.inner_lr = inner_lr

    def config(self):
        return {**super().config(), "inner_steps": self.inner_steps, "inner_lr": self.inner_lr}

    def adapt(self, support_x, support_y, steps=None, training=True):
        weights = self.initial_weights()
        for _ in range(self.inner_steps if steps is None else steps):
            with tf.GradientTape() as tape:
                tape.watch(weights.trainable)
                outputs, state = self.call_model(weights, support_x, training=training)
                loss, _ = task_loss_and_metrics(self.task, outputs, support_y)
            grads = tape.gradient(loss, weights.trainable)
            weights = Weights([w - self.inner_lr * g for w, g in zip(weights.trainable, grads)], list(state))
        return weights

    def predict(self, adapted, x, training=True):
        return self.call_model(adapted, x, training=training)[0]

    def task_loss(self, episode: Episode, training=True):
        fast = self.adapt(episode.support_x, episode.support_y, training=training)
        outputs, state = self.call_model(fast, episode.query_x, training=training)
        loss, metrics = task_loss_and_metrics(self.task, outputs, episode.query_y)
        return loss, metrics, state


def classifier_algorithm(seed=0, inner_steps=2, image_shape=IMAGE_SHAPE, ways=WAYS, **maml_options):
    """A real `tfmeta.algorithms.MAML` on a small learner when available, else the toy one."""
    keras.utils.set_random_seed(seed)
    try:
        from tfmeta.algorithms import MAML  # noqa: PLC0415
        from tfmeta.models import conv4  # noqa: PLC0415
    except ImportError:
        model = keras.Sequential(
            [
                keras.Input(image_shape),
                keras.layers.Conv2D(4, 3, padding="same"),
                keras.layers.BatchNormalization(),
                keras.layers.ReLU(),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(ways),
            ]
        )
        return SGDInnerLoop(model, inner_steps=inner_steps)  # maml_options need the real MAML.
    model = conv4(ways=ways, input_shape=image_shape, filters=4)
    return MAML(model, inner_steps=inner_steps, inner_lr=0.3, **maml_options)


def regressor_algorithm(seed=0, inner_steps=2):
    keras.utils.set_random_seed(seed)
    try:
        from tfmeta.algorithms import MAML  # noqa: PLC0415
        from tfmeta.models import mlp  # noqa: PLC0415
    except ImportError:
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
        return SGDInnerLoop(model, task="regression", inner_steps=inner_steps, inner_lr=0.01)
    return MAML(mlp(input_dim=1, hidden=(16, 16)), task="regression", inner_steps=inner_steps, inner_lr=0.01)


def classification_request(rng, shots=2, queries=3, ways=WAYS):
    """A valid request: every class `shots` times (shuffled), images in [0, 1]."""
    labels = rng.permutation(np.repeat(np.arange(ways), shots)).astype(np.int32)
    support = rng.random((ways * shots,) + IMAGE_SHAPE, dtype=np.float32)
    # Make classes separable: class k brightens row k.
    for i, k in enumerate(labels):
        support[i, k] += 1.0
    query = rng.random((ways * queries,) + IMAGE_SHAPE, dtype=np.float32)
    return {"support_images": support / 2, "support_labels": labels, "query_images": query}


def eager_classifier_outputs(algorithm, request, steps=None):
    fast = algorithm.adapt(tf.constant(request["support_images"]), tf.constant(request["support_labels"]), steps=steps)
    logits = algorithm.predict(fast, tf.constant(request["query_images"]))
    return np.asarray(logits)
