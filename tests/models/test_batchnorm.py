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


@pytest.mark.parametrize("shape", [(6, 5, 5, 3), (7, 3)])
def test_fused_float32_path_matches_float64_to_second_order(shape):
    """Training mode in float32 runs the fused kernel; it must agree with the exact
    float64 formula (values, first and second derivatives, moving statistics)."""
    rng = np.random.default_rng(1)
    channels = shape[-1]
    gamma, beta = rng.uniform(0.5, 2.0, channels), rng.normal(size=channels)
    moving = [rng.normal(size=channels), rng.uniform(0.5, 2.0, channels)]
    x, probe = rng.normal(size=shape) * 2.0 + 1.0, rng.normal(size=shape)

    def run(dtype):
        layer = BatchNorm(dtype=dtype)
        layer.build(shape)
        c = lambda a: tf.constant(a, dtype)
        xs, gs, bs = c(x), c(gamma), c(beta)
        with tf.GradientTape() as outer:
            outer.watch([xs, gs, bs])
            with tf.GradientTape() as inner:
                inner.watch([xs, gs])
                y, state = layer.stateless_call([gs, bs], [c(m) for m in moving], xs, training=True)
                loss = tf.reduce_sum(tf.square(y) * c(probe))
            gx, gg = inner.gradient(loss, [xs, gs])
            out = tf.reduce_sum(gx * c(probe)) + tf.reduce_sum(gg * gg)
        return [y, gx, gg] + outer.gradient(out, [xs, gs, bs]) + list(state)

    for got, want in zip(run("float32"), run("float64")):
        scale = float(np.abs(want.numpy()).max())
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5 * scale)


def test_fused_path_with_a_single_value_per_channel():
    """One value per channel: zero variance, output beta, finite moving statistics."""
    layer = BatchNorm(momentum=0.9)
    layer.build((1, 4))
    y, (mean, variance) = layer.stateless_call(
        [tf.ones([4]), tf.fill([4], 0.5)], [tf.zeros([4]), tf.ones([4])], tf.constant([[1.0, 2.0, 3.0, 4.0]]),
        training=True,
    )
    np.testing.assert_allclose(y.numpy(), [[0.5] * 4])
    np.testing.assert_allclose(mean.numpy(), [0.1, 0.2, 0.3, 0.4], rtol=1e-6)
    np.testing.assert_allclose(variance.numpy(), [0.9] * 4, rtol=1e-6)


def test_bfloat16_inputs_keep_their_dtype():
    layer = BatchNorm()
    layer.build((2, 3, 3, 4))
    x = tf.random.stateless_normal((2, 3, 3, 4), seed=[1, 2])
    y16, _ = layer.stateless_call([tf.ones([4]), tf.zeros([4])], [tf.zeros([4]), tf.ones([4])],
                                  tf.cast(x, tf.bfloat16), training=True)
    y32, _ = layer.stateless_call([tf.ones([4]), tf.zeros([4])], [tf.zeros([4]), tf.ones([4])], x, training=True)
    assert y16.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(y16, tf.float32).numpy(), y32.numpy(), atol=0.05)


def test_batch_norm_layers_are_found_in_nested_models_in_order():
    import keras

    from tfmeta.models import batch_norm_layers, conv4

    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4), BatchNorm(name="inner_bn")], name="inner")
    inputs = keras.Input((4,))
    x = keras.layers.BatchNormalization(name="keras_bn")(inputs)
    outputs = keras.layers.Dense(2)(inner(x))
    model = keras.Model(inputs, outputs)
    assert [layer.name for layer in batch_norm_layers(model)] == ["keras_bn", "inner_bn"]
    assert [layer.name for layer in batch_norm_layers(conv4(ways=3))] == ["bn0", "bn1", "bn2", "bn3"]
    assert batch_norm_layers(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])) == []
