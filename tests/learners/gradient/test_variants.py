"""ANIL, Meta-SGD, MAML++ options, the factory, config and tracing."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmeta import learners
from tfmeta.learners import ANIL, MAML, MetaSGD, Reptile, build, cosine_annealing, multi_step_loss_weights
from tfmeta.learners.base import parallel_tasks
from tfmeta.data.episode import Episode
from tfmeta.models import conv4, mlp


def _sinusoid_batch(tasks=3, shots=5, seed=0, dtype=tf.float64):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-5, 5, size=(tasks, 2 * shots, 1))
    y = rng.uniform(0.5, 3, size=(tasks, 1, 1)) * np.sin(x - rng.uniform(0, 3, size=(tasks, 1, 1)))
    c = lambda a: tf.constant(a, dtype)
    return Episode(c(x[:, :shots]), c(y[:, :shots]), c(x[:, shots:]), c(y[:, shots:]))


def _image_batch(tasks=2, ways=3, shots=1, queries=2, seed=0):
    rng = np.random.default_rng(seed)
    sx = rng.uniform(size=(tasks, ways * shots, 16, 16, 1)).astype(np.float32)
    qx = rng.uniform(size=(tasks, ways * queries, 16, 16, 1)).astype(np.float32)
    sy = np.tile(np.repeat(np.arange(ways), shots), (tasks, 1)).astype(np.int32)
    qy = np.tile(np.repeat(np.arange(ways), queries), (tasks, 1)).astype(np.int32)
    return Episode(tf.constant(sx), tf.constant(sy), tf.constant(qx), tf.constant(qy))


def test_metasgd_learning_rates_get_nonzero_gradients():
    algo = MetaSGD(mlp(hidden=(8,), dtype="float64", seed=0), task="regression", inner_lr=0.01)
    assert len(algo.extra_variables) == len(algo.model.trainable_variables)
    grads, _, _ = algo.meta_gradients(_sinusoid_batch())
    assert len(grads) == len(algo.meta_variables)
    lr_grads = grads[len(algo.model.trainable_variables):]
    for g, alpha in zip(lr_grads, algo.extra_variables):
        assert g.shape == alpha.shape
        assert float(tf.reduce_max(tf.abs(g))) > 1e-6
    rates = algo.inner_learning_rates()
    assert [r.shape for r in rates.values()] == [tuple(v.shape) for v in algo.model.trainable_variables]


def test_lslr_learning_rates_get_nonzero_gradients_per_step():
    algo = MAML(mlp(hidden=(8,), dtype="float64", seed=0), task="regression", inner_steps=3, inner_lr=0.01,
                learn_inner_lr=True)
    grads, _, _ = algo.meta_gradients(_sinusoid_batch())
    lr_grads = grads[len(algo.model.trainable_variables):]
    assert len(lr_grads) == len(algo.model.trainable_variables)
    for g in lr_grads:
        assert g.shape == (3,)
        assert float(tf.reduce_min(tf.abs(g))) > 1e-8  # every step's rate is used
    assert all(r.shape == (3,) for r in algo.inner_learning_rates().values())


def test_anil_adapts_head_only_but_meta_learns_body():
    model = conv4(ways=3, input_shape=(16, 16, 1), filters=4, seed=0)
    algo = ANIL(model, inner_lr=0.5, inner_steps=2)
    head = {id(v) for v in model.layers[-1].trainable_variables}
    assert {id(v) for v in algo.adapted_variables} == head
    batch = _image_batch()
    fast = algo.adapt(*batch.task(0)[:2])
    for value, var in zip(fast.trainable, model.trainable_variables):
        change = float(tf.reduce_max(tf.abs(value - var)))
        if id(var) in head:
            assert change > 1e-5
        else:
            assert change == 0.0
    grads, _, _ = algo.meta_gradients(batch)
    assert float(tf.reduce_max(tf.abs(grads[0]))) > 0  # first conv kernel: learned by the outer loop
    assert list(algo.inner_learning_rates()) == [v.path for v in model.layers[-1].trainable_variables]


def test_anil_with_user_subset():
    model = mlp(hidden=(4, 4))
    subset = model.layers[1].trainable_variables
    algo = ANIL(model, task="regression", adapt_variables=subset)
    assert algo.config()["adapt_variables"] == [v.path for v in subset]


def test_multi_step_loss_weights_anneal_as_in_maml_plus_plus():
    weights = lambda step: multi_step_loss_weights(step, steps=5, anneal_steps=100).numpy()
    np.testing.assert_allclose(weights(0), [0.2] * 5, rtol=1e-6)
    np.testing.assert_allclose(weights(50), [0.1] * 4 + [0.6], rtol=1e-6)
    np.testing.assert_allclose(weights(1000), [0.006] * 4 + [1 - 4 * 0.006], rtol=1e-5)
    assert weights(1000).sum() == pytest.approx(1.0)
    assert multi_step_loss_weights(tf.constant(50, tf.int64), 5, 100, tf.float64).dtype == tf.float64


def test_multi_step_loss_follows_the_step_it_is_given():
    """The weights come from the `step` argument (the loop's counter): no state in the learner."""
    model = mlp(hidden=(8,), dtype="float64", seed=0)
    batch = _sinusoid_batch()
    plain = MAML(model, task="regression", inner_steps=3, inner_lr=0.01)
    msl = MAML(model, task="regression", inner_steps=3, inner_lr=0.01, multi_step_loss=True, msl_anneal_steps=100)
    _, m_plain, _ = plain.meta_gradients(batch)
    _, m_msl, _ = msl.meta_gradients(batch, step=0)
    assert float(m_msl["loss"]) > float(m_plain["loss"])  # earlier steps have higher query loss
    # Fully annealed, the loss is almost the final step's: 0.01 * two earlier losses + 0.98 * the last.
    _, m_late, _ = msl.meta_gradients(batch, step=10**6)
    assert float(m_plain["loss"]) < float(m_late["loss"]) < float(m_msl["loss"])
    _, m_again, _ = msl.meta_gradients(batch, step=0)  # a pure function of its arguments
    assert float(m_again["loss"]) == float(m_msl["loss"])
    with pytest.raises(ValueError, match="Received: step=None"):
        msl.meta_gradients(batch)


def test_per_step_batchnorm_statistics():
    model = conv4(ways=3, input_shape=(16, 16, 1), filters=4, seed=0)
    algo = MAML(model, inner_steps=2, inner_lr=0.5, per_step_bn_stats=True)
    expected = [(3,) + tuple(v.shape) for v in model.non_trainable_variables]  # inner_steps + 1 copies
    assert [tuple(v.shape) for v in algo.state_variables] == expected
    _, _, state = algo.meta_gradients(_image_batch())
    for value, var in zip(state, algo.state_variables):
        assert value.shape == var.shape
        changes = [float(tf.reduce_max(tf.abs(value[s] - var[s]))) for s in range(3)]
        assert min(changes) > 0  # each step's copy is updated by its own pass
    # copies differ from each other: step 1 and 2 see different (adapted) weights
    assert float(tf.reduce_max(tf.abs(state[0][1] - state[0][2]))) > 0


def test_build_factory_and_json_config():
    model = mlp(hidden=(4,))
    expected = {"maml": MAML, "fomaml": MAML, "anil": ANIL, "metasgd": MetaSGD, "maml++": MAML, "reptile": Reptile}
    for variant, cls in expected.items():
        algo = build(variant, model, task="regression", inner_steps=2, inner_lr=0.05)
        assert type(algo) is cls
        config = json.loads(json.dumps(algo.config()))
        assert config["learner"] == variant == algo.name
        assert config["inner_steps"] == 2 and config["inner_lr"] == 0.05
        json.dumps(algo.card())
    assert build("fomaml", model).first_order
    plus = build("maml++", model, inner_steps=2).config()
    assert plus["learned_inner_lr"] == "per_layer_per_step" and plus["multi_step_loss"] and plus["per_step_bn_stats"]
    assert not plus["per_step_bn_weights"]  # the MLP has no BatchNorm
    assert build("maml++", conv4(ways=3, input_shape=(16, 16, 1), filters=2)).config()["per_step_bn_weights"]
    with pytest.raises(ValueError, match="Received: 'mamll'"):
        build("mamll", model)
    with pytest.raises(ValueError, match="first_order=False"):
        build("fomaml", model, first_order=False)
    assert set(learners.names("gradient")) == {"maml", "fomaml", "anil", "metasgd", "maml++", "reptile"}


def test_meta_gradients_do_not_retrace_across_same_shaped_batches():
    algo = MAML(mlp(hidden=(8,)), task="regression", inner_steps=2, inner_lr=0.01)
    traces = []

    @tf.function
    def step(episodes):
        traces.append(1)
        grads, metrics, _ = algo.meta_gradients(episodes)
        return metrics["loss"]

    first = step(_sinusoid_batch(seed=0, dtype=tf.float32))
    second = step(_sinusoid_batch(seed=1, dtype=tf.float32))
    assert len(traces) == 1
    assert step.experimental_get_tracing_count() == 1
    assert float(first) != float(second)


@pytest.mark.parametrize("threads, expected", [(3, 3), (1, 1), (64, 10)])
def test_tasks_in_flight_follow_the_inter_op_threads(monkeypatch, threads, expected):
    """The meta-batch's map_fn runs as many tasks at once as TensorFlow runs ops
    (inter-op threads), at most 10: each task in flight holds its activations."""
    monkeypatch.setattr(tf.config.threading, "get_inter_op_parallelism_threads", lambda: threads)
    assert parallel_tasks() == expected
    algo = MAML(mlp(hidden=(8,)), task="regression", inner_steps=1, inner_lr=0.01)
    graph = tf.function(algo.meta_gradients).get_concrete_function(_sinusoid_batch(dtype=tf.float32)).graph
    loops = [op for op in graph.get_operations() if op.type in ("While", "StatelessWhile")]
    assert [op.get_attr("parallel_iterations") for op in loops] == [expected]


def test_tasks_in_flight_default_to_the_cpus(monkeypatch):
    monkeypatch.setattr(tf.config.threading, "get_inter_op_parallelism_threads", lambda: 0)
    assert parallel_tasks() == min(10, len(os.sched_getaffinity(0)))


def test_non_float_state_is_not_averaged():
    """A seed generator's integer state (Dropout) is carried, not averaged."""
    model = keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(4), keras.layers.Dropout(0.5), keras.layers.Dense(1)]
    )
    algo = MAML(model, task="regression", inner_lr=0.01)
    int_states = [v for v in model.non_trainable_variables if not v.dtype.startswith("float")]
    assert int_states, "expected a seed-generator state"
    _, _, state = algo.meta_gradients(_sinusoid_batch(dtype=tf.float32))
    for value, var in zip(state, model.non_trainable_variables):
        assert value.dtype == var.dtype


