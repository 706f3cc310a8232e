"""RL²'s policy-step export: outputs equal the Python policy's (tf.saved_model and the Session loader TF Serving
uses), the state carried over several steps, in-graph request checks, versioning and the model card."""

import numpy as np
import pytest
import tensorflow as tf

from tfmeta.data.rl import TabularMDP
from tfmeta.export.model_card import read_model_card
from tfmeta.export.rl2 import export_rl2_policy
from tfmeta.learners.recurrent.rl2 import build_rl2

UNITS = 6


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tf.keras.utils.set_random_seed(4)
    learner = build_rl2(env=TabularMDP(), units=UNITS)
    # Non-trivial weights: the initial policy head is scaled down to near-uniform probabilities.
    for v in learner.model.trainable_variables:
        v.assign(tf.random.normal(v.shape, stddev=0.5))
    root = tmp_path_factory.mktemp("exports")
    path = export_rl2_policy(learner, root, "rl2_mdp", model_card={"note": "test"})
    return learner, root, path


def _request(batch=3, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "observation": rng.integers(0, 10, batch).astype(np.int32),
        "previous_action": rng.integers(-1, 5, batch).astype(np.int32),
        "reward": rng.normal(size=batch).astype(np.float32),
        "done": rng.integers(0, 2, batch).astype(np.float32),
        "state": rng.normal(size=(batch, UNITS)).astype(np.float32),
    }


def _python_policy(learner, request):
    x = learner.encode(request["observation"], request["previous_action"], request["reward"], request["done"])
    logits, value, state = learner.policy_step(x, tf.constant(request["state"]))
    return {"probabilities": tf.nn.softmax(logits).numpy(), "value": value.numpy(), "state": state.numpy()}


def _session_run(path, request):
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(path))
        signature = meta_graph.signature_def["serving_default"]
        feed = {signature.inputs[k].name: v for k, v in request.items()}
        return session.run({k: signature.outputs[k].name for k in ("probabilities", "value", "state")}, feed)


def test_loaded_policy_step_equals_the_python_policy_over_a_trial(exported):
    learner, _, path = exported
    step = tf.saved_model.load(str(path)).signatures["serving_default"]
    request = _request()
    want = _python_policy(learner, request)
    got = {k: v.numpy() for k, v in step(**{k: tf.constant(v) for k, v in request.items()}).items()}
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert np.abs(want["probabilities"] - 0.2).max() > 0.05  # not the uniform policy: the check can fail
    # Serving a trial step by step, passing the state back, equals the learner's own rollout.
    env = TabularMDP()
    params = env.sample_tasks(tf.constant([2, 0], tf.int64), 4)
    rollout = learner.rollout(env, params, [2, 1], [2, 2], 12)
    state = np.zeros((4, UNITS), np.float32)
    x = rollout.inputs.numpy()
    for t in range(12):
        obs = x[t, :, :10].argmax(-1).astype(np.int32)
        prev = np.where(x[t, :, 10:15].max(-1) > 0, x[t, :, 10:15].argmax(-1), -1).astype(np.int32)
        out = step(observation=obs, previous_action=prev, reward=x[t, :, 15], done=x[t, :, 16], state=state)
        np.testing.assert_allclose(out["value"].numpy(), rollout.values.numpy()[t], rtol=1e-4, atol=1e-5)
        logp = np.log(out["probabilities"].numpy()[np.arange(4), rollout.actions.numpy()[t]])
        np.testing.assert_allclose(logp, rollout.log_probs.numpy()[t], rtol=1e-4, atol=1e-5)
        state = out["state"].numpy()


def test_session_loader_as_tf_serving_gives_the_same_outputs(exported):
    learner, _, path = exported
    request = _request(batch=2, seed=1)
    want = _python_policy(learner, request)
    got = _session_run(path, request)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("change, message", [
    (dict(observation=np.array([0, 10, 1], np.int32)), r"`observation` must lie in \[0, 10\)"),
    (dict(previous_action=np.array([0, 5, -1], np.int32)), r"`previous_action` must lie in \[-1, 5\)"),
    (dict(previous_action=np.array([0, -2, -1], np.int32)), r"`previous_action` must lie in \[-1, 5\)"),
    (dict(done=np.array([0, 0.5, 1], np.float32)), "`done` must be 0 or 1"),
    (dict(reward=np.array([0, np.nan, 1], np.float32)), "`reward` must be finite"),
    (dict(state=np.zeros((2, UNITS), np.float32)), "`state` must have one entry per example of `observation`"),
    (dict(reward=np.zeros(2, np.float32)), "`reward` must have one entry per example of `observation`"),
])
def test_bad_requests_raise_invalid_argument_with_a_clear_message(exported, change, message):
    _, _, path = exported
    step = tf.saved_model.load(str(path)).signatures["serving_default"]
    request = {**_request(), **change}
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        step(**{k: tf.constant(v) for k, v in request.items()})
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):  # the Session loader too
        _session_run(path, request)


def test_versions_and_model_card(exported):
    learner, root, path = exported
    assert path == root / "rl2_mdp" / "1"
    card = read_model_card(path)
    assert card["kind"] == "rl2_policy_step" and card["note"] == "test"
    assert card["state_size"] == UNITS and card["num_actions"] == 5
    assert card["observation"] == {"kind": "state index", "num_states": 10}
    assert set(card["signature"]["inputs"]) == {"observation", "previous_action", "reward", "done", "state"}
    second = export_rl2_policy(learner, root, "rl2_mdp")
    assert second == root / "rl2_mdp" / "2" and path.is_dir()  # a new version; the first untouched
    with pytest.raises(TypeError, match="must be an RL2 learner"):
        export_rl2_policy(object(), root, "x")
    with pytest.raises(ValueError, match="name"):
        export_rl2_policy(learner, root, "a/b")
