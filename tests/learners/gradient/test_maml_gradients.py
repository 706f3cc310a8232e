"""Second-order MAML meta-gradients against central finite differences (float64),
and why tfmeta ships its own BatchNorm."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfmeta
from tfmeta.learners import ANIL, MAML, MetaSGD
from tfmeta.data.episode import Episode
from tfmeta.models import BatchNorm, conv4, mlp
from tfmeta.testing import finite_difference_error


def _regression_episode(seed, shots=6, queries=7):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, size=(shots + queries, 1))
    y = 1.5 * np.sin(x + 0.3)
    return Episode(*(tf.constant(a, tf.float64) for a in (x[:shots], y[:shots], x[shots:], y[shots:])))


def _classification_episode(seed, ways=3, shots=2, queries=2, size=16):
    rng = np.random.default_rng(seed)
    sx = rng.uniform(size=(ways * shots, size, size, 1))
    qx = rng.uniform(size=(ways * queries, size, size, 1))
    sy = np.repeat(np.arange(ways), shots).astype(np.int32)
    qy = np.repeat(np.arange(ways), queries).astype(np.int32)
    return Episode(tf.constant(sx, tf.float64), tf.constant(sy), tf.constant(qx, tf.float64), tf.constant(qy))


def _tiny_conv(norm_layer, ways=3, size=16, filters=2):
    """Conv-4 shape with a chosen BatchNorm class, float64."""
    keras.utils.set_random_seed(3)
    layers = [keras.Input((size, size, 1), dtype="float64")]
    for _ in range(4):
        layers += [
            keras.layers.Conv2D(filters, 3, padding="same", dtype="float64"),
            norm_layer(dtype="float64"),
            keras.layers.ReLU(dtype="float64"),
            keras.layers.MaxPooling2D(2, dtype="float64"),
        ]
    layers += [keras.layers.Flatten(dtype="float64"), keras.layers.Dense(ways, dtype="float64")]
    return keras.Sequential(layers)


@pytest.mark.parametrize("steps", [1, 3])
def test_second_order_matches_finite_differences_mlp(steps):
    model = mlp(hidden=(8, 8), dtype="float64", seed=1)
    algo = MAML(model, task="regression", inner_steps=steps, inner_lr=0.05)
    assert finite_difference_error(algo, _regression_episode(0)) < 1e-6


@pytest.mark.parametrize("steps", [1, 3])
def test_second_order_matches_finite_differences_conv_with_tfmeta_batchnorm(steps):
    algo = MAML(_tiny_conv(BatchNorm), inner_steps=steps, inner_lr=0.3)
    assert finite_difference_error(algo, _classification_episode(1)) < 1e-6


def test_builtin_conv4_matches_finite_differences():
    model = conv4(ways=3, input_shape=(16, 16, 1), filters=2, dtype="float64", seed=0)
    algo = MAML(model, inner_steps=2, inner_lr=0.3)
    assert finite_difference_error(algo, _classification_episode(2), directions=2) < 1e-6


def test_maml_plus_plus_matches_finite_differences():
    """LSLR, multi-step loss, per-step BatchNorm statistics and weights, all at once."""
    algo = tfmeta.learners.build("maml++", _tiny_conv(BatchNorm), inner_steps=2, inner_lr=0.3)
    config = algo.config()
    assert config["per_step_bn_weights"] and config["per_step_bn_stats"] and config["multi_step_loss"]
    assert config["learned_inner_lr"] == "per_layer_per_step"
    for copy in algo.extra_variables:  # distinct values per step (+ 0.1: BatchNorm offsets start at zero)
        scale = np.linspace(0.8, 1.2, copy.shape[0]).reshape((-1,) + (1,) * (len(copy.shape) - 1))
        copy.assign((copy.numpy() + 0.1) * scale)
    # step 1000 of msl_anneal_steps=5000: the multi-step loss weights are part-way through their annealing.
    assert finite_difference_error(algo, _classification_episode(3), step=1000) < 1e-6


@pytest.mark.parametrize("steps", [1, 2])
def test_metasgd_matches_finite_differences(steps):
    """The per-parameter learned rates are meta-variables too: their gradients are checked with the rest."""
    algo = MetaSGD(mlp(hidden=(8, 8), dtype="float64", seed=4), task="regression", inner_steps=steps, inner_lr=0.05)
    for alpha in algo.extra_variables:  # distinct rates per parameter (they start all equal)
        alpha.assign(alpha.numpy() * np.random.default_rng(1).uniform(0.5, 1.5, alpha.shape))
    assert len(algo.meta_variables) == 2 * len(algo.model.trainable_variables)
    assert finite_difference_error(algo, _regression_episode(5)) < 1e-6


def test_anil_matches_finite_differences():
    """Only the head adapts; the body's meta-gradient flows through the adapted head (second order)."""
    algo = ANIL(_tiny_conv(BatchNorm), inner_steps=2, inner_lr=0.3)
    assert len(algo.adapted_variables) == 2  # the Dense head's kernel and bias
    assert finite_difference_error(algo, _classification_episode(6)) < 1e-6


def test_keras_batchnorm_second_order_is_wrong_ours_is_exact():
    episode = _classification_episode(4)
    keras_error = finite_difference_error(MAML(_tiny_conv(keras.layers.BatchNormalization), inner_lr=0.3), episode)
    ours_error = finite_difference_error(MAML(_tiny_conv(BatchNorm), inner_lr=0.3), episode)
    assert keras_error > 1e-4, keras_error
    assert ours_error < 1e-6, ours_error


def test_first_order_differs_from_second_order():
    """Guards against a silently first-order 'second-order' path."""
    model = mlp(hidden=(8, 8), dtype="float64", seed=1)
    batch = Episode(*(t[None] for t in _regression_episode(0)))
    second, _, _ = MAML(model, task="regression", inner_lr=0.05).meta_gradients(batch)
    first, _, _ = MAML(model, task="regression", inner_lr=0.05, first_order=True).meta_gradients(batch)
    diff = max(float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(second, first))
    assert diff > 1e-4
