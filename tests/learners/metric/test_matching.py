"""Matching Networks: attention and class probabilities by hand, FCE's equations, gradients, export for any N."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmeta.data.episode import Episode
from tfmeta.export import export_few_shot_classifier, read_model_card
from tfmeta.learners import MatchingNetwork
from tfmeta.learners.metric import class_log_probabilities
from tfmeta.models import conv4, conv4_relation


def _identity_embedding(dim=2):
    """f(x) = x (a Dense layer with an identity kernel), so cosines and attention can be done by hand."""
    model = keras.Sequential([keras.Input((dim,)), keras.layers.Dense(dim, use_bias=False)])
    model.layers[-1].kernel.assign(np.eye(dim, dtype=np.float32))
    return model


# Three classes, class 0 with two shots.
SUPPORT_X = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [-1.0, 0.0]], np.float32)
SUPPORT_Y = np.array([0, 1, 0, 2], np.int32)
QUERY_X = np.array([[1.0, 1.0], [0.0, -1.0]], np.float32)
R = 1 / np.sqrt(2)
# cos(query, support_i), written out: (1,1) vs (1,0), (0,2), (3,3), (-1,0); (0,-1) vs the same.
COSINES = np.array([[R, R, 1.0, -R], [0.0, -1.0, -R, 0.0]])


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_attention_and_class_probabilities_by_hand_with_unequal_shots(scale):
    matching = MatchingNetwork(_identity_embedding(), cosine_scale=scale)
    state = matching.adapt(SUPPORT_X, SUPPORT_Y)
    support, one_hot = (t.numpy() for t in state)
    np.testing.assert_allclose(support, SUPPORT_X)
    np.testing.assert_array_equal(one_hot, np.eye(3)[SUPPORT_Y])
    embedded = matching.embed(QUERY_X)
    np.testing.assert_allclose(matching.attention_scores(state, embedded).numpy(), scale * COSINES, atol=1e-6)
    attention = _softmax(scale * COSINES)  # a(x, x_i), (2 queries, 4 support examples)
    # P(y = k) = sum of the attention on the support examples of class k: class 0 = examples 0 and 2.
    expected = np.stack([attention[:, 0] + attention[:, 2], attention[:, 1], attention[:, 3]], axis=1)
    log_probs = matching.predict(state, QUERY_X).numpy()
    np.testing.assert_allclose(np.exp(log_probs), expected, rtol=1e-5)
    if scale == 1.0:  # the paper's model, numbers written out for the first query
        z = np.exp([R, R, 1.0, -R]).sum()
        np.testing.assert_allclose(np.exp(log_probs[0]), [(np.exp(R) + np.e) / z, np.exp(R) / z, np.exp(-R) / z],
                                   rtol=1e-5)


def test_the_loss_is_minus_the_log_probability_of_the_true_class():
    matching = MatchingNetwork(_identity_embedding(), cosine_scale=1.0)
    query_y = np.array([0, 2], np.int32)
    result = matching.task_loss(Episode(SUPPORT_X, SUPPORT_Y, QUERY_X, query_y))
    attention = _softmax(COSINES)
    expected = -np.mean(np.log([attention[0, 0] + attention[0, 2], attention[1, 3]]))
    np.testing.assert_allclose(float(result.loss), expected, rtol=1e-5)
    # Query (0,-1): cos 0 with classes 0 (via (1,0)) and 2: argmax takes class 0, wrong.
    assert float(result.metrics["accuracy"]) == 0.5


def test_log_probabilities_stay_finite_where_the_attention_underflows():
    """With cosines 1 and 0 and a scale of 1000 the attention on class 1 is e^-1000 (0 in float32): its
    log-probability is -1000, where the log of the summed attention would be -inf (and the loss inf)."""
    log_probs = class_log_probabilities(tf.constant([[1000.0, 0.0, 990.0]]), tf.constant([0, 1, 0]), 2).numpy()
    np.testing.assert_allclose(log_probs, [[np.log1p(np.exp(-10.0)), -1000.0]], atol=1e-3)
    with np.errstate(divide="ignore"):
        assert np.log(_softmax(np.array([1000.0, 0.0, 990.0], np.float32))[1]) == -np.inf  # the naive way


def test_the_plain_model_ignores_the_order_of_the_support_set():
    matching = MatchingNetwork(_identity_embedding())
    order = np.array([2, 0, 3, 1])
    a = matching.predict(matching.adapt(SUPPORT_X, SUPPORT_Y), QUERY_X).numpy()
    b = matching.predict(matching.adapt(SUPPORT_X[order], SUPPORT_Y[order]), QUERY_X).numpy()
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _lstm_step(cell, x, h, c):
    """One step of a Keras LSTMCell by hand: gates i, f, c, o from `[x] W + h U + b`."""
    z = x @ cell.kernel.numpy() + h @ cell.recurrent_kernel.numpy() + cell.bias.numpy()
    i, f, g, o = np.split(z, 4, axis=-1)
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    return _sigmoid(o) * np.tanh(c), c


def test_fce_follows_the_papers_equations():
    keras.utils.set_random_seed(0)
    matching = MatchingNetwork(_identity_embedding(3), fce=True, fce_steps=2, seed=0)
    rng = np.random.default_rng(0)
    support, query = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(2, 3)).astype(np.float32)
    # g(x_i, S) = h_fwd_i + h_bwd_i + g'(x_i): the two directions by hand, the backward one read from the end.
    forward, backward = matching.support_lstm.forward_layer.cell, matching.support_lstm.backward_layer.cell
    fwd, bwd = np.zeros((4, 3)), np.zeros((4, 3))
    h, c = np.zeros(3), np.zeros(3)
    for i in range(4):
        h, c = _lstm_step(forward, support[i], h, c)
        fwd[i] = h
    h, c = np.zeros(3), np.zeros(3)
    for i in reversed(range(4)):
        h, c = _lstm_step(backward, support[i], h, c)
        bwd[i] = h
    g = fwd + bwd + support
    np.testing.assert_allclose(matching.support_context(support).numpy(), g, rtol=1e-4, atol=1e-5)
    # f(x, S) = h_K: h_0 = f'(x), c_0 = 0; r = softmax(h g^T) g; h_k = LSTM([f'(x), r], h, c) + f'(x).
    h, c = query.astype(np.float64), np.zeros((2, 3))
    for _ in range(2):
        read_out = _softmax(h @ g.T) @ g
        h_hat, c = _lstm_step(matching.query_cell, np.concatenate([query, read_out], -1), h, c)
        h = h_hat + query
    np.testing.assert_allclose(matching.query_context(query, g.astype(np.float32)).numpy(), h, rtol=1e-4, atol=1e-5)
    # The attention over g(S) is a weighted sum: reordering g(S)'s rows does not change f(x, S) ...
    order = np.array([3, 1, 0, 2])
    np.testing.assert_allclose(matching.query_context(query, g[order].astype(np.float32)).numpy(), h, rtol=1e-4,
                               atol=1e-5)
    # ... but g(S) reads the support set as a sequence: reordering it changes the embeddings themselves.
    reordered = matching.support_context(support[order]).numpy()
    assert np.abs(reordered - g[order]).max() > 1e-2


def test_fce_variables_are_meta_learned_checkpointed_and_receive_gradients():
    keras.utils.set_random_seed(1)
    matching = MatchingNetwork(_identity_embedding(3), fce=True, seed=1)
    lstm_ids = {id(v) for v in matching.support_lstm.trainable_variables + matching.query_cell.trainable_variables}
    assert len(lstm_ids) == 9  # 2 directions x (kernel, recurrent kernel, bias) + the attention LSTM's 3
    assert {id(v) for v in matching.extra_variables} == lstm_ids
    assert lstm_ids <= {id(v) for v in matching.meta_variables} and lstm_ids <= {id(v) for v in matching.variables}
    assert MatchingNetwork(_identity_embedding(3)).extra_variables == []
    rng = np.random.default_rng(1)
    episodes = Episode(tf.constant(rng.normal(size=(2, 6, 3)), tf.float32), tf.constant([[0, 0, 1, 1, 2, 2]] * 2),
                       tf.constant(rng.normal(size=(2, 6, 3)), tf.float32), tf.constant([[0, 1, 2, 0, 1, 2]] * 2))
    grads, _, _ = matching.meta_gradients(episodes, step=tf.constant(0, tf.int64))
    for grad, variable in zip(grads, matching.meta_variables):
        assert float(tf.reduce_max(tf.abs(grad))) > 1e-6, variable.path
    assert matching.config()["fce"] is True and matching.config()["fce_steps"] == 5


def test_bad_arguments():
    with pytest.raises(ValueError, match="Received: cosine_scale=0"):
        MatchingNetwork(_identity_embedding(), cosine_scale=0)
    with pytest.raises(ValueError, match="Received: fce_steps=0"):
        MatchingNetwork(_identity_embedding(), fce=True, fce_steps=0)
    with pytest.raises(ValueError, match=r"must output \(n, E\). Received: embedding output shape \(n, 1, 1, 4\)"):
        MatchingNetwork(conv4_relation(input_shape=(12, 12, 1), filters=4))
    with pytest.raises(ValueError, match="adapts in one pass.*Received: steps=1"):
        MatchingNetwork(_identity_embedding()).adapt(SUPPORT_X, SUPPORT_Y, steps=1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(2)
    matching = MatchingNetwork(conv4(ways=None, input_shape=(16, 16, 1), filters=4, seed=2), fce=True, seed=2)
    for v in matching.model.non_trainable_variables:  # moving statistics away from their initial values
        v.assign(v.numpy() * 0.5 + 0.1)
    path = export_few_shot_classifier(matching, tmp_path_factory.mktemp("matching"), "matching", max_ways=50,
                                      max_shots=4)
    return matching, path


@pytest.mark.parametrize("ways", [2, 5, 20, 50])
def test_one_export_with_fce_answers_any_number_of_classes(exported, ways, serve_any_ways):
    got, expected = serve_any_ways(*exported, ways, max_shots=2)
    np.testing.assert_allclose(got["probabilities"].numpy(), np.exp(expected), rtol=1e-4, atol=1e-5)  # P(y | x, S)


def test_embed_signature_model_card_and_bad_requests(exported):
    matching, path = exported
    loaded = tf.saved_model.load(str(path))
    images = np.random.default_rng(3).random((4, 16, 16, 1), np.float32)
    out = loaded.signatures["embed"](images=images)["embeddings"].numpy()
    np.testing.assert_allclose(out, matching.embed(images).numpy(), rtol=1e-5, atol=1e-5)
    card = read_model_card(path)
    assert card["any_ways"] and card["ways"] == 50 and card["max_shots"] == 4
    assert card["algorithm"]["learner"] == "matching" and card["algorithm"]["fce"] is True
    assert card["signatures"]["embed"]["outputs"]["embeddings"]["shape"] == [None, 4]
    serve = loaded.signatures["serving_default"]
    images = np.zeros((6, 16, 16, 1), np.float32)
    for labels, message in [(np.array([0, 0, 1, 1, 3, 3], np.int32), "Received no example of classes"),
                            (np.array([0, 1, 2, 3, 4, 50], np.int32), r"must lie in \[0, 50\)"),
                            (np.array([0, 0, 0, 0, 0, 1], np.int32), "at most 4 examples of a class")]:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            serve(support_images=images, support_labels=labels, query_images=images[:2])
