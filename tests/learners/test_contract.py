"""One contract test for every registered learner: tasks that only adaptation can solve.

Each task draws 3 classes from a pool and labels them with a fresh random
permutation, so the label of a query is a function of the task's support set
alone: a learner that ignores its support set scores chance (1/3) whatever it
learned. After a short meta-training every learner must (a) classify the
queries well with the true support labels and (b) follow the support labels
when they are rotated (class c labelled c+1): a learner that reads the
support set then predicts c+1 for the queries of class c. The check is shown
to fail for a learner without adaptation (`test_the_check_fails_...`).

Learners pre-trained as classifiers (registry `training_data` `CLASS_BATCHES`:
the fine-tuning baselines) do not meta-train on episodes: their short training
runs on mini-batches of the pool's classes with their global labels (the same
classes and examples as the episodes draw), then the same test applies: the
pre-trained classifier's labels mean nothing in the permuted tasks, so only the
head fitted on each support set can score.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmeta import learners
from tfmeta.data.episode import Episode
from tfmeta.learners import registry
from tfmeta.models import mlp
from tfmeta.training.config import FIXED_HEAD_VARIANTS

WAYS, SHOTS, QUERIES, DIM, POOL = 3, 2, 5, 8, 24
# Per-learner settings of the short meta-training (Reptile takes more, smaller inner steps).
KWARGS = {"reptile": dict(inner_steps=5, inner_lr=0.1), "lstm_meta": dict(inner_steps=2, inner_lr=0.3, hidden_size=0)}
DEFAULT_KWARGS = dict(inner_steps=1, inner_lr=0.5)


def _tasks(batch: int, seed: int) -> Episode:
    """`batch` tasks: 3 classes of the pool, labels a random permutation, examples = class mean + noise."""
    means = np.random.default_rng(0).normal(size=(POOL, DIM)) * 1.5  # the same pool for every call
    rng = np.random.default_rng(seed)
    sx, sy, qx, qy = [], [], [], []
    for _ in range(batch):
        classes = rng.choice(POOL, WAYS, replace=False)  # label i -> classes[i]: a fresh permutation per task
        draw = lambda n: means[classes].repeat(n, axis=0) + 0.5 * rng.normal(size=(WAYS * n, DIM))
        sx.append(draw(SHOTS))
        qx.append(draw(QUERIES))
        sy.append(np.repeat(np.arange(WAYS), SHOTS))
        qy.append(np.repeat(np.arange(WAYS), QUERIES))
    f, i = (lambda a: tf.constant(np.stack(a), tf.float32)), (lambda a: tf.constant(np.stack(a), tf.int32))
    return Episode(f(sx), i(sy), f(qx), i(qy))


def _class_batches(batch: int, seed: int) -> Episode:
    """`batch` pre-training tasks: examples of the pool's classes with their global labels, empty support sets."""
    means = np.random.default_rng(0).normal(size=(POOL, DIM)) * 1.5  # the pool of `_tasks`
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, POOL, size=(batch, WAYS * QUERIES))
    x = means[labels] + 0.5 * rng.normal(size=labels.shape + (DIM,))
    return Episode(tf.zeros((batch, 0, DIM)), tf.zeros((batch, 0), tf.int32), tf.constant(x, tf.float32),
                   tf.constant(labels, tf.int32))


# The learners that train on few-shot episodes or class batches; the recurrent classifiers train on
# label-offset sequences (registry `SEQUENCES`) and RL² on environments (`ENVIRONMENTS`): they have
# their own tests (tests/learners/recurrent/).
EPISODIC = [name for name in learners.names()
            if learners.entry(name).training_data not in (registry.SEQUENCES, registry.ENVIRONMENTS)]


def pretrained(learner_or_name) -> bool:
    """Whether a registered learner trains on class batches instead of episodes."""
    name = learner_or_name if isinstance(learner_or_name, str) else learner_or_name.name
    return name in learners.names() and learners.entry(name).training_data == registry.CLASS_BATCHES


def training_batch(learner: learners.Learner, batch: int, seed: int) -> Episode:
    """What `learner` trains on: episodes, or class batches for pre-trained learners."""
    return _class_batches(batch, seed) if pretrained(learner) else _tasks(batch, seed)


