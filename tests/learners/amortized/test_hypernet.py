"""HyperNetworks: generated weights against a direct stateless_call, the head and FiLM by hand, zero-shot."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmeta import learners
from tfmeta.data import sinusoid_tasks
from tfmeta.learners import Learner
from tfmeta.learners.amortized import FiLMHyperNetwork, HyperHead, HyperNetwork, build_hypernet
from tfmeta.models import conv4, mlp

RNG = np.random.default_rng(0)
SUPPORT_X = RNG.uniform(-5, 5, (5, 1)).astype(np.float32)
SUPPORT_Y = (2 * np.sin(SUPPORT_X - 1)).astype(np.float32)
QUERY_X = np.linspace(-5, 5, 9, dtype=np.float32)[:, None]


def _dense(x, layer):
    return x @ layer.kernel.numpy() + layer.bias.numpy()


def _mlp_numpy(x, mlp_layer):
    for i, layer in enumerate(mlp_layer.dense):
        x = _dense(x, layer)
        if i < len(mlp_layer.dense) - 1:
            x = np.maximum(x, 0)
    return x


def test_generated_weights_are_theta0_plus_the_generator_and_run_through_stateless_call():
    target = mlp(hidden=(40, 40), seed=0)
    hypernet = HyperNetwork(target, encoder_sizes=(16, 16), generator_sizes=(16,), generator_scale=0.5, seed=1)
    assert hypernet.num_generated == 1 * 40 + 40 + 40 * 40 + 40 + 40 * 1 + 1  # 1,761: every weight of 1-40-40-1
    weights = hypernet.adapt(SUPPORT_X, SUPPORT_Y)
    # By hand: z = mean_i phi([x_i, y_i]); offsets = G(z); theta = theta_0 + offsets, in variable order.
    z = _mlp_numpy(np.concatenate([SUPPORT_X, SUPPORT_Y], axis=1), hypernet.encoder).mean(axis=0)
    offsets = _mlp_numpy(z[None], hypernet.generator)[0]
    start = 0
    for variable, generated in zip(target.trainable_variables, weights.trainable):
        size = int(np.prod(variable.shape))
        expected = variable.numpy() + offsets[start:start + size].reshape(variable.shape)
        np.testing.assert_allclose(generated.numpy(), expected, rtol=1e-4, atol=1e-5, err_msg=variable.path)
        start += size
    assert start == hypernet.num_generated
    # The prediction is the target network run on exactly those weights.
    direct, _ = target.stateless_call(weights.trainable, weights.non_trainable, QUERY_X)
    np.testing.assert_allclose(hypernet.predict(weights, QUERY_X).numpy(), direct.numpy(), rtol=1e-6)
    # ... and not the target's own weights (the support set matters).
    assert np.abs(direct.numpy() - target(QUERY_X).numpy()).max() > 1e-3
    other = hypernet.adapt(SUPPORT_X, -SUPPORT_Y)
    assert np.abs(hypernet.predict(other, QUERY_X).numpy() - direct.numpy()).max() > 1e-3


def test_padded_support_points_are_ignored():
    hypernet = HyperNetwork(mlp(hidden=(8,), seed=0), encoder_sizes=(8,), generator_sizes=(8,), seed=1)
    padded_x = np.concatenate([SUPPORT_X, np.full((3, 1), 7.0, np.float32)])
    padded_y = np.concatenate([SUPPORT_Y, np.full((3, 1), -9.0, np.float32)])
    mask = np.array([1] * 5 + [0] * 3, np.float32)
    expected = hypernet.predict(hypernet.adapt(SUPPORT_X[::-1].copy(), SUPPORT_Y[::-1].copy()), QUERY_X).numpy()
    got = hypernet.predict(hypernet.adapt_task(padded_x, padded_y, support_mask=mask), QUERY_X).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_meta_batch_at_once_equals_task_by_task():
    """The batched meta-gradients (the target under tf.vectorized_map) are the mean of the per-task ones,
    with padded support points and metadata."""
    hypernet = HyperNetwork(mlp(hidden=(8, 8), seed=0), encoder_sizes=(8,), generator_sizes=(8,), metadata_dim=2,
                            metadata_sizes=(4,), generator_scale=0.5, seed=1)
    batch = next(iter(sinusoid_tasks(5, 4, 6, seed=3, metadata_noise=0.1, min_shots=1)))
    grads, metrics, _ = hypernet.meta_gradients(batch)
    reference, reference_metrics, _ = Learner.meta_gradients(hypernet, batch)  # tf.map_fn over tasks
    for a, b in zip(grads, reference):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)
    assert max(float(tf.reduce_max(tf.abs(g))) for g in grads) > 1e-2
    np.testing.assert_allclose(float(metrics["mse"]), float(reference_metrics["mse"]), rtol=1e-5)
    np.testing.assert_allclose(hypernet.evaluate_tasks(batch)["mse"].numpy(),
                               Learner.evaluate_tasks(hypernet, batch)["mse"].numpy(), rtol=1e-5)


def _prior_mean_mse(episodes) -> float:
    """The MSE of the best predictor that ignores the task: E[A] * E_phase[sin(x - phase)] = 2.55 * (-2 cos(x) / pi)."""
    x, y = episodes.query_x.numpy(), episodes.query_y.numpy()
    return float(np.mean((y - 2.55 * (-2.0 * np.cos(x) / math.pi)) ** 2))


@pytest.mark.parametrize("name, steps, tasks", [("hypernet", 150, 25), ("cnp", 500, 16)])
def test_zero_shot_from_exact_metadata_beats_the_prior_mean(name, steps, tasks):
    """Trained with 0-5 support points and the exact amplitude and phase, at 0 shots the learner beats the
    best task-agnostic prediction (the prior mean) by far: it reads the description."""
    keras.utils.set_random_seed(0)
    if name == "hypernet":
        learner = HyperNetwork(mlp(hidden=(40, 40), seed=0), encoder_sizes=(32, 32), generator_sizes=(32,),
                               metadata_dim=2, metadata_sizes=(32, 32), seed=0)
    else:
        learner = learners.build("cnp", None, task="regression", encoder_sizes=(32, 32), decoder_sizes=(32, 32),
                                 metadata_dim=2, metadata_sizes=(32, 32), seed=0)
    optimizer = keras.optimizers.Adam(3e-3)

    @tf.function
    def step(batch):
        grads, metrics, _ = learner.meta_gradients(batch)
        optimizer.apply(grads, learner.meta_variables)
        return metrics["loss"]

    for batch in sinusoid_tasks(5, 10, tasks, seed=1, metadata_noise=0.0, min_shots=0).take(steps):
        step(batch)
    test = next(iter(sinusoid_tasks(0, 20, 200, seed=2, start_step=10**6, metadata_noise=0.0)))
    assert test.support_x.shape == (200, 0, 1)
    mse = float(tf.reduce_mean(tf.function(learner.evaluate_tasks)(test)["mse"]))
    prior = _prior_mean_mse(test)
    assert 3.0 < prior < 6.0, prior
    assert mse < 0.4 * prior, (mse, prior)


def test_head_starts_as_prototypical_networks_and_serves_any_number_of_classes():
    embedding = mlp(input_dim=4, hidden=(8,), outputs=6, seed=2)
    head = HyperHead(embedding, generator_sizes=(8,), seed=3)
    rng = np.random.default_rng(1)
    for ways in (2, 5):
        support = rng.normal(size=(2 * ways, 4)).astype(np.float32)
        labels = np.tile(np.arange(ways), 2).astype(np.int32)
        state = head.adapt(support, labels)
        e = embedding(support).numpy()
        means = np.stack([e[labels == k].mean(axis=0) for k in range(ways)])
        np.testing.assert_allclose(state["weights"].numpy(), means, rtol=1e-5, atol=1e-6)  # w_k = c_k
        np.testing.assert_allclose(state["biases"].numpy(), -0.5 * (means**2).sum(-1), rtol=1e-5, atol=1e-6)
        queries = rng.normal(size=(3, 4)).astype(np.float32)
        q = embedding(queries).numpy()
        logits = head.predict(state, queries).numpy()
        # = -|q - c_k|^2 / 2 + |q|^2 / 2: Prototypical Networks' logits, halved, plus a per-query constant.
        protonet = -0.5 * ((q[:, None] - means[None]) ** 2).sum(-1) + 0.5 * (q**2).sum(-1)[:, None]
        np.testing.assert_allclose(logits, protonet, rtol=1e-4, atol=1e-4)
    # After a change of the generator's output layer the head is no longer ProtoNet's: it is generated.
    last = head.generator.dense[-1]
    last.bias.assign(np.linspace(-1, 1, last.bias.shape[0]).astype(np.float32))
    assert np.abs(head.adapt(support, labels)["weights"].numpy() - means).max() > 0.1


def test_film_generates_batchnorm_scales_and_shifts_and_runs_through_stateless_call():
    body = conv4(ways=None, input_shape=(16, 16, 1), filters=4, seed=0)
    film = FiLMHyperNetwork(body, generator_sizes=(8,), seed=1)
    assert film.num_film == 2 * 4 * 4  # scale and shift of 4 channels in 4 BatchNorm layers
    last = film.generator.dense[-1]  # away from the identity start
    last.kernel.assign(np.random.default_rng(2).normal(size=last.kernel.shape).astype(np.float32) * 0.3)
    rng = np.random.default_rng(3)
    support = rng.random((6, 16, 16, 1), np.float32)
    labels = np.repeat(np.arange(3), 2).astype(np.int32)
    queries = rng.random((4, 16, 16, 1), np.float32)
    state = film.adapt(support, labels)
    offsets = state["film"].numpy()
    # By hand: gamma_l + dg_l and beta_l + db_l in the body's trainable values, then a direct stateless_call.
    values = [v.numpy() for v in body.trainable_variables]
    index = {id(v): i for i, v in enumerate(body.trainable_variables)}
    start = 0
    for layer in [l for l in body.layers if hasattr(l, "gamma")]:
        values[index[id(layer.gamma)]] = layer.gamma.numpy() + offsets[start:start + 4]
        values[index[id(layer.beta)]] = layer.beta.numpy() + offsets[start + 4:start + 8]
        start += 8
    moving = [v.numpy() for v in body.non_trainable_variables]
    e_support, _ = body.stateless_call(values, moving, support, training=False)
    e_query, _ = body.stateless_call(values, moving, queries, training=False)
    prototypes = np.stack([e_support.numpy()[labels == k].mean(0) for k in range(3)])
    expected = -((e_query.numpy()[:, None] - prototypes[None]) ** 2).sum(-1)
    np.testing.assert_allclose(film.predict(state, queries).numpy(), expected, rtol=1e-4, atol=1e-4)
    plain = -((body(queries, training=False).numpy()[:, None] - prototypes[None]) ** 2).sum(-1)
    assert np.abs(plain - expected).max() > 1e-3  # the conditioning changes the embedding


def test_builder_and_bad_arguments():
    assert isinstance(build_hypernet(mlp(), task="regression"), HyperNetwork)
    assert isinstance(learners.build("hypernet", mlp(input_dim=3, outputs=5)), HyperHead)
    assert learners.build("hypernet", conv4(None, input_shape=(16, 16, 1), filters=4), generate="film").any_ways
    with pytest.raises(ValueError, match="generate the head.*Received: task='classification'"):
        build_hypernet(mlp(), task="classification", generate="all")
    with pytest.raises(ValueError, match="makes a classifier. Received: task='regression'"):
        build_hypernet(mlp(), task="regression", generate="head")
    with pytest.raises(ValueError, match="Received: generate='weights'"):
        build_hypernet(mlp(), generate="weights")
    with pytest.raises(ValueError, match="has none. Received: embedding='mlp'"):
        FiLMHyperNetwork(mlp(input_dim=3, outputs=5))
    with pytest.raises(ValueError, match="Received: generator_scale=-1"):
        HyperNetwork(mlp(), generator_scale=-1)
    with pytest.raises(ValueError, match="adapts in one pass.*Received: steps=3"):
        HyperNetwork(mlp()).adapt(SUPPORT_X, SUPPORT_Y, steps=3)