def test_cosine_annealing_schedule():
    schedule = cosine_annealing(1e-3, 100, 1e-5)
    assert float(schedule(0)) == pytest.approx(1e-3)
    assert float(schedule(50)) == pytest.approx(1e-5 + (1e-3 - 1e-5) / 2, rel=1e-5)
    assert float(schedule(100)) == pytest.approx(1e-5)
    assert float(schedule(1000)) == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="total_steps=0"):
        cosine_annealing(1e-3, 0)


def test_per_step_statistics_with_more_eval_steps_than_training_steps():
    model = conv4(ways=3, input_shape=(16, 16, 1), filters=4, seed=0)
    algo = MAML(model, inner_steps=2, eval_inner_steps=4, inner_lr=0.5, per_step_bn_stats=True,
                multi_step_loss=True, learn_inner_lr=True)
    batch = _image_batch()
    loss, metrics, state = algo.task_loss(batch.task(0), step=0, training=False)
    assert np.isfinite(float(loss)) and [s.shape for s in state] == [v.shape for v in algo.state_variables]
    fast = algo.adapt(*batch.task(0)[:2], training=False)
    # the query runs with the last step's copy of the statistics
    for value, var in zip(fast.non_trainable, algo.state_variables):
        np.testing.assert_array_equal(value.numpy(), var.numpy()[2])
    assert algo.predict(fast, batch.query_x[0], training=False).shape == (6, 3)


