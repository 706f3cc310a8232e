"""RL² policy-step export: one step of the recurrent policy, servable with TF Serving.

`serving_default` takes a batch of environments' current step and recurrent state

* `observation`: `int32 [B]` state indices (discrete observations) or
  `float32 [B, d]` vectors,
* `previous_action`: `int32 [B]`, `-1` at the start of a trial,
* `reward`: `float32 [B]`, the previous step's reward (0 at the start),
* `done`: `float32 [B]`, 1 if the previous step ended an episode (0 at the start),
* `state`: `float32 [B, units]`, the GRU state (zeros at the start of a trial; then
  the `state` this signature returned),

and returns `probabilities` `[B, A]`, `value` `[B]` and the new `state`
`[B, units]`. A client keeps the state between calls: across the episodes of a trial
it passes back what it received (that is how RL² adapts), for a new trial zeros.
Bad requests (shapes, an observation or action out of range, `done` not 0/1, a state
of the wrong size, NaN or infinite rewards, states or observation vectors, different batch sizes) end in `InvalidArgumentError` with a
message naming the input. The graph holds core TensorFlow ops only; it is written
by the one export path (`tfmeta.export.exporter.save_export`: versioned, atomic,
with a model card).

Example:

```python
path = export_rl2_policy(learner, "saved_models", "rl2_bandit")
step = tf.saved_model.load(str(path)).signatures["serving_default"]
out = step(observation=tf.zeros([1], tf.int32), previous_action=-tf.ones([1], tf.int32),
           reward=tf.zeros([1]), done=tf.zeros([1]), state=tf.zeros([1, 256]))
```
"""

import keras
import tensorflow as tf

import tfmeta
from tfmeta.export.checks import _shape, check_finite, check_rank, check_same_batch, with_checks
from tfmeta.export.exporter import save_export, tf_variables
from tfmeta.export.model_card import check_model_card
from tfmeta.export.versioning import check_name

KIND = "rl2_policy_step"


def _check_range(x, name: str, low, high, what: str) -> list:
    x = tf.reshape(x, [-1])
    return [tf.debugging.Assert(
        tf.reduce_all(tf.logical_and(x >= low, x < high)),
        [f"`{name}` must lie in {what}. Received: {name}=", x], summarize=16, name=f"check_{name}_range")]


class PolicyStepModule(tf.Module):
    """The `tf.Module` of the export: `serve(observation, previous_action, reward, done, state)`."""

    def __init__(self, learner):
        super().__init__(name="rl2_policy_step")
        self.learner_variables = tf_variables(learner.variables)
        model, units, actions, states = learner.model, learner.units, learner.num_actions, learner.num_states
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        if states is None:
            obs_size = model.input_size - actions - 2
            obs_spec = tf.TensorSpec([None, obs_size], tf.float32, name="observation")
        else:
            obs_spec = tf.TensorSpec([None], tf.int32, name="observation")

        @tf.function(input_signature=[
            obs_spec,
            tf.TensorSpec([None], tf.int32, name="previous_action"),
            tf.TensorSpec([None], tf.float32, name="reward"),
            tf.TensorSpec([None], tf.float32, name="done"),
            tf.TensorSpec([None, units], tf.float32, name="state"),
        ])
        def serve(observation, previous_action, reward, done, state):
            if states is None:
                checks = check_rank(observation, "observation", 2, f"[batch, {obs_size}]")
                checks += [tf.debugging.Assert(
                    tf.equal(tf.concat([_shape(observation), [-1, -1]], 0)[1], obs_size),
                    [f"`observation` must have shape [batch, {obs_size}]. Received: observation.shape=",
                     _shape(observation)], summarize=8, name="check_observation_size")]
                checks += check_finite(observation, "observation")
            else:
                checks = check_rank(observation, "observation", 1, "[batch]")
                checks += _check_range(observation, "observation", 0, states, f"[0, {states}) (the states)")
            for name, x in (("previous_action", previous_action), ("reward", reward), ("done", done)):
                checks += check_rank(x, name, 1, "[batch]") + check_same_batch(observation, "observation", x, name)
            checks += check_rank(state, "state", 2, f"[batch, {units}]") + check_same_batch(
                observation, "observation", state, "state")
            checks += [tf.debugging.Assert(
                tf.equal(tf.concat([_shape(state), [-1, -1]], 0)[1], units),
                [f"`state` must have shape [batch, {units}] (this policy's GRU units). Received: state.shape=",
                 _shape(state)], summarize=8, name="check_state_size")]
            checks += check_finite(state, "state")
            checks += _check_range(previous_action, "previous_action", -1, actions,
                                   f"[-1, {actions}) (-1: none yet, at the start of a trial)")
            checks += [tf.debugging.Assert(
                tf.reduce_all(tf.logical_or(tf.equal(done, 0.0), tf.equal(done, 1.0))),
                ["`done` must be 0 or 1. Received: done=", done], summarize=16, name="check_done_values")]
            checks += [tf.debugging.Assert(
                tf.reduce_all(tf.math.is_finite(reward)),
                ["`reward` must be finite. Received: reward=", reward], summarize=16, name="check_reward_finite")]
            observation, previous_action, reward, done, state = with_checks(
                checks, observation, previous_action, reward, done, state)
            x = learner.encode(observation, previous_action, reward, done)
            (logits, value, new_state), _ = model.stateless_call(trainable, non_trainable, (x, state))
            return {"probabilities": tf.nn.softmax(logits, -1), "value": value, "state": new_state}

        self.serve = serve


def export_rl2_policy(learner, export_root, name: str, model_card: dict | None = None):
    """Exports `learner`'s policy step as the next version of `<export_root>/<name>`.

    Args:
        learner: an `RL2` learner.
        export_root: root of the exports.
        name: the model's name.
        model_card: more model-card fields (training configuration, test results).

    Returns:
        The version directory.

    Raises:
        TypeError: if `learner` is not an `RL2`.
        ValueError: on a bad `name` or `model_card`.
    """
    from tfmeta.learners.recurrent.rl2 import RL2  # noqa: PLC0415

    check_name(name)
    check_model_card(model_card)
    if not isinstance(learner, RL2):
        raise TypeError(f"`learner` must be an RL2 learner. Received: learner={type(learner).__name__}")
    module = PolicyStepModule(learner)
    computed = {
        "algorithm": learner.config(),
        "observation": ({"kind": "state index", "num_states": learner.num_states} if learner.num_states is not None
                        else {"kind": "vector", "size": learner.model.input_size - learner.num_actions - 2}),
        "num_actions": learner.num_actions,
        "state_size": learner.units,
        "usage": "Start a trial with state = zeros, previous_action = -1, reward = 0, done = 0; pass back the "
                 "returned state at every step, across the trial's episodes.",
        "versions": {"tfmeta": tfmeta.__version__, "tensorflow": tf.__version__, "keras": keras.__version__},
    }
    return save_export(module, KIND, export_root, name, computed, model_card)
