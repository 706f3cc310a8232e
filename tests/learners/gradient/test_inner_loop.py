"""The shared inner loop: hand-computed values, statelessness, first-order MAML."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmeta.learners import MAML, inner_loop
from tfmeta.data.episode import Episode
from tfmeta.models import conv4, mlp

XS, YS = np.array([1.0, 2.0, -1.0]), np.array([2.0, 3.0, -1.5])
XQ, YQ = np.array([0.5, -2.0]), np.array([1.0, -3.5])
W0, ALPHA = 0.7, 0.1


def _linear_model():
    """y = w x, no bias, float64, w = W0."""
    model = keras.Sequential(
        [keras.Input((1,), dtype="float64"), keras.layers.Dense(1, use_bias=False, dtype="float64")]
    )
    model.layers[-1].kernel.assign(np.array([[W0]], np.float64))
    return model


def _episode():
    col = lambda a: tf.constant(a[:, None], tf.float64)
    return Episode(col(XS), col(YS), col(XQ), col(YQ))


def _closed_form(first_order):
    # L_s(w) = mean((w xs - ys)^2); dL_s/dw = 2 mean(xs (w xs - ys)); d2L_s/dw2 = 2 mean(xs^2).
    w1 = W0 - ALPHA * 2 * np.mean(XS * (W0 * XS - YS))
    dw1_dw0 = 1.0 if first_order else 1.0 - ALPHA * 2 * np.mean(XS**2)
    query_loss = np.mean((w1 * XQ - YQ) ** 2)
    meta_grad = 2 * np.mean(XQ * (w1 * XQ - YQ)) * dw1_dw0
    return w1, query_loss, meta_grad


@pytest.mark.parametrize("first_order", [False, True])
def test_one_step_on_linear_model_matches_closed_form(first_order):
    algo = MAML(_linear_model(), task="regression", inner_steps=1, inner_lr=ALPHA, first_order=first_order)
    w1, query_loss, meta_grad = _closed_form(first_order)
    episode = _episode()
    fast = algo.adapt(episode.support_x, episode.support_y)
    np.testing.assert_allclose(float(tf.reshape(fast.trainable[0], [])), w1, rtol=1e-12)
    grads, metrics, _ = algo.meta_gradients(Episode(*(t[None] for t in episode)))
    np.testing.assert_allclose(float(metrics["loss"]), query_loss, rtol=1e-12)
    np.testing.assert_allclose(float(tf.reshape(grads[0], [])), meta_grad, rtol=1e-12)


def test_closed_form_values_are_as_derived():
    """Pins the derivation itself (w1 = 0.7 - 0.1 * 2 * mean(...))."""
    w1, _, g2 = _closed_form(False)
    _, _, g1 = _closed_form(True)
    assert w1 == pytest.approx(0.7 - 0.2 * np.mean([1.0 * (0.7 - 2.0), 2.0 * (1.4 - 3.0), -1.0 * (-0.7 + 1.5)]))
    assert g2 == pytest.approx(g1 * (1 - 0.2 * 2.0))


def test_first_order_grad_is_plain_gradient_at_adapted_weights():
    model = mlp(hidden=(8, 8), dtype="float64", seed=2)
    algo = MAML(model, task="regression", inner_steps=2, inner_lr=0.05, first_order=True)
    rng = np.random.default_rng(0)
    episode = Episode(*(tf.constant(rng.normal(size=(5, 1)), tf.float64) for _ in range(4)))
    fast = algo.adapt(episode.support_x, episode.support_y)
    with tf.GradientTape() as tape:
        tape.watch(fast.trainable)
        loss = tf.reduce_mean(tf.square(algo.predict(fast, episode.query_x) - episode.query_y))
    expected = tape.gradient(loss, fast.trainable)
    grads, _, _ = algo.meta_gradients(Episode(*(t[None] for t in episode)))
    for g, e in zip(grads, expected):
        np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-10, atol=1e-12)
    # and the adapted weights did move
    assert max(float(tf.reduce_max(tf.abs(f - v))) for f, v in zip(fast.trainable, model.trainable_variables)) > 1e-3


def test_adapt_leaves_model_variables_unchanged_and_returns_state():
    model = conv4(ways=3, input_shape=(16, 16, 1), filters=4, seed=0)
    algo = MAML(model, inner_steps=2, inner_lr=0.5)
    before = [v.numpy().copy() for v in model.variables]
    x = tf.random.stateless_uniform([6, 16, 16, 1], seed=[1, 2])
    y = tf.constant([0, 0, 1, 1, 2, 2])
    fast = algo.adapt(x, y)
    for v, b in zip(model.variables, before):
        np.testing.assert_array_equal(v.numpy(), b)
    # BatchNorm moving statistics moved in the returned state, not in the variables.
    moved = [float(tf.reduce_max(tf.abs(s - v))) for s, v in zip(fast.non_trainable, model.non_trainable_variables)]
    assert max(moved) > 1e-4
    assert max(float(tf.reduce_max(tf.abs(f - v))) for f, v in zip(fast.trainable, model.trainable_variables)) > 1e-4


def test_eval_inner_steps_and_steps_argument():
    model = mlp(hidden=(4,), dtype="float64", seed=0)
    algo = MAML(model, task="regression", inner_steps=1, inner_lr=0.01, eval_inner_steps=3)
    x = tf.constant(np.linspace(-1, 1, 5)[:, None], tf.float64)
    y = tf.sin(x)
    explicit = algo.adapt(x, y, steps=3)
    evaluated = algo.adapt(x, y, training=False)
    one = algo.adapt(x, y)
    np.testing.assert_allclose(evaluated.trainable[0].numpy(), explicit.trainable[0].numpy())
    assert float(tf.reduce_max(tf.abs(one.trainable[0] - explicit.trainable[0]))) > 1e-6
    zero = algo.adapt(x, y, steps=0)
    np.testing.assert_array_equal(zero.trainable[0].numpy(), model.trainable_variables[0].numpy())


def test_inner_loop_is_pure_function_of_given_weights():
    """Works on plain tensors with any forward function (no model variables)."""
    forward = lambda w, s, x: (x * w[0], s)
    loss_fn = lambda out, y: tf.reduce_mean(tf.square(out - y))
    x, y = tf.constant([[1.0], [2.0]]), tf.constant([[2.0], [4.0]])
    result = inner_loop(forward, loss_fn, [tf.constant(0.0)], [], x, y, steps=2, step_sizes=lambda s: [0.1])
    # w1 = 0 - 0.1 * 2 * mean(x (0 - y)) = 1.0; w2 = 1 - 0.1 * 2 * mean(x (x - y)) = 1.5
    assert float(result.trajectory[0][0]) == pytest.approx(1.0)
    assert float(result.trainable[0]) == pytest.approx(1.5)
    assert [float(l) for l in result.support_losses] == pytest.approx([10.0, 2.5])


def test_bad_arguments_are_named():
    model = mlp(hidden=(4,))
    with pytest.raises(ValueError, match="inner_steps=0"):
        MAML(model, inner_steps=0)
    with pytest.raises(ValueError, match="inner_lr=-1"):
        MAML(model, inner_lr=-1)
    with pytest.raises(ValueError, match="task='ranking'"):
        MAML(model, task="ranking")
    with pytest.raises(ValueError, match="steps=-1"):
        inner_loop(None, None, [], [], None, None, steps=-1, step_sizes=None)
    with pytest.raises(ValueError, match="adapt_variables"):
        MAML(model, adapt_variables=[keras.Variable(1.0)])


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(8, activation="tanh", dtype="float64")
        self.head = keras.layers.Dense(1, dtype="float64")

    def call(self, x):
        return self.head(self.hidden(x))


def _functional():
    inputs = keras.Input((1,), dtype="float64")
    hidden = keras.layers.Dense(8, activation="tanh", dtype="float64")(inputs)
    return keras.Model(inputs, keras.layers.Dense(1, dtype="float64")(hidden))


def _sequential():
    return keras.Sequential([
        keras.Input((1,), dtype="float64"),
        keras.layers.Dense(8, activation="tanh", dtype="float64"),
        keras.layers.Dense(1, dtype="float64"),
    ])


def test_sequential_functional_and_subclassed_learners_agree():
    subclassed = _Subclassed()
    subclassed(tf.zeros([1, 1], tf.float64))
    models = [_sequential(), _functional(), subclassed]
    values = [v.numpy() for v in models[0].trainable_variables]
    for model in models[1:]:
        for v, value in zip(model.trainable_variables, values):
            v.assign(value)
    rng = np.random.default_rng(3)
    batch = Episode(*(tf.constant(rng.normal(size=(2, 4, 1)), tf.float64) for _ in range(4)))
    results = [MAML(m, task="regression", inner_steps=2, inner_lr=0.1).meta_gradients(batch) for m in models]
    for grads, metrics, _ in results[1:]:
        np.testing.assert_allclose(float(metrics["loss"]), float(results[0][1]["loss"]), rtol=1e-12)
        for g, ref in zip(grads, results[0][0]):
            np.testing.assert_allclose(g.numpy(), ref.numpy(), rtol=1e-10, atol=1e-14)
    assert float(tf.reduce_max(tf.abs(results[0][0][0]))) > 1e-6