def test_per_step_batchnorm_weights_are_meta_learned_per_step():
    model = conv4(ways=3, input_shape=(16, 16, 1), filters=4, seed=0)
    algo = MAML(model, inner_steps=2, inner_lr=0.5, per_step_bn_weights=True)
    bn_weights = [v for layer in model.layers if "bn" in layer.name for v in layer.trainable_variables]
    assert len(bn_weights) == 8  # gamma and beta of four blocks
    bn_ids = {id(v) for v in bn_weights}
    assert not bn_ids & {id(v) for v in algo.meta_variables}  # replaced by the per-step copies
    assert not bn_ids & {id(v) for v in algo.adapted_variables}  # and never adapted
    copies = algo.extra_variables
    assert [tuple(c.shape) for c in copies] == [(3, 4)] * 8  # inner_steps + 1 copies each

    batch = _image_batch()
    grads, _, _ = algo.meta_gradients(batch)
    assert len(grads) == len(algo.meta_variables)
    for grad in grads[-8:]:
        per_step = tf.reduce_max(tf.abs(grad), axis=1).numpy()
        assert per_step.min() > 0, per_step  # every step's copy is used: inner steps 0, 1 and the query

    # Copy k is what step k runs with: changing copies 1 and 2 changes nothing before the first step.
    support_x, support_y, query_x, _ = batch.task(0)
    before = [algo.predict(algo.adapt(support_x, support_y, steps=s), query_x).numpy() for s in (0, 2)]
    for copy in copies:
        copy.assign(copy.numpy() * np.array([[1.0], [1.7], [0.6]]))
    after = [algo.predict(algo.adapt(support_x, support_y, steps=s), query_x).numpy() for s in (0, 2)]
    np.testing.assert_array_equal(before[0], after[0])
    assert np.abs(before[1] - after[1]).max() > 1e-3


