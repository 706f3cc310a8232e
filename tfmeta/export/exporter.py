"""The one export path: a `tf.Module` with a `serve` function -> a SavedModel version with its model card.

Every export kind (`few_shot.py`, `adapted.py`) builds a `tf.Module` whose
`serve` is a `tf.function` with an input signature, plus the fields of the
model card it knows, and hands both to `save_export`, which:

1. traces `serve` (and the module's other functions),
2. tracks every variable the traced functions read (a learner's network, its
   learned inner rates, per-step statistics, ...), so the SavedModel holds them,
3. writes the SavedModel and the model card into a staged directory and
   publishes it as the next version of `<export_root>/<name>/` (never
   overwriting one; nothing is left behind on failure).

How the graph is built (and why): a module tracks the learner's underlying
`tf.Variable`s (a Keras 3 variable's `.value`) and its functions call the
learner's `adapt` / `predict`, which run `Model.stateless_call` on those
variables' values. Tracking the Keras model itself instead (a module calling
`model(x)`) loads with `tf.saved_model.load` but fails in the Session-based
loader that TF Serving uses ("Could not find variable ..."). The graph holds
core TensorFlow ops only (no `py_function`), so it loads without tfmeta or Keras.
"""

import pathlib

import keras
import tensorflow as tf

import tfmeta
from tfmeta.export.model_card import build_model_card, check_model_card, write_model_card
from tfmeta.export.versioning import check_name, staged_version
from tfmeta.learners.base import Learner

SIGNATURE_KEY = "serving_default"


def tf_variables(variables) -> list:
    """The distinct underlying `tf.Variable`s of Keras or TF variables."""
    out, seen = [], set()
    for v in variables:
        tf_var = v.value if isinstance(v, keras.Variable) else v
        if not isinstance(tf_var, tf.Variable):
            raise TypeError(f"Expected Keras or TF variables. Received: {type(v).__name__}")
        if id(tf_var) not in seen:
            seen.add(id(tf_var))
            out.append(tf_var)
    return out


def check_export_arguments(learner, task: str, name: str, model_card) -> None:
    """Cheap checks before tracing (which takes seconds).

    Raises:
        TypeError: if `learner` is not a `Learner`.
        ValueError: on a bad `name` or `model_card`, or a learner of another task.
    """
    check_name(name)
    check_model_card(model_card)
    if not isinstance(learner, Learner):
        raise TypeError(f"`learner` must be a tfmeta Learner. Received: learner={type(learner).__name__}")
    if learner.task != task:
        raise ValueError(f"`learner.task` must be {task!r} for this export. Received: task={learner.task!r}")


def example_shape_of(learner: Learner, input_shape=None) -> tuple:
    """The shape of one example: `input_shape`, or the learner's network input.

    Raises:
        ValueError: if neither is fully defined.
    """
    shape = input_shape if input_shape is not None else learner.input_shape
    if shape is None or any(d is None for d in shape):
        raise ValueError(
            "`input_shape` must be given when the network has no fully defined input shape. "
            f"Received: input_shape={shape!r}"
        )
    return tuple(int(d) for d in shape)


def learner_card(learner: Learner, example_shape, preprocessing: dict | None, training: bool) -> dict:
    """The model-card fields every export of a learner carries."""
    card = dict(learner.card())
    card.update(
        input={"shape": list(example_shape), "dtype": "float32", "value_range": [0.0, 1.0]},
        # None: each part of the learner its own (an Ensemble's members; see the card's "algorithm").
        batch_norm_batch_statistics=None if training is None else bool(training),
        versions={"tfmeta": tfmeta.__version__, "tensorflow": tf.__version__, "keras": keras.__version__},
    )
    if len(example_shape) == 3:  # images: how a client must read them
        card["input"]["preprocessing"] = preprocessing or {
            "image_size": list(example_shape[:2]), "channels": example_shape[-1], "invert": False,
            "scale": "pixel / 255",
        }
    return card


def classifier_outputs(logits) -> dict:
    """`logits`, `probabilities` and `classes` (int64 argmax) of float32 logits."""
    return {
        "logits": logits,
        "probabilities": tf.nn.softmax(logits, axis=-1),
        "classes": tf.argmax(logits, axis=-1, output_type=tf.int64),
    }


def _signature_card(concrete, key: str = SIGNATURE_KEY) -> dict:
    inputs = {
        spec.name: {"dtype": spec.dtype.name, "shape": spec.shape.as_list()}
        for spec in tf.nest.flatten(concrete.structured_input_signature)
    }
    outputs = {
        name: {"dtype": spec.dtype.name, "shape": spec.shape.as_list()}
        for name, spec in concrete.structured_outputs.items()
    }
    return {"key": key, "inputs": inputs, "outputs": outputs}


def save_export(module: tf.Module, kind: str, export_root, name: str, computed: dict,
                model_card: dict | None, functions=(), signatures: dict | None = None) -> pathlib.Path:
    """Saves `module` as the next version of `<export_root>/<name>`, with its model card.

    Args:
        module: a `tf.Module` whose `serve` is a `tf.function` with an input
            signature (the `serving_default` signature), tracking the variables
            in `module.learner_variables` (may be empty).
        kind: the export kind for the model card (`"few_shot_classifier"`, ...).
        export_root: root directory of the exports.
        name: the model's name.
        computed: model-card fields the exporter derived.
        model_card: the caller's model-card fields (take precedence).
        functions: the module's other `tf.function`s with input signatures
            (saved with it; their variables are tracked too).
        signatures: more named signatures besides `serving_default` (e.g.
            `{"embed": module.embed}`), listed in the model card.

    Returns:
        The new version directory.
    """
    concrete = module.serve.get_concrete_function()
    more = {key: f.get_concrete_function() for key, f in (signatures or {}).items()}
    known = {id(v) for v in module.learner_variables}
    captured = []
    for function in [concrete] + [f.get_concrete_function() for f in functions] + list(more.values()):
        for v in function.variables:  # every variable the graph reads
            if id(v) not in known:
                known.add(id(v))
                captured.append(v)
    module.captured_variables = captured
    card = build_model_card(kind, _signature_card(concrete), computed, model_card)
    if more:
        card["signatures"] = {key: _signature_card(c, key) for key, c in more.items()}
    with staged_version(export_root, name) as (tmp, result):
        tf.saved_model.save(module, str(tmp), signatures={SIGNATURE_KEY: concrete, **more})
        write_model_card(tmp, card)
    return result["path"]
