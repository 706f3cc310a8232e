"""The LSTM meta-learner (Ravi & Larochelle 2017): preprocessing, SGD start, gate wiring, meta-gradients,
learning, resume, MirroredStrategy, export round trips and errors."""

import json
import math
import os
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmeta import learners, models
from tfmeta.data.episode import Episode
from tfmeta.learners.recurrent import LSTMMetaLearner, preprocess
from tfmeta.testing import finite_difference_error

ROOT = pathlib.Path(__file__).resolve().parents[3]


def mlp_learner(seed=0, dtype="float64", **kwargs):
    keras.utils.set_random_seed(seed)
    network = models.mlp(input_dim=2, hidden=(6,), outputs=3, dtype=dtype, seed=seed)
    return LSTMMetaLearner(network, **{"inner_steps": 2, "inner_lr": 0.1, "hidden_size": 3, "seed": seed, **kwargs})


def blob_episode(rng, ways=3, shots=4, queries=4, dtype=np.float64, spread=0.4):
    """A task of `ways` Gaussian blobs in 2-D: centres drawn per task, labels permuted per task."""
    centres = rng.normal(0, 2.0, (ways, 2))
    labels = rng.permutation(ways)  # class k of this task is blob labels[k]: no fixed blob-label map

    def draw(n):
        y = np.repeat(np.arange(ways), n)
        x = centres[labels[y]] + rng.normal(0, spread, (ways * n, 2))
        return tf.constant(x, dtype), tf.constant(y, tf.int32)

    return Episode(*draw(shots), *draw(queries))


def randomise_gates(learner, rng, scale=0.5):
    """Non-zero gate kernels (at initialisation they are zero), so every gate input matters."""
    for v in (learner.forget_kernel, learner.input_kernel):
        v.assign(rng.normal(0, scale, v.shape))


# ------------------------------------------------------------------ preprocessing


def test_preprocessing_on_hand_computed_values():
    # p = 10: threshold exp(-10) = 4.54e-5.
    x = tf.constant([1.0, -math.exp(-2), 1e-5, -3e-6, 0.0, 5e-5], tf.float64)
    expected = [
        [0.0, 1.0],                       # log(1)/10, sign
        [-0.2, -1.0],                     # log(e^-2)/10, sign
        [-1.0, 0.22026465794806716],      # small: (-1, e^10 * 1e-5)
        [-1.0, -0.06607939738442015],     # e^10 * -3e-6
        [-1.0, 0.0],                      # zero: the small branch
        [-0.990348, 1.0],                 # just above the threshold: log(5e-5)/10 = -0.990348
    ]
    np.testing.assert_allclose(preprocess(x).numpy(), expected, atol=1e-6)
    # Another p: the threshold moves to exp(-2) = 0.135.
    np.testing.assert_allclose(preprocess(tf.constant([0.5, 0.1], tf.float64), p=2.0).numpy(),
                               [[math.log(0.5) / 2, 1.0], [-1.0, math.exp(2) * 0.1]], atol=1e-12)
    with tf.GradientTape() as tape:  # finite derivatives at 0 (no log(0) on the unused branch)
        zero = tf.constant([0.0, -1e-7], tf.float64)
        tape.watch(zero)
        out = preprocess(zero)
    assert np.all(np.isfinite(tape.gradient(out, zero).numpy()))


# ------------------------------------------------------------------ the update


def support_gradient(learner, episode):
    weights = learner.initial_weights()
    with tf.GradientTape() as tape:
        tape.watch(weights.trainable)
        outputs, _ = learner.call_network(weights, episode.support_x)
        loss = learner.loss_and_metrics(outputs, episode.support_y)[0]
    return [w.numpy() for w in weights.trainable], [g.numpy() for g in tape.gradient(loss, weights.trainable)]