def test_per_step_batchnorm_weights_need_batchnorm():
    with pytest.raises(ValueError, match="needs BatchNorm layers.*model 'mlp'"):
        MAML(mlp(hidden=(4,)), task="regression", per_step_bn_weights=True)
    model = conv4(ways=3, input_shape=(16, 16, 1), filters=2)
    with pytest.raises(ValueError, match="BatchNorm weights only"):
        MAML(model, per_step_bn_weights=True, adapt_variables=model.layers[1].trainable_variables)


def test_derivative_order_annealing_switches_to_second_order():
    model = mlp(hidden=(8, 8), dtype="float64", seed=1)
    batch = _sinusoid_batch()
    first, _, _ = MAML(model, task="regression", inner_steps=2, inner_lr=0.05, first_order=True).meta_gradients(batch)
    second, _, _ = MAML(model, task="regression", inner_steps=2, inner_lr=0.05).meta_gradients(batch)
    assert max(float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(first, second)) > 1e-4

    annealed = MAML(model, task="regression", inner_steps=2, inner_lr=0.05, first_order_steps=2)
    assert annealed.name == "maml++" and annealed.config()["first_order_steps"] == 2
    gradients = tf.function(lambda episodes, step: annealed.meta_gradients(episodes, step=step)[0])
    for meta_step, expected in enumerate([first, first, second, second]):
        grads = gradients(batch, tf.constant(meta_step, tf.int64))
        for g, e in zip(grads, expected):
            np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-10, atol=1e-12)
    assert gradients.experimental_get_tracing_count() == 1  # one trace holds both orders
    with pytest.raises(ValueError, match="Received: step=None"):
        annealed.meta_gradients(batch)