def build(name: str, seed: int = 0) -> learners.Learner:
    """The learner on an MLP: a `WAYS`-wide head for the gradient family (and the LSTM meta-learner),
    a 16-wide embedding otherwise."""
    keras.utils.set_random_seed(seed)
    if name in FIXED_HEAD_VARIANTS:
        return learners.build(name, mlp(input_dim=DIM, hidden=(32,), outputs=WAYS, seed=seed), **KWARGS.get(name, {}))
    if learners.entry(name).family == "gradient":
        return learners.build(name, mlp(input_dim=DIM, hidden=(32,), outputs=WAYS, seed=seed),
                              **KWARGS.get(name, DEFAULT_KWARGS))
    kwargs = dict(KWARGS.get(name, {}), **({"num_classes": POOL} if pretrained(name) else {}))
    return learners.build(name, mlp(input_dim=DIM, hidden=(32,), outputs=16, seed=seed), **kwargs)


def meta_train(learner: learners.Learner, steps: int = 60, learning_rate: float = 3e-3) -> None:
    optimizer = keras.optimizers.Adam(learning_rate)

    @tf.function
    def step(episodes):
        grads, metrics, state = learner.meta_gradients(episodes, step=optimizer.iterations)
        optimizer.apply(grads, learner.meta_variables)
        for variable, value in zip(learner.state_variables, state):
            variable.assign(value)
        return metrics["loss"]

    for i in range(steps):
        step(training_batch(learner, 8, seed=1000 + i))


def accuracy(learner, episodes: Episode, steps=None) -> float:
    return float(tf.reduce_mean(learner.evaluate_tasks(episodes, steps=steps)["accuracy"]))


def check_contract(learner: learners.Learner) -> dict:
    """Meta-trains briefly, then asserts that the learner adapts to each task's support labels."""
    meta_train(learner)
    test = _tasks(60, seed=1)  # 60 tasks x 15 queries
    rotated = Episode(test.support_x, (test.support_y + 1) % WAYS, test.query_x, test.query_y)
    result = {"true": accuracy(learner, test), "rotated": accuracy(learner, rotated)}
    # Chance is 1/3 (sd ~0.012 over 900 queries) for any learner that ignores the support set.
    assert result["true"] > 0.8, result
    assert result["rotated"] < 0.15, result
    if learner.eval_steps is not None:  # before adaptation: chance, as the labels are permuted per task
        result["before"] = accuracy(learner, test, steps=0)
        assert abs(result["before"] - 1 / WAYS) < 0.08, result
    return result


@pytest.mark.parametrize("name", EPISODIC)
def test_every_learner_adapts_to_its_support_set(name):
    check_contract(build(name))


class _NoAdaptation(learners.MAML):
    """A broken learner: `adapt` ignores the support set (returns the meta-learned weights)."""

    def adapt(self, support_x, support_y, steps=None, training=True):
        return self.initial_weights()


def test_the_check_fails_for_a_learner_that_ignores_its_support_set():
    broken = _NoAdaptation(mlp(input_dim=DIM, hidden=(32,), outputs=WAYS, seed=0), inner_lr=0.5)
    with pytest.raises(AssertionError, match="'true'"):
        check_contract(broken)


@pytest.mark.parametrize("name", EPISODIC)
def test_adapt_leaves_the_variables_alone_and_state_keeps_its_shapes(name):
    learner = build(name, seed=3)
    episodes = _tasks(4, seed=2)
    before = [v.numpy().copy() for v in learner.variables]
    grads, metrics, state = learner.meta_gradients(training_batch(learner, 4, seed=2), step=tf.constant(0, tf.int64))
    task_state = learner.adapt(episodes.support_x[0], episodes.support_y[0])
    learner.predict(task_state, episodes.query_x[0])
    for v, b in zip(learner.variables, before):
        np.testing.assert_array_equal(v.numpy(), b, err_msg=v.path)
    assert [g.shape for g in grads] == [v.shape for v in learner.meta_variables]
    assert [s.shape for s in state] == [v.shape for v in learner.state_variables]
    assert set(metrics) == {"loss", *learner.metric_names()}


def test_the_old_module_name_still_works_with_a_deprecation_warning():
    import tfmeta.algorithms as old

    with pytest.warns(DeprecationWarning, match="tfmeta.algorithms.MAML moved to tfmeta.learners.MAML"):
        assert old.MAML is learners.MAML
    with pytest.warns(DeprecationWarning, match="moved to tfmeta.learners.Learner"):
        assert old.Algorithm is learners.Learner
    with pytest.warns(DeprecationWarning):
        assert set(old.VARIANTS) == set(learners.names())
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        old.Nope  # noqa: B018