@pytest.mark.parametrize("hidden_size", [0, 3])
def test_first_update_at_initialisation_is_an_sgd_step(hidden_size):
    """With the gate biases at their SGD initialisation (f = 1, i = inner_lr) the first update is
    theta - inner_lr * g to float64 round-off; with the default forget bias, f = sigmoid(5) decays theta."""
    episode = blob_episode(np.random.default_rng(0))
    sgd = mlp_learner(hidden_size=hidden_size, forget_bias=40.0, inner_lr=0.1)  # sigmoid(40) = 1 in float64
    theta, grads = support_gradient(sgd, episode)
    adapted = sgd.adapt(episode.support_x, episode.support_y, steps=1).trainable
    for a, t, g in zip(adapted, theta, grads):
        np.testing.assert_allclose(a.numpy(), t - 0.1 * g, rtol=0, atol=1e-12)
    assert max(np.abs(g).max() for g in grads) > 1e-2  # the step is not trivially zero
    default = mlp_learner(hidden_size=hidden_size, inner_lr=0.1)
    adapted = default.adapt(episode.support_x, episode.support_y, steps=1).trainable
    f = 1 / (1 + math.exp(-5.0))
    for a, t, g in zip(adapted, theta, grads):
        np.testing.assert_allclose(a.numpy(), f * t - 0.1 * g, rtol=0, atol=1e-12)
    assert default.gates_at_start() == pytest.approx({"forget": f, "input": 0.1})


def numpy_reference(learner, episode, steps):
    """The update rule of the class docstring written again in numpy, gate by gate."""
    sig = lambda z: 1 / (1 + np.exp(-z))

    def pre(x, p=10.0):
        small = np.abs(x) < math.exp(-p)
        return np.stack([np.where(small, -1.0, np.log(np.maximum(np.abs(x), 1e-300)) / p),
                         np.where(small, math.exp(p) * x, np.sign(x))], -1)

    weights = learner.initial_weights()
    shapes = [tuple(t.shape) for t in weights.trainable]
    theta = np.concatenate([t.numpy().ravel() for t in weights.trainable])
    P, H = theta.size, learner.hidden_size
    h, s, f, i = np.zeros((P, H)), np.zeros((P, H)), np.zeros(P), np.zeros(P)
    wf, bf = learner.forget_kernel.numpy(), float(learner.forget_bias_variable.numpy())
    wi, bi = learner.input_kernel.numpy(), float(learner.input_bias_variable.numpy())
    for _ in range(steps):
        split = np.split(theta, np.cumsum([int(np.prod(s_)) for s_ in shapes])[:-1])
        trainable = [tf.constant(p.reshape(s_)) for p, s_ in zip(split, shapes)]
        with tf.GradientTape() as tape:
            tape.watch(trainable)
            outputs, _ = learner.call_network(learners.Weights(trainable, weights.non_trainable), episode.support_x)
            loss = learner.loss_and_metrics(outputs, episode.support_y)[0]
        g = np.concatenate([x.numpy().ravel() for x in tape.gradient(loss, trainable)])
        x = np.concatenate([pre(g), np.tile(pre(np.array(loss.numpy())), (P, 1))], axis=1)  # (P, 4)
        if H:
            kernel, bias = (v.numpy() for v in learner.extra_variables[:2])
            z = np.concatenate([x, h], 1) @ kernel + bias
            zi, zf, zc, zo = z[:, :H], z[:, H:2 * H], z[:, 2 * H:3 * H], z[:, 3 * H:]
            s = sig(zf) * s + sig(zi) * np.tanh(zc)
            h = sig(zo) * np.tanh(s)
            features = h
        else:
            features = x
        f = sig(features @ wf[:-2] + theta * wf[-2] + f * wf[-1] + bf)
        i = sig(features @ wi[:-2] + theta * wi[-2] + i * wi[-1] + bi)
        theta = f * theta - i * g
    return theta


@pytest.mark.parametrize("hidden_size", [0, 3])
def test_update_rule_matches_the_gate_equations_with_random_gate_weights(hidden_size):
    """Two updates with non-zero gate kernels against the equations in numpy: a gate that reads the
    wrong previous gate, misses theta, or a first layer with its gates in another order fails."""
    learner = mlp_learner(hidden_size=hidden_size)
    randomise_gates(learner, np.random.default_rng(1))
    episode = blob_episode(np.random.default_rng(2))
    adapted = learner.adapt(episode.support_x, episode.support_y, steps=2).trainable
    got = np.concatenate([a.numpy().ravel() for a in adapted])
    np.testing.assert_allclose(got, numpy_reference(learner, episode, 2), rtol=0, atol=1e-12)
    # The gates vary across coordinates (not a global learning rate).
    theta0 = np.concatenate([t.numpy().ravel() for t in learner.initial_weights().trainable])
    assert np.abs(got - theta0).std() > 0


