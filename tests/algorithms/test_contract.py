"""One contract test for every gradient-based variant (meta-dataset style):
chance accuracy at initialisation, the loss falls under Adam, one episode can be
over-fitted, and adaptation never writes the learner's variables."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmeta import algorithms
from tfmeta.data.episode import Episode
from tfmeta.models import conv4, mlp

VARIANTS = sorted(algorithms.VARIANTS)
# Per-variant settings for the regression runs (Reptile takes more, smaller inner steps).
REGRESSION_KWARGS = {
    "reptile": dict(inner_steps=5, inner_lr=0.02),
    "maml++": dict(inner_steps=2, inner_lr=0.01),
}


def _sinusoids(meta_batch_size, shots=10, seed=0):
    try:
        from tfmeta.data.regression import sinusoid_tasks
    except ImportError:  # pragma: no cover - the data module is written separately
        sinusoid_tasks = None
    if sinusoid_tasks is not None:
        return iter(sinusoid_tasks(shots=shots, queries=shots, meta_batch_size=meta_batch_size, seed=seed))

    def generate():  # pragma: no cover
        rng = np.random.default_rng(seed)
        while True:
            x = rng.uniform(-5, 5, size=(meta_batch_size, 2 * shots, 1)).astype(np.float32)
            amp = rng.uniform(0.1, 5, size=(meta_batch_size, 1, 1))
            y = (amp * np.sin(x - rng.uniform(0, np.pi, size=(meta_batch_size, 1, 1)))).astype(np.float32)
            yield Episode(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:])

    return generate()


def _train(algo, batches, steps, learning_rate):
    optimizer = keras.optimizers.Adam(learning_rate)

    @tf.function
    def step(episodes):
        grads, metrics, state = algo.meta_gradients(episodes)
        optimizer.apply_gradients(zip(grads, algo.meta_variables))
        for variable, value in zip(algo.state_variables, state):
            variable.assign(value)
        return metrics["loss"]

    return [float(step(next(batches))) for _ in range(steps)]


def _regression_algo(variant, seed=0):
    keras.utils.set_random_seed(seed)
    kwargs = REGRESSION_KWARGS.get(variant, dict(inner_steps=1, inner_lr=0.01))
    return algorithms.build(variant, mlp(seed=seed), task="regression", **kwargs)


@pytest.mark.parametrize("variant", VARIANTS)
def test_initial_accuracy_is_chance_and_adapt_is_stateless(variant):
    ways, queries, tasks = 5, 10, 12
    model = conv4(ways=ways, input_shape=(16, 16, 1), filters=4, seed=1)
    algo = algorithms.build(variant, model, inner_steps=1, inner_lr=0.1)
    rng = np.random.default_rng(0)
    episodes = Episode(
        tf.constant(rng.uniform(size=(tasks, ways, 16, 16, 1)), tf.float32),
        tf.constant(np.stack([rng.permutation(ways) for _ in range(tasks)]), tf.int32),
        tf.constant(rng.uniform(size=(tasks, ways * queries, 16, 16, 1)), tf.float32),
        tf.constant(rng.integers(0, ways, size=(tasks, ways * queries)), tf.int32),
    )
    before = [v.numpy().copy() for v in model.variables]
    _, metrics, _ = algo.meta_gradients(episodes)
    algo.adapt(episodes.support_x[0], episodes.support_y[0])
    # 600 queries: the standard deviation of chance accuracy is ~0.016.
    assert abs(float(metrics["accuracy"]) - 1 / ways) < 0.07
    assert float(metrics["loss"]) == pytest.approx(np.log(ways), abs=1.0)
    for v, b in zip(model.variables, before):
        np.testing.assert_array_equal(v.numpy(), b, err_msg=v.path)


@pytest.mark.parametrize("variant", VARIANTS)
def test_meta_training_reduces_loss_on_sinusoids(variant):
    algo = _regression_algo(variant)
    held_out = next(_sinusoids(meta_batch_size=100, seed=123))  # the same 100 tasks before and after
    evaluate = tf.function(lambda episodes: algo.meta_gradients(episodes, training=True)[1]["loss"])
    before = float(evaluate(held_out))
    _train(algo, _sinusoids(meta_batch_size=8), steps=100, learning_rate=1e-2)
    after = float(evaluate(held_out))
    assert after < 0.85 * before, (before, after)


@pytest.mark.parametrize("variant", VARIANTS)
def test_one_episode_can_be_overfitted(variant):
    algo = _regression_algo(variant)
    episode = next(_sinusoids(meta_batch_size=1, seed=7))
    episode = Episode(episode.support_x, episode.support_y, episode.support_x, episode.support_y)
    repeat = iter(lambda: episode, None)
    losses = _train(algo, repeat, steps=120, learning_rate=5e-3)
    assert losses[-1] < 0.1 * losses[0], (losses[0], losses[-1])
