"""Recurrent classifiers (MANN, LSTM on label-offset sequences), served online, one step at a time.

`serving_default` runs the recurrence over a chunk of a stream (one step or many) from
a state the client keeps, and returns the new state:

| name | dtype | shape | meaning |
| --- | --- | --- | --- |
| in `images` | float32 | [B, T, H, W, C] | the next T examples of B independent streams, values in [0, 1] |
| in `previous_labels` | int32 | [B, T] | the true label of the step before each example; -1: none (a stream's first step) |
| in `state_<name>` | float32 | [B, ...] | the state after the stream's previous step (`initial_state` at its start) |
| out `logits`, `probabilities` | float32 | [B, T, N] | the prediction for each example, before its label is known |
| out `classes` | int64 | [B, T] | argmax |
| out `state_<name>` | float32 | [B, ...] | the state after the last of the T steps |

`initial_state` takes `batch_size` (int32 scalar) and returns the `state_<name>`
tensors of B fresh streams. The state entries (`h`, `c`, and for the MANN `memory`,
`usage`, `read_weights`, `reads`) and their shapes are listed in the model card
(`recurrent.state`). Sending a stream one step per request (T = 1, feeding each
step's label as the next request's `previous_labels`) gives the same predictions as
sending it whole. Bad requests (wrong ranks or sizes, labels outside [-1, N), state
tensors of another batch size, NaN or infinite pixels or state entries) fail with an
`InvalidArgumentError` naming the input.
"""

import pathlib

import tensorflow as tf

from tfmeta.export.checks import check_finite
from tfmeta.export.exporter import (
    check_export_arguments,
    classifier_outputs,
    learner_card,
    save_export,
    tf_variables,
)
from tfmeta.learners.base import CLASSIFICATION

KIND = "recurrent_classifier"
STATE_PREFIX = "state_"


def _shape(x):
    return tf.raw_ops.Shape(input=x, out_type=tf.int32)


def _check_shape(x, name: str, expected, pretty: str):
    """Assert that `x` has rank `len(expected)` and the given sizes (None: any)."""
    shape = _shape(x)
    rank = len(expected)
    padded = tf.concat([shape, tf.fill([rank], -1)], axis=0)[:rank]
    ok = tf.equal(tf.raw_ops.Size(input=shape, out_type=tf.int32), rank)
    for i, size in enumerate(expected):
        if size is not None:
            ok = tf.logical_and(ok, tf.equal(padded[i], size))
    return tf.debugging.Assert(ok, [f"`{name}` must have shape {pretty}. Received: {name}.shape=", shape],
                               summarize=8, name=f"check_{name}_shape")


