"""A tiny learner for testing the training loop without the real MAML."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmeta.learners.base import Learner, TaskLoss, Weights
from tfmeta.data.episode import Episode
from tfmeta.data.regression import sinusoid_tasks


class LinearMAML(Learner):
    """MAML on a small MLP regressor, inner loop written with `stateless_call`."""

    def __init__(self, model, inner_lr=0.01, inner_steps=1):
        super().__init__(model, task="regression")
        self.inner_lr = inner_lr
        self.inner_steps = inner_steps

    @property
    def eval_steps(self):
        return self.inner_steps

    def adapt(self, support_x, support_y, steps=None, training=True):
        steps = self.inner_steps if steps is None else steps
        weights = self.initial_weights()
        for _ in range(steps):
            with tf.GradientTape() as tape:
                tape.watch(weights.trainable)
                outputs, _ = self.call_network(weights, support_x, training)
                loss = tf.reduce_mean(tf.square(outputs - support_y))
            grads = tape.gradient(loss, weights.trainable)
            weights = Weights([w - self.inner_lr * g for w, g in zip(weights.trainable, grads)], weights.non_trainable)
        return weights

    def predict(self, task_state, x, training=True):
        return self.call_network(task_state, x, training)[0]

    def task_loss(self, episode, step=None, training=True):
        weights = self.adapt(episode.support_x, episode.support_y, training=training)
        outputs, state = self.call_network(weights, episode.query_x, training)
        loss, metrics = self.loss_and_metrics(outputs, episode.query_y)
        return TaskLoss(loss, metrics, state)


def small_mlp(hidden=16):
    inputs = keras.Input((1,))
    x = keras.layers.Dense(hidden, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(1)(x))


def sinusoid_stream(start_step, input_context=None, nan_at_step=None, stop_at_step=None, seed=0, batch=4):
    """Sinusoid meta-batches; optionally NaN targets at one step, or an end at a step."""
    dataset = sinusoid_tasks(5, 10, batch, seed=seed, start_step=start_step)
    if nan_at_step is not None:
        steps = tf.data.Dataset.counter(start=start_step)

        def poison(step, episode):
            nan = tf.fill(tf.shape(episode.query_y), np.nan)
            query_y = tf.where(step >= nan_at_step, nan, episode.query_y)  # NaN from nan_at_step on
            return Episode(episode.support_x, episode.support_y, episode.query_x, query_y)

        dataset = tf.data.Dataset.zip(steps, dataset).map(poison)
    if stop_at_step is not None:
        dataset = dataset.take(max(0, stop_at_step - start_step))
    return dataset


@pytest.fixture
def tiny():
    """Factories for the tiny learner: `tiny.learner()`, `tiny.stream(...)`."""

    class Tiny:
        learner = staticmethod(lambda inner_lr=0.01: LinearMAML(small_mlp(), inner_lr=inner_lr))
        stream = staticmethod(sinusoid_stream)

    return Tiny
