"""The recurrent classifier export: online one-step requests equal the Python whole-sequence predictions."""

import json

import numpy as np
import pytest
import tensorflow as tf

from tfmeta.export.recurrent import export_recurrent_classifier
from tfmeta.learners.recurrent import MANN, memory_network

WAYS, LENGTH = 3, 8


@pytest.fixture(scope="module", params=[True, False], ids=["mann", "lstm_seq"])
def exported(request, tmp_path_factory):
    learner = MANN(memory_network(WAYS, (2, 2, 1), use_memory=request.param, seed=1, controller_units=8,
                                  **({"memory_slots": 6, "memory_width": 3, "read_heads": 2} if request.param else {})),
                   instances=3)
    root = tmp_path_factory.mktemp("exports")
    path = export_recurrent_classifier(learner, root, "seq", model_card={"note": "test"})
    return learner, path, tf.saved_model.load(str(path))


def _sequences(seed=0, batch=2):
    rng = np.random.default_rng(seed)
    images = rng.uniform(size=(batch, LENGTH, 2, 2, 1)).astype(np.float32)
    labels = rng.integers(0, WAYS, size=(batch, LENGTH)).astype(np.int32)
    return images, labels


def test_online_one_step_requests_equal_the_whole_sequence(exported):
    learner, path, served = exported
    images, labels = _sequences()
    expected, _ = learner.sequence_logits(tf.constant(images), tf.constant(labels))  # (2, T, ways) Python model
    step = served.signatures["serving_default"]
    state = served.signatures["initial_state"](batch_size=tf.constant(2))
    online = []
    for t in range(LENGTH):
        previous = labels[:, t - 1:t] if t else np.full((2, 1), -1, np.int32)
        out = step(images=tf.constant(images[:, t:t + 1]), previous_labels=tf.constant(previous), **state)
        online.append(out["logits"].numpy()[:, 0])
        state = {k: v for k, v in out.items() if k.startswith("state_")}
    np.testing.assert_allclose(np.stack(online, axis=1), expected.numpy(), atol=1e-5)
    # The whole sequence in one request, and in two chunks, give the same.
    previous = np.concatenate([np.full((2, 1), -1, np.int32), labels[:, :-1]], axis=1)
    fresh = served.signatures["initial_state"](batch_size=tf.constant(2))
    whole = step(images=tf.constant(images), previous_labels=tf.constant(previous), **fresh)
    np.testing.assert_allclose(whole["logits"].numpy(), expected.numpy(), atol=1e-5)
    np.testing.assert_array_equal(whole["classes"].numpy(), np.argmax(expected.numpy(), -1))
    first = step(images=tf.constant(images[:, :3]), previous_labels=tf.constant(previous[:, :3]), **fresh)
    rest = step(images=tf.constant(images[:, 3:]), previous_labels=tf.constant(previous[:, 3:]),
                **{k: v for k, v in first.items() if k.startswith("state_")})
    np.testing.assert_allclose(rest["logits"].numpy(), expected.numpy()[:, 3:], atol=1e-5)
    card = json.loads((path / "assets" / "tfmeta.json").read_text())
    assert card["kind"] == "recurrent_classifier" and card["ways"] == WAYS and card["note"] == "test"
    assert set(card["recurrent"]["state"]) == {"state_" + k for k in learner.model.state_shapes}


def test_bad_requests_raise_clear_errors(exported):
    _, _, served = exported
    step = served.signatures["serving_default"]
    state = served.signatures["initial_state"](batch_size=tf.constant(2))
    images, labels = _sequences()
    good = dict(images=tf.constant(images[:, :2]), previous_labels=tf.constant(labels[:, :2]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"`previous_labels` must lie in \[-1, 3\)"):
        step(**{**good, "previous_labels": tf.constant([[0, 3], [1, 2]])}, **state)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"`previous_labels` must have shape \[B, T\]"):
        step(**{**good, "previous_labels": tf.constant([[0], [1]])}, **state)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"`images` must have shape \[B, T, 2, 2, 1\]"):
        step(**{**good, "images": tf.zeros([2, 2, 3, 2, 1])}, **state)
    one = served.signatures["initial_state"](batch_size=tf.constant(1))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"`state_h` must have shape \[B, 8\] \(the B of"):
        step(**good, **one)


def test_export_refuses_other_learners(tmp_path):
    from tfmeta.learners import build
    from tfmeta.models import mlp

    with pytest.raises(TypeError, match="recurrent classifier"):
        export_recurrent_classifier(build("protonet", mlp(input_dim=4, hidden=(4,), outputs=4)), tmp_path)


def test_session_loader_serves_the_same_step(exported):
    """The TF1 Session loader (the path TF Serving's C++ server takes) loads both signatures and serves the
    same first two steps as the Python model."""
    learner, path, _ = exported
    images, labels = _sequences(seed=4, batch=1)
    expected, _ = learner.sequence_logits(tf.constant(images[:, :2]), tf.constant(labels[:, :2]))
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(path))
        init, step = meta_graph.signature_def["initial_state"], meta_graph.signature_def["serving_default"]
        state = session.run({k: v.name for k, v in init.outputs.items()}, {init.inputs["batch_size"].name: 1})
        feed = {step.inputs["images"].name: images[:, :2], step.inputs["previous_labels"].name: [[-1, labels[0, 0]]]}
        feed.update({step.inputs[k].name: v for k, v in state.items()})
        logits = session.run(step.outputs["logits"].name, feed)
    np.testing.assert_allclose(logits, expected.numpy(), atol=1e-5)
