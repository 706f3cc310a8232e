"""`BatchNorm` computes `(x - mean) * (gamma * rsqrt(var + eps)) + beta` (gamma folded
per channel, for speed): it must equal the textbook formula, values and first and
second derivatives, to float64 round-off."""

import numpy as np
import pytest
import tensorflow as tf

from tfmeta.models import BatchNorm


def textbook(x, gamma, beta, epsilon, mean=None, variance=None):
    axes = [0, 1, 2]
    if mean is None:
        mean = tf.reduce_mean(x, axes)
        variance = tf.reduce_mean(tf.square(x - mean), axes)
    return gamma * (x - mean) / tf.sqrt(variance + epsilon) + beta


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_matches_textbook_formula_to_second_order(training):
    rng = np.random.default_rng(0)
    layer = BatchNorm(dtype="float64")
    layer.build((4, 5, 5, 3))
    gamma = tf.constant(rng.uniform(0.5, 2.0, 3))
    beta = tf.constant(rng.normal(size=3))
    moving = [tf.constant(rng.normal(size=3)), tf.constant(rng.uniform(0.5, 2.0, 3))]
    x = tf.constant(rng.normal(size=(4, 5, 5, 3)) * 2.0 + 1.0)
    probe = tf.constant(rng.normal(size=(4, 5, 5, 3)))

    def second_order(fn):
        # d/dx of (sum(probe * d/dx sum(fn(x)^2))): exercises second derivatives.
        with tf.GradientTape() as outer:
            outer.watch([x, gamma, beta])
            with tf.GradientTape() as inner:
                inner.watch(x)
                y = fn(x, gamma, beta)
                loss = tf.reduce_sum(tf.square(y) * probe)
            gx = inner.gradient(loss, x)
            out = tf.reduce_sum(gx * probe)
        return [y, gx] + outer.gradient(out, [x, gamma, beta])

    def ours(x, gamma, beta):
        y, _ = layer.stateless_call([gamma, beta], moving, x, training=training)
        return y

    def reference(x, gamma, beta):
        stats = {} if training else {"mean": moving[0], "variance": moving[1]}
        return textbook(x, gamma, beta, layer.epsilon, **stats)

    for got, want in zip(second_order(ours), second_order(reference)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-10, atol=1e-10)
