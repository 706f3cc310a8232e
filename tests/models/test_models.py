"""Built-in learners and the differentiable BatchNorm."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmeta.models import BatchNorm, conv4, mlp


def test_conv4_shapes_and_layers():
    model = conv4(ways=5)
    assert model(tf.zeros([3, 28, 28, 1])).shape == (3, 5)
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    assert [(c.filters, c.kernel_size, c.padding) for c in convs] == [(64, (3, 3), "same")] * 4
    assert sum(isinstance(l, BatchNorm) for l in model.layers) == 4
    assert sum(isinstance(l, keras.layers.MaxPooling2D) for l in model.layers) == 4
    # 4 x (conv kernel + bias + gamma + beta) + dense kernel + bias
    assert len(model.trainable_variables) == 18
    assert model.layers[-1].kernel.shape == (64, 5)  # 28 -> 14 -> 7 -> 3 -> 1


def test_mlp_shapes_and_float64():
    model = mlp(dtype="float64")
    assert [tuple(v.shape) for v in model.trainable_variables] == [(1, 40), (40,), (40, 40), (40,), (40, 1), (1,)]
    assert all(v.dtype == "float64" for v in model.variables)
    assert model(tf.zeros([2, 1], tf.float64)).dtype == tf.float64


def test_conv4_float64_and_seed_is_deterministic():
    a = conv4(ways=3, input_shape=(16, 16, 1), filters=2, dtype="float64", seed=5)
    b = conv4(ways=3, input_shape=(16, 16, 1), filters=2, dtype="float64", seed=5)
    assert all(v.dtype == "float64" for v in a.variables)
    for x, y in zip(a.trainable_variables, b.trainable_variables):
        np.testing.assert_array_equal(x.numpy(), y.numpy())


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="ways=0"):
        conv4(ways=0)
    with pytest.raises(ValueError, match=r"input_shape=\(8, 8, 1\)"):
        conv4(ways=5, input_shape=(8, 8, 1))
    with pytest.raises(ValueError, match=r"hidden\[1\]=0"):
        mlp(hidden=(40, 0))
    with pytest.raises(ValueError, match="momentum=1.5"):
        BatchNorm(momentum=1.5)


def _bn_model(momentum=0.9):
    return keras.Sequential([keras.Input((4, 4, 3), dtype="float64"), BatchNorm(momentum=momentum, dtype="float64")])


def test_batchnorm_training_uses_batch_statistics_and_returns_moving_update():
    model = _bn_model()
    x = tf.constant(np.random.default_rng(0).normal(2.0, 3.0, size=(5, 4, 4, 3)))
    trainable = [v.value for v in model.trainable_variables]
    state = [v.value for v in model.non_trainable_variables]
    y, new_state = model.stateless_call(trainable, state, x, training=True)
    np.testing.assert_allclose(tf.reduce_mean(y, [0, 1, 2]).numpy(), 0.0, atol=1e-12)
    mean, var = x.numpy().reshape(-1, 3).mean(0), x.numpy().reshape(-1, 3).var(0)
    expected_std = np.sqrt(var / (var + 1e-3))  # epsilon = 1e-3
    np.testing.assert_allclose(tf.math.reduce_std(y, [0, 1, 2]).numpy(), expected_std, rtol=1e-9)
    np.testing.assert_allclose(new_state[0].numpy(), 0.1 * mean, rtol=1e-12)
    np.testing.assert_allclose(new_state[1].numpy(), 0.9 + 0.1 * var, rtol=1e-12)
    # variables untouched by stateless_call
    np.testing.assert_array_equal(model.non_trainable_variables[0].numpy(), 0.0)


def test_batchnorm_inference_uses_moving_statistics():
    model = _bn_model()
    layer = model.layers[-1]
    layer.moving_mean.assign(np.array([1.0, 2.0, 3.0]))
    layer.moving_variance.assign(np.array([4.0, 4.0, 4.0]))
    x = tf.ones([2, 4, 4, 3], tf.float64)
    y = model(x, training=False).numpy()
    np.testing.assert_allclose(y[0, 0, 0], (1.0 - np.array([1.0, 2.0, 3.0])) / np.sqrt(4.0 + 1e-3), rtol=1e-12)


def test_batchnorm_second_derivative_flows_through_the_mean():
    """Gradient of a function of the weight gradient (what MAML differentiates) matches
    finite differences; `tf.nn.moments` (mean stopped inside the variance) does not."""
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(6, 3)))
    w0 = tf.constant(rng.normal(size=(3, 2)))
    c = tf.constant(rng.normal(size=(6, 2)))
    layer = BatchNorm(dtype="float64")
    layer.build((6, 2))

    def stopped(t):
        mean, var = tf.nn.moments(t, [0])
        return (t - mean) * tf.math.rsqrt(var + 1e-3)

    def s_of(norm, w):
        with tf.GradientTape() as tape:
            tape.watch(w)
            out = tf.reduce_sum(tf.sin(norm(x @ w)) * c)
        g = tape.gradient(out, w)
        return tf.reduce_sum(g * g)

    def second(norm):
        with tf.GradientTape() as outer:
            outer.watch(w0)
            s = s_of(norm, w0)
        return outer.gradient(s, w0)[1, 0]

    ours = lambda t: layer(t, training=True)
    h = 1e-6
    e = np.zeros((3, 2))
    e[1, 0] = h
    numeric = float((s_of(ours, w0 + e) - s_of(ours, w0 - e)) / (2 * h))
    assert float(second(ours)) == pytest.approx(numeric, rel=1e-6)
    assert abs(float(second(stopped)) - numeric) > 1e-3 * abs(numeric)