# ------------------------------------------------------------------ meta-gradients


def test_meta_gradient_matches_finite_differences_in_float64():
    """Second order through the gradient inputs (first_order=False): the whole meta-gradient, BatchNorm
    included, matches central differences of the query loss. First order (the paper's approximation) is
    exact for the LSTM's own parameters after one update (g_1 does not depend on them), and measurably
    not the derivative after two (what the approximation drops)."""
    rng = np.random.default_rng(3)
    keras.utils.set_random_seed(3)
    network = models.conv4(3, input_shape=(16, 16, 1), filters=2, dtype="float64", seed=3)
    episode = Episode(tf.constant(rng.random((3, 16, 16, 1))), tf.constant([0, 1, 2]),
                      tf.constant(rng.random((6, 16, 16, 1))), tf.constant([0, 1, 2, 0, 1, 2]))
    second = LSTMMetaLearner(network, inner_steps=2, inner_lr=0.1, hidden_size=2, first_order=False, seed=3)
    randomise_gates(second, np.random.default_rng(0), scale=0.1)
    # h = 1e-6: the small-gradient branch of the preprocessing has slope e^10, so h = 1e-5 leaves a
    # truncation error of ~1e-5 (measured: 1.8e-5 at h = 1e-5, 1.8e-7 at 1e-6).
    assert finite_difference_error(second, episode, directions=2) < 1e-6

    mlp_episode = blob_episode(np.random.default_rng(4))
    one_step = mlp_learner(seed=4, inner_steps=1)
    randomise_gates(one_step, np.random.default_rng(5))
    assert finite_difference_error(one_step, mlp_episode, variables=one_step.extra_variables) < 1e-6
    two_steps = mlp_learner(seed=4, inner_steps=2)
    randomise_gates(two_steps, np.random.default_rng(5))
    assert finite_difference_error(two_steps, mlp_episode) > 1e-3


# ------------------------------------------------------------------ learning


def test_meta_learning_adapts_to_tasks_whose_labels_are_permuted_per_task():
    """Each task's classes are blobs at new places with permuted labels: without adaptation (0
    updates) nothing beats chance (1/3); after meta-training, 3 updates on the support set classify
    the queries of unseen tasks, far better than the SGD (step 0.05) the learner starts as
    (measured: 0.54 before, 0.81 after 100 meta-updates)."""
    keras.utils.set_random_seed(6)
    learner = LSTMMetaLearner(models.mlp(input_dim=2, hidden=(8,), outputs=3, seed=6), inner_steps=3,
                              inner_lr=0.05, hidden_size=0)
    rng = np.random.default_rng(6)
    batch = lambda n, rng: Episode(*(tf.stack(t) for t in zip(*[blob_episode(rng, dtype=np.float32)
                                                                  for _ in range(n)])))
    test = batch(200, np.random.default_rng(1000))
    evaluate = {steps: tf.function(lambda e, steps=steps: tf.reduce_mean(learner.evaluate_tasks(e, steps=steps)
                                                                          ["accuracy"])) for steps in (0, 3)}
    at_start = float(evaluate[3](test))
    optimizer = keras.optimizers.Adam(1e-2)

    @tf.function
    def train_step(episodes):
        grads, metrics, _ = learner.meta_gradients(episodes)
        optimizer.apply(grads, learner.meta_variables)
        return metrics

    for episodes in [batch(8, rng) for _ in range(100)]:
        train_step(episodes)
    adapted, unadapted = float(evaluate[3](test)), float(evaluate[0](test))
    assert unadapted < 0.42, unadapted
    assert adapted > 0.72, adapted
    assert adapted > at_start + 0.15, (at_start, adapted)