class RecurrentClassifierModule(tf.Module):
    """`serving_default` (one chunk of steps) and `initial_state` of a recurrent learner (`MANN`)."""

    def __init__(self, learner, example_shape):
        super().__init__(name=KIND)
        self.learner_variables = tf_variables(learner.variables)
        network = learner.model
        ways = learner.ways
        shapes = network.state_shapes
        dims = ", ".join(str(d) for d in example_shape)
        state_specs = {STATE_PREFIX + key: tf.TensorSpec((None,) + tuple(shape), tf.float32, STATE_PREFIX + key)
                       for key, shape in shapes.items()}

        @tf.function(input_signature=[tf.TensorSpec((), tf.int32, "batch_size")])
        def initial_state(batch_size):
            tf.debugging.Assert(batch_size >= 1, ["`batch_size` must be >= 1. Received: batch_size=", batch_size],
                                name="check_batch_size")
            state = network.initial_state(batch_size)
            return {STATE_PREFIX + key: tf.cast(value, tf.float32) for key, value in state.items()}

        @tf.function(input_signature=[tf.TensorSpec((None, None) + tuple(example_shape), tf.float32, "images"),
                                      tf.TensorSpec((None, None), tf.int32, "previous_labels"), state_specs])
        def serve(images, previous_labels, state):
            batch = _shape(images)[0]
            length = tf.concat([_shape(images), [-1, -1]], axis=0)[1]
            checks = [_check_shape(images, "images", [None, None, *example_shape], f"[B, T, {dims}]"),
                      _check_shape(previous_labels, "previous_labels", [batch, length],
                                   "[B, T] (the B and T of `images`)")]
            checks += check_finite(images, "images")
            for key, shape in shapes.items():
                name = STATE_PREFIX + key
                pretty = "[B, " + ", ".join(str(d) for d in shape) + "] (the B of `images`)"
                checks.append(_check_shape(state[name], name, [batch, *shape], pretty))
                checks += check_finite(state[name], name)
            with tf.control_dependencies(checks):
                labels = tf.reshape(previous_labels, [-1])
                checks.append(tf.debugging.Assert(
                    tf.reduce_all(tf.logical_and(labels >= -1, labels < ways)),
                    [f"`previous_labels` must lie in [-1, {ways}) (-1: no label, at a stream's first step; this "
                     f"model serves {ways} classes). Received: previous_labels=", labels],
                    summarize=64, name="check_previous_labels_range"))
            with tf.control_dependencies(checks):
                dtype = network.compute_dtype
                inputs = tf.one_hot(previous_labels, ways, dtype=dtype)  # -1 -> zeros
                current = {key: tf.cast(tf.identity(state[STATE_PREFIX + key]), dtype) for key in shapes}
                logits, final = network.run(current, tf.cast(tf.identity(images), dtype), inputs)
            outputs = classifier_outputs(tf.cast(logits, tf.float32))
            outputs.update({STATE_PREFIX + key: tf.cast(value, tf.float32) for key, value in final.items()})
            return outputs

        self.serve = serve
        self.initial_state = initial_state


def export_recurrent_classifier(learner, export_root="saved_models", name: str = "mann",
                                model_card: dict | None = None, preprocessing: dict | None = None) -> pathlib.Path:
    """Exports one step of a recurrent classifier's recurrence (see the module docstring).

    Args:
        learner: a `tfmeta.learners.recurrent.MANN` (MANN or the LSTM baseline).
        export_root: root of the exports; the model goes to `<export_root>/<name>/<version>`.
        name: the model's name.
        model_card: more fields for `assets/tfmeta.json` (training config, test results).
        preprocessing: how the training images were read (`ClassDataset.preprocessing.to_dict()`).

    Returns:
        The new version directory.

    Raises:
        TypeError: if `learner` is not a recurrent classifier.
        ValueError: on a bad `name` or `model_card`.

    Example:

    ```python
    path = export_recurrent_classifier(mann, "saved_models", "mann_omniglot")
    served = tf.saved_model.load(str(path))
    state = served.signatures["initial_state"](batch_size=tf.constant(1))
    out = served.signatures["serving_default"](images=x[None, None], previous_labels=tf.constant([[-1]]), **state)
    ```
    """
    from tfmeta.learners.recurrent.mann import MANN  # noqa: PLC0415 (the export package imports no learner)

    if not isinstance(learner, MANN):
        raise TypeError(f"`learner` must be a recurrent classifier (tfmeta.learners.recurrent.MANN). "
                        f"Received: learner={type(learner).__name__}")
    check_export_arguments(learner, CLASSIFICATION, name, model_card)
    example_shape = tuple(learner.input_shape)
    module = RecurrentClassifierModule(learner, example_shape)
    card = learner_card(learner, example_shape, preprocessing, training=False)
    card.update(ways=learner.ways, recurrent={
        "state": {STATE_PREFIX + key: [None, *shape] for key, shape in learner.model.state_shapes.items()},
        "previous_labels": "the true label of the previous step of the stream; -1 at its first step",
        "initial_state": "signature `initial_state(batch_size)` -> the state of fresh streams",
        "online": "send steps one at a time (T = 1) or in chunks; pass the returned state to the next request",
    })
    return save_export(module, KIND, export_root, name, card, model_card, functions=(module.initial_state,),
                       signatures={"initial_state": module.initial_state})
