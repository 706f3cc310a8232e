"""Reptile's update against a hand computation on a linear model."""

import keras
import numpy as np
import tensorflow as tf

from tfmeta.data.episode import Episode
from tfmeta.learners import Reptile

W0, ALPHA, STEPS = 0.7, 0.1, 2
TASKS = [  # (support x, support y, query x, query y) per task
    (np.array([1.0, 2.0, -1.0]), np.array([2.0, 3.0, -1.5]), np.array([0.5]), np.array([1.0])),
    (np.array([0.5, -2.0, 1.5]), np.array([-1.0, 4.5, -2.0]), np.array([1.0]), np.array([-2.0])),
]


def _linear_model():
    """y = w x, no bias, float64, w = W0."""
    model = keras.Sequential([keras.Input((1,), dtype="float64"),
                              keras.layers.Dense(1, use_bias=False, dtype="float64")])
    model.layers[-1].kernel.assign(np.array([[W0]], np.float64))
    return model


def _sgd(w, xs, ys):
    for _ in range(STEPS):  # d/dw mean((w x - y)^2) = 2 mean(x (w x - y))
        w = w - ALPHA * 2 * np.mean(xs * (w * xs - ys))
    return w


def test_meta_gradient_is_the_mean_displacement_and_sgd_moves_towards_the_adapted_weights():
    reptile = Reptile(_linear_model(), task="regression", inner_steps=STEPS, inner_lr=ALPHA)
    batch = Episode(*(tf.constant(np.stack([t[i] for t in TASKS])[..., None], tf.float64) for i in range(4)))
    adapted = [_sgd(W0, xs, ys) for xs, ys, _, _ in TASKS]
    expected = np.mean([W0 - phi for phi in adapted])  # mean_t (theta - phi_t)
    grads, metrics, _ = reptile.meta_gradients(batch)
    np.testing.assert_allclose(float(tf.reshape(grads[0], [])), expected, rtol=1e-12)
    query_losses = [np.mean((phi * qx - qy) ** 2) for phi, (_, _, qx, qy) in zip(adapted, TASKS)]
    np.testing.assert_allclose(float(metrics["loss"]), np.mean(query_losses), rtol=1e-12)
    # The loss scale multiplies the displacement (the loop divides it back).
    scaled, _, _ = reptile.meta_gradients(batch, loss_scale=8.0)
    np.testing.assert_allclose(float(tf.reshape(scaled[0], [])), 8 * expected, rtol=1e-12)

    # Outer SGD with epsilon = 1: theta moves to the mean adapted weight (the paper's update).
    keras.optimizers.SGD(1.0).apply(grads, reptile.meta_variables)
    np.testing.assert_allclose(float(reptile.model.layers[-1].kernel.numpy()[0, 0]), np.mean(adapted), rtol=1e-12)
