"""Conditional and Attentive Neural Processes: likelihoods by hand, permutation invariance, masks, batching."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmeta import learners
from tfmeta.data import TaskEpisode, gp_tasks
from tfmeta.data.episode import Episode
from tfmeta.learners import Learner
from tfmeta.learners.amortized import CNPClassifier, ConditionalNeuralProcess, gaussian_log_likelihood
from tfmeta.models import mlp

RNG = np.random.default_rng(0)
CONTEXT_X = RNG.uniform(-2, 2, (7, 1)).astype(np.float32)
CONTEXT_Y = np.sin(3 * CONTEXT_X).astype(np.float32)
TARGET_X = np.linspace(-2, 2, 11, dtype=np.float32)[:, None]


def small(attention=False, **kwargs):
    return ConditionalNeuralProcess(encoder_sizes=(16, 16), decoder_sizes=(16,), attention=attention, num_heads=4,
                                    attention_sizes=(16,), seed=3, **kwargs)


def test_gaussian_log_likelihood_is_the_closed_form():
    y, mean, stddev = np.array([[0.3], [-1.0]]), np.array([[0.0], [0.5]]), np.array([[0.5], [2.0]])
    expected = -0.5 * ((y - mean) / stddev) ** 2 - np.log(stddev) - 0.5 * math.log(2 * math.pi)
    np.testing.assert_allclose(gaussian_log_likelihood(y, mean, stddev).numpy(), expected[:, 0], rtol=1e-12)


def test_stddev_bound_and_loss_by_hand_with_a_padded_target():
    """A decoder whose last layer outputs constants [m, s]: mean m, stddev 0.1 + 0.9 softplus(s) exactly;
    the loss is the mean negative log-likelihood over the real targets only."""
    cnp = small()
    last = cnp.decoder.dense[-1]
    last.kernel.assign(np.zeros(last.kernel.shape, np.float32))
    last.bias.assign(np.array([0.25, -1.5], np.float32))
    out = cnp.predict(cnp.adapt(CONTEXT_X, CONTEXT_Y), TARGET_X)
    stddev = 0.1 + 0.9 * np.log1p(np.exp(-1.5))
    np.testing.assert_allclose(out["mean"].numpy(), np.full((11, 1), 0.25), rtol=1e-6)
    np.testing.assert_allclose(out["stddev"].numpy(), np.full((11, 1), stddev), rtol=1e-6)
    targets = np.array([[0.0], [1.0], [1e6]], np.float32)  # the last one is padding: a huge error, ignored
    outputs = {"mean": out["mean"][:3], "stddev": out["stddev"][:3]}
    loss, metrics = cnp.loss_and_metrics(outputs, targets, mask=np.array([1.0, 1.0, 0.0], np.float32))
    nll = [0.5 * ((t - 0.25) / stddev) ** 2 + math.log(stddev) + 0.5 * math.log(2 * math.pi) for t in (0.0, 1.0)]
    np.testing.assert_allclose(float(loss), np.mean(nll), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["log_likelihood"]), -np.mean(nll), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["mse"]), np.mean([0.25**2, 0.75**2]), rtol=1e-5)
    assert cnp.selection_metric() == ("log_likelihood", True) and cnp.probabilistic


@pytest.mark.parametrize("attention", [False, True])
def test_shuffled_context_and_masked_padding_give_the_same_predictions(attention):
    cnp = small(attention)
    expected = cnp.predict(cnp.adapt(CONTEXT_X, CONTEXT_Y), TARGET_X)
    order = np.random.default_rng(1).permutation(7)
    shuffled = cnp.predict(cnp.adapt(CONTEXT_X[order], CONTEXT_Y[order]), TARGET_X)
    # Padding: 5 extra points of any value, masked out, in the middle of the set.
    padded_x = np.concatenate([CONTEXT_X[:3], RNG.normal(size=(5, 1)) * 9, CONTEXT_X[3:]]).astype(np.float32)
    padded_y = np.concatenate([CONTEXT_Y[:3], RNG.normal(size=(5, 1)) * 9, CONTEXT_Y[3:]]).astype(np.float32)
    mask = np.array([1] * 3 + [0] * 5 + [1] * 4, np.float32)
    padded = cnp.predict(cnp.adapt_task(padded_x, padded_y, support_mask=mask), TARGET_X)
    for got in (shuffled, padded):
        for key in ("mean", "stddev"):
            np.testing.assert_allclose(got[key].numpy(), expected[key].numpy(), rtol=1e-5, atol=1e-6)
    # The predictions depend on the context (a learner that ignores it would pass the checks above).
    other = cnp.predict(cnp.adapt(CONTEXT_X, -CONTEXT_Y), TARGET_X)
    assert np.abs(other["mean"].numpy() - expected["mean"].numpy()).max() > 1e-3


@pytest.mark.parametrize("attention", [False, True])
def test_an_empty_context_is_the_prior_and_stays_finite(attention):
    cnp = small(attention)
    empty = cnp.predict(cnp.adapt(np.zeros((0, 1), np.float32), np.zeros((0, 1), np.float32)), TARGET_X)
    all_padding = cnp.predict(cnp.adapt_task(CONTEXT_X, CONTEXT_Y, support_mask=np.zeros(7, np.float32)), TARGET_X)
    assert np.all(np.isfinite(empty["mean"].numpy())) and np.all(np.isfinite(empty["stddev"].numpy()))
    np.testing.assert_allclose(all_padding["mean"].numpy(), empty["mean"].numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("attention", [False, True])
def test_meta_batch_at_once_equals_task_by_task(attention):
    """The batched meta-gradients (one pass over the meta-batch) are the mean of the per-task ones;
    masks and metadata included (GP tasks with per-task context counts)."""
    cnp = small(attention, metadata_dim=2)
    batch = next(iter(gp_tasks(5, seed=2, per_task_counts=True))).task_episode(kernel_metadata=True)
    grads, metrics, _ = cnp.meta_gradients(batch)
    reference, reference_metrics, _ = Learner.meta_gradients(cnp, batch)  # tf.map_fn over tasks
    for a, b in zip(grads, reference):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)
    assert max(float(tf.reduce_max(tf.abs(g))) for g in grads) > 1e-2
    for name in ("loss", "log_likelihood", "mse"):
        np.testing.assert_allclose(float(metrics[name]), float(reference_metrics[name]), rtol=1e-5)
    per_task = cnp.evaluate_tasks(batch)
    reference_tasks = Learner.evaluate_tasks(cnp, batch)
    np.testing.assert_allclose(per_task["log_likelihood"].numpy(), reference_tasks["log_likelihood"].numpy(),
                               rtol=1e-5)


def test_training_raises_the_log_likelihood_on_gp_tasks():
    keras.utils.set_random_seed(0)
    cnp = ConditionalNeuralProcess(encoder_sizes=(32, 32), decoder_sizes=(32,), seed=0)
    optimizer = keras.optimizers.Adam(3e-3)

    @tf.function
    def step(batch):
        grads, metrics, _ = cnp.meta_gradients(batch)
        optimizer.apply(grads, cnp.meta_variables)
        return metrics["log_likelihood"]

    test = next(iter(gp_tasks(64, seed=99))).task_episode()
    before = float(tf.reduce_mean(cnp.evaluate_tasks(test)["log_likelihood"]))
    for batch in gp_tasks(32, seed=1).take(300):
        step(batch.task_episode())
    after = float(tf.reduce_mean(cnp.evaluate_tasks(test)["log_likelihood"]))
    assert after > before + 0.3, (before, after)


def test_bad_arguments_name_what_was_wrong():
    cnp = small(metadata_dim=2)
    with pytest.raises(ValueError, match="adapts in one pass.*Received: steps=1"):
        cnp.adapt(CONTEXT_X, CONTEXT_Y, steps=1)
    with pytest.raises(ValueError, match="conditions on task metadata of size 2.*Received: metadata=None"):
        cnp.adapt(CONTEXT_X, CONTEXT_Y)
    with pytest.raises(ValueError, match=r"M = metadata_dim = 2. Received: metadata.shape=\(3,\)"):
        cnp.adapt_task(CONTEXT_X, CONTEXT_Y, metadata=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="positive divisor of the value size 16. Received: num_heads=3"):
        ConditionalNeuralProcess(encoder_sizes=(16,), attention=True, num_heads=3)
    with pytest.raises(ValueError, match=r"Received: encoder_sizes=\(\)"):
        ConditionalNeuralProcess(encoder_sizes=())
    with pytest.raises(ValueError, match="Received: min_stddev=1.5"):
        ConditionalNeuralProcess(min_stddev=1.5)
    with pytest.raises(ValueError, match="Received: metadata_dim=0"):
        ConditionalNeuralProcess(metadata_dim=0)


def test_registry_builds_both_tasks():
    assert isinstance(learners.build("cnp", None, task="regression", attention=True), ConditionalNeuralProcess)
    assert learners.build("cnp", None, task="regression", attention=True).name == "anp"
    classifier = learners.build("cnp", mlp(input_dim=4, hidden=(8,), outputs=6))
    assert isinstance(classifier, CNPClassifier) and classifier.any_ways
    assert learners.entry("cnp").family == "amortized"


# ----------------------------------------------------------------- classification


def _classifier(metadata_dim=None):
    return CNPClassifier(mlp(input_dim=4, hidden=(8,), outputs=6, seed=1), encoder_sizes=(8,), decoder_sizes=(8,),
                         metadata_dim=metadata_dim, seed=2)


def test_classifier_logits_follow_the_support_labels_for_any_number_of_classes():
    cnp = _classifier()
    rng = np.random.default_rng(4)
    for ways in (2, 3, 7):
        support = rng.normal(size=(2 * ways, 4)).astype(np.float32)
        labels = np.repeat(np.arange(ways), 2).astype(np.int32)
        queries = rng.normal(size=(5, 4)).astype(np.float32)
        logits = cnp.predict(cnp.adapt(support, labels), queries).numpy()
        assert logits.shape == (5, ways)
        relabel = rng.permutation(ways)  # class c is called relabel[c]: the logits' columns move with it
        moved = cnp.predict(cnp.adapt(support, relabel[labels].astype(np.int32)), queries).numpy()
        np.testing.assert_allclose(moved[:, relabel], logits, rtol=1e-5, atol=1e-6)
        assert logits.std(axis=1).max() > 1e-4  # the classes are told apart


def test_classifier_masks_and_per_class_metadata():
    cnp = _classifier(metadata_dim=3)
    rng = np.random.default_rng(5)
    support = rng.normal(size=(6, 4)).astype(np.float32)
    labels = np.array([0, 0, 1, 1, 2, 0], np.int32)
    metadata = rng.normal(size=(3, 3)).astype(np.float32)
    queries = rng.normal(size=(4, 4)).astype(np.float32)
    full = cnp.predict(cnp.adapt_task(support[:5], labels[:5], metadata=metadata), queries).numpy()
    masked = cnp.predict(cnp.adapt_task(support, labels, np.array([1, 1, 1, 1, 1, 0], np.float32), metadata),
                         queries).numpy()
    np.testing.assert_allclose(masked, full, rtol=1e-5, atol=1e-6)
    changed = cnp.predict(cnp.adapt_task(support[:5], labels[:5], metadata=metadata[::-1].copy()), queries).numpy()
    assert np.abs(changed - full).max() > 1e-4  # the metadata is read
    episode = Episode(*(tf.constant(a) for a in (support[:5], labels[:5], queries, np.array([0, 1, 2, 0], np.int32))))
    episode = TaskEpisode.from_episode(episode, metadata=metadata)
    result = cnp.task_loss(episode)
    assert np.isfinite(float(result.loss)) and set(result.metrics) == {"accuracy"}