# ------------------------------------------------------------------ the loop: resume, distribution


def small_trainer(workdir, strategy=None, num_iterations=4):
    from tfmeta.data.pipeline import episode_dataset
    from tfmeta.data.sources import ClassDataset
    from tfmeta.training.config import MetaTrainConfig
    from tfmeta.training.loop import MetaTrainer

    rng = np.random.default_rng(0)
    data = ClassDataset.from_arrays(rng.uniform(size=(8 * 4, 16, 16, 1)).astype(np.float32), np.repeat(np.arange(8), 4))
    config = MetaTrainConfig(dataset="folder", data_dir="unused", variant="lstm_meta", ways=3, shots=1, queries=2,
                             meta_batch_size=4, inner_steps=2, inner_lr=0.1, meta_lr=1e-2, num_iterations=num_iterations,
                             eval_every=4, eval_episodes=4, workdir=str(workdir))
    build = lambda: learners.build("lstm_meta", models.conv4(3, input_shape=(16, 16, 1), filters=2), inner_steps=2,
                                   inner_lr=0.1, hidden_size=2)
    stream = lambda start, ctx=None: episode_dataset(data, 3, 1, 2, 4, seed=3, start_step=start, input_context=ctx)
    return MetaTrainer(config, build, stream, strategy=strategy, verbose=False)


def test_resume_equals_uninterrupted(tmp_path):
    values = lambda t: [v.numpy() for v in t.learner.variables]
    full = small_trainer(tmp_path / "full")
    initial = values(full)
    full.train()
    interrupted = small_trainer(tmp_path / "split")
    interrupted.train(until_step=2)  # stops at step 2 with a checkpoint
    resumed = small_trainer(tmp_path / "split")
    assert resumed.restore() == 2
    resumed.train()
    lstm = {id(v) for v in resumed.learner.extra_variables}
    assert len(lstm) == 6 and all(id(v) in {id(w) for w in resumed.learner.variables} for v in
                                  resumed.learner.extra_variables)  # the LSTM is checkpointed
    moved = [np.abs(a - b).max() for a, b, v in zip(initial, values(full), full.learner.variables)
             if id(v) in {id(w) for w in full.learner.extra_variables}]
    assert max(moved) > 1e-3  # the LSTM's parameters were trained
    for a, b in zip(values(full), values(resumed)):
        np.testing.assert_array_equal(a, b)


MIRRORED = textwrap.dedent("""
    import sys
    from tfmeta.training import distribute
    distribute.configure_logical_devices(2)
    import json, pathlib, numpy as np, tensorflow as tf
    sys.path.insert(0, sys.argv[2])
    from test_lstm_meta import small_trainer
    from tfmeta.data.episode import as_episode

    def first(t):
        batch = next(iter(t.strategy.distribute_datasets_from_function(lambda ctx: t.train_dataset_fn(0, ctx))))
        grads, metrics, state = t.compute_gradients(as_episode(batch))
        return [g.numpy() for g in grads], [s.numpy() for s in state]

    root = pathlib.Path(sys.argv[1])
    single = small_trainer(root / "single", tf.distribute.get_strategy(), num_iterations=2)
    multi = small_trainer(root / "multi", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), num_iterations=2)
    (g1, s1), (g2, s2) = first(single), first(multi)
    print("RESULT " + json.dumps({
        "replicas": multi.strategy.num_replicas_in_sync,
        "grad_rel_diff": max(float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-6)) for a, b in zip(g1, g2)),
        "lstm_grad_max": max(float(np.abs(g).max()) for g in g1[-4:]),
        "state_diff": max(float(np.abs(a - b).max()) for a, b in zip(s1, s2)),
        "state_change": max(float(np.abs(a - v.numpy()).max()) for a, v in zip(s1, single.learner.state_variables)),
    }))
""")


def test_mirrored_strategy_on_two_logical_cpus_gives_the_same_update(tmp_path):
    """The loop's meta-gradients (reduced across replicas, before Adam, which would hide a wrong
    scale) and new BatchNorm state of one meta-batch: 2 replicas of 2 tasks equal 1 device of 4."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", MIRRORED, str(tmp_path), str(pathlib.Path(__file__).parent)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT ")[-1])
    assert result["replicas"] == 2
    assert result["lstm_grad_max"] > 1e-6  # the gates' gradients are compared, not zeros
    assert result["grad_rel_diff"] < 1e-4  # a sum over replicas instead of the mean is off by 2x
    assert result["state_diff"] < 1e-5 and result["state_change"] > 1e-4  # BatchNorm statistics, averaged alike


# ------------------------------------------------------------------ export


def test_export_round_trips_adapt_and_predict_and_the_adapted_classifier(tmp_path):
    from tfmeta.export import export_adapted_classifier, export_few_shot_classifier, read_model_card

    keras.utils.set_random_seed(7)
    learner = LSTMMetaLearner(models.conv4(3, input_shape=(16, 16, 1), filters=2), inner_steps=2, inner_lr=0.3,
                              hidden_size=3)
    randomise_gates(learner, np.random.default_rng(7), scale=0.1)
    rng = np.random.default_rng(8)
    labels = rng.permutation(np.repeat(np.arange(3), 2)).astype(np.int32)
    support = rng.random((6, 16, 16, 1), dtype=np.float32)
    queries = rng.random((5, 16, 16, 1), dtype=np.float32)
    state = learner.adapt(tf.constant(support), tf.constant(labels))
    expected = learner.predict(state, tf.constant(queries)).numpy()
    assert not np.allclose(expected, learner.predict(learner.adapt(support, labels, steps=0), queries).numpy(),
                           atol=1e-3)  # the served graph must run the LSTM's updates to match

    path = export_few_shot_classifier(learner, tmp_path, "lstm_meta")
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    out = serve(support_images=tf.constant(support), support_labels=tf.constant(labels),
                query_images=tf.constant(queries))
    np.testing.assert_allclose(out["logits"].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(out["classes"].numpy(), np.argmax(expected, -1))
    card = read_model_card(path)
    assert card["algorithm"]["learner"] == "lstm_meta" and card["algorithm"]["hidden_size"] == 3
    with pytest.raises(tf.errors.InvalidArgumentError, match="support_labels"):
        serve(support_images=tf.constant(support), support_labels=tf.constant(labels + 5),
              query_images=tf.constant(queries))

    adapted = export_adapted_classifier(learner, state, ["a", "b", "c"], tmp_path, "lstm_meta_adapted")
    logits = tf.saved_model.load(str(adapted)).signatures["serving_default"](images=tf.constant(queries))["logits"]
    np.testing.assert_allclose(logits.numpy(), expected, atol=1e-5)


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("kwargs, match", [
    (dict(inner_lr=1.5), r"in \(0, 1\). Received: inner_lr=1.5"),
    (dict(inner_lr=0.0), "Received: inner_lr=0.0"),
    (dict(forget_bias=float("nan")), "Received: forget_bias=nan"),
    (dict(forget_bias="5"), "Received: forget_bias='5'"),
    (dict(hidden_size=-1), "Received: hidden_size=-1"),
    (dict(inner_steps=0), "Received: inner_steps=0"),
    (dict(eval_inner_steps=-2), "Received: eval_inner_steps=-2"),
])
def test_bad_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mlp_learner(**kwargs)


def test_bad_inputs_raise_clear_errors():
    from tfmeta.training.config import MetaTrainConfig

    with pytest.raises(TypeError, match="Received: model=str"):
        LSTMMetaLearner("conv4")
    learner = mlp_learner()
    episode = blob_episode(np.random.default_rng(0))
    with pytest.raises(ValueError, match="Received: steps=-1"):
        learner.adapt(episode.support_x, episode.support_y, steps=-1)
    with pytest.raises(ValueError, match="Received: lstm_hidden_size=-3"):
        MetaTrainConfig(variant="lstm_meta", dataset="omniglot", lstm_hidden_size=-3)
    with pytest.raises(ValueError, match="train_ways=10"):
        MetaTrainConfig(variant="lstm_meta", dataset="omniglot", ways=5, train_ways=10)
    assert learners.entry("lstm_meta").family == "recurrent"
