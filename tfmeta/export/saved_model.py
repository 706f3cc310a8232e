"""Exports tfmeta algorithms as self-contained SavedModels for TF Serving.

Three kinds of export, all in TF Serving's layout `<export_root>/<name>/<version>/`
and all carrying a model card `assets/tfmeta.json`:

- `export_few_shot_classifier`: `serving_default` adapts to a support set and
  classifies queries in one request (MAML's inner steps run inside the graph).
- `export_few_shot_regressor`: the same for function regression (sinusoids).
- `export_adapted_classifier`: a plain classifier with fixed adapted weights.

How the graph is built (and why): a `tf.Module` tracks the learner's underlying
`tf.Variable`s (a Keras 3 variable's `.value`) and its `tf.function`s call
`Algorithm.adapt` / `Algorithm.predict`, which run `Model.stateless_call` on those
variables' values. Tracking the Keras model itself instead (a module calling
`model(x)`) loads with `tf.saved_model.load` but fails in the Session-based loader
that TF Serving uses ("Could not find variable ..."). The graph holds core
TensorFlow ops only (no `py_function`), so it loads without tfmeta or Keras.
"""

import pathlib

import keras
import numpy as np
import tensorflow as tf

import tfmeta
from tfmeta.algorithms.base import CLASSIFICATION, REGRESSION, Algorithm, Weights
from tfmeta.export import checks
from tfmeta.export.model_card import build_model_card, check_model_card, write_model_card
from tfmeta.export.versioning import check_name, staged_version

SIGNATURE_KEY = "serving_default"


# ----------------------------------------------------------------- helpers


def _tf_variables(variables) -> list:
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


def _check_algorithm(algorithm, task, name=None, model_card=None):
    # Cheap argument checks first: tracing the graph takes seconds.
    check_name(name)
    check_model_card(model_card)
    if not isinstance(algorithm, Algorithm):
        raise TypeError(f"`algorithm` must be a tfmeta Algorithm. Received: algorithm={type(algorithm).__name__}")
    if algorithm.task != task:
        raise ValueError(f"`algorithm.task` must be {task!r} for this export. Received: task={algorithm.task!r}")


def _example_shape(algorithm, example_shape):
    if example_shape is None:
        example_shape = tuple(algorithm.model.inputs[0].shape[1:]) if algorithm.model.inputs else None
    if example_shape is None or any(d is None for d in example_shape):
        raise ValueError(
            "`input_shape` must be given when the model has no fully defined input shape. "
            f"Received: input_shape={example_shape!r}"
        )
    return tuple(int(d) for d in example_shape)


def _num_outputs(algorithm, example_shape) -> int:
    outputs, _ = algorithm.call_model(
        algorithm.initial_weights(), tf.zeros((2,) + example_shape, algorithm.model.compute_dtype), training=False
    )
    return int(outputs.shape[-1])


def _default_steps(algorithm, steps):
    if steps is not None:
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
            raise ValueError(f"`inner_steps` must be a non-negative integer. Received: inner_steps={steps!r}")
        return steps
    for attr in ("eval_inner_steps", "inner_steps"):
        value = getattr(algorithm, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _extra_values(algorithm) -> dict:
    values = {}
    for i, v in enumerate(algorithm.extra_variables):
        name = getattr(v, "path", None) or getattr(v, "name", None) or f"extra_{i}"
        values[str(name)] = np.asarray(v.numpy() if hasattr(v, "numpy") else v).tolist()
    return values


def _inner_rates(algorithm, config) -> dict:
    """Per-variable inner learning rates (learned ones as lists), or the fixed rate."""
    rates = getattr(algorithm, "inner_learning_rates", None)
    if callable(rates):
        return {str(k): np.asarray(v).tolist() for k, v in rates().items()}
    return {"all": config["inner_lr"]} if "inner_lr" in config else {}


def _track_captured(module, concrete_functions):
    """Tracks every variable the traced functions read (algorithm state such as
    learned rates or per-step BatchNorm statistics included), so the SavedModel
    holds them all."""
    known = {id(v) for v in module.learner_variables}
    extra = []
    for concrete in concrete_functions:
        for v in concrete.variables:
            if id(v) not in known:
                known.add(id(v))
                extra.append(v)
    module.captured_variables = extra


def _algorithm_card(algorithm, example_shape, steps, training) -> dict:
    config = algorithm.config()
    return {
        "algorithm": config,
        "input": {
            "shape": list(example_shape),
            "dtype": "float32",
            "value_range": [0.0, 1.0],
        },
        "inner_steps": steps,
        "inner_learning_rates": _inner_rates(algorithm, config),
        "meta_learned_extra_variables": _extra_values(algorithm),
        "batch_norm_batch_statistics": bool(training),
        "versions": {"tfmeta": tfmeta.__version__, "tensorflow": tf.__version__, "keras": keras.__version__},
    }


def _signature_card(concrete) -> dict:
    inputs = {
        spec.name: {"dtype": spec.dtype.name, "shape": spec.shape.as_list()}
        for spec in tf.nest.flatten(concrete.structured_input_signature)
    }
    outputs = {
        name: {"dtype": spec.dtype.name, "shape": spec.shape.as_list()}
        for name, spec in concrete.structured_outputs.items()
    }
    return {"key": SIGNATURE_KEY, "inputs": inputs, "outputs": outputs}


def _save(module, concrete, export_root, name, card):
    with staged_version(export_root, name) as (tmp, result):
        tf.saved_model.save(module, str(tmp), signatures={SIGNATURE_KEY: concrete})
        write_model_card(tmp, card)
    return result["path"]


def _classifier_outputs(logits):
    return {
        "logits": logits,
        "probabilities": tf.nn.softmax(logits, axis=-1),
        "classes": tf.argmax(logits, axis=-1, output_type=tf.int64),
    }


# ----------------------------------------------------------------- modules


class _FewShotModule(tf.Module):
    """Tracks the learner's variables; holds the serving and helper functions."""

    def traced_functions(self):
        functions = [self.serve.get_concrete_function()]
        if hasattr(self, "adapt_weights"):
            functions += [self.adapt_weights.get_concrete_function(), self.predict_with_weights.get_concrete_function()]
        return functions

    def __init__(self, algorithm, example_shape, outputs, steps, training, name):
        super().__init__(name=name)
        # Every variable the traced functions read must be tracked here.
        self.learner_variables = _tf_variables(list(algorithm.model.variables) + list(algorithm.extra_variables))
        is_classifier = algorithm.task == CLASSIFICATION
        x_name, y_name, q_name = (
            ("support_images", "support_labels", "query_images") if is_classifier
            else ("support_x", "support_y", "query_x")
        )
        y_spec = (
            tf.TensorSpec([None], tf.int32, y_name) if is_classifier else tf.TensorSpec([None, 1], tf.float32, y_name)
        )
        specs = [
            tf.TensorSpec((None,) + example_shape, tf.float32, x_name),
            y_spec,
            tf.TensorSpec((None,) + example_shape, tf.float32, q_name),
        ]
        dtype = algorithm.model.compute_dtype

        def validated(support_x, support_y, query_x):
            guards = checks.check_batch(support_x, x_name, example_shape)
            guards += checks.check_batch(query_x, q_name, example_shape)
            if is_classifier:
                guards += checks.check_rank(support_y, y_name, 1, "[batch]")
                guards += checks.check_same_batch(support_x, x_name, support_y, y_name)
                guards += checks.check_labels(support_y, y_name, outputs)
            else:
                guards += checks.check_rank(support_y, y_name, 2, "[batch, 1]")
                guards += checks.check_batch(support_y, y_name, (1,))
                guards += checks.check_same_batch(support_x, x_name, support_y, y_name)
            support_x, support_y, query_x = checks.with_checks(guards, support_x, support_y, query_x)
            return tf.cast(support_x, dtype), support_y, tf.cast(query_x, dtype)

        def adapt(support_x, support_y):
            return algorithm.adapt(support_x, support_y, steps=steps, training=training)

        @tf.function(input_signature=specs)
        def serve(support_x, support_y, query_x):
            support_x, support_y, query_x = validated(support_x, support_y, query_x)
            outputs_ = tf.cast(algorithm.predict(adapt(support_x, support_y), query_x, training=training), tf.float32)
            if is_classifier:
                return _classifier_outputs(outputs_)
            return {"predictions": outputs_}

        self.serve = serve

        # Fast weights in and out, for trainers.adapt on an export (MAML family only).
        if is_classifier:
            adapted = adapt(tf.zeros((outputs,) + example_shape, dtype), tf.range(outputs, dtype=tf.int32))
        else:
            adapted = adapt(tf.zeros((1,) + example_shape, dtype), tf.zeros((1, 1), tf.float32))
        if isinstance(adapted, Weights):
            weight_specs = Weights(
                [tf.TensorSpec(t.shape, t.dtype) for t in adapted.trainable],
                [tf.TensorSpec(t.shape, t.dtype) for t in adapted.non_trainable],
            )

            @tf.function(input_signature=specs[:2])
            def adapt_weights(support_x, support_y):
                support_x, support_y, _ = validated(support_x, support_y, support_x)
                fast = adapt(support_x, support_y)
                return {"trainable": list(fast.trainable), "non_trainable": list(fast.non_trainable)}

            @tf.function(input_signature=[weight_specs.trainable, weight_specs.non_trainable, specs[2]])
            def predict_with_weights(trainable, non_trainable, query_x):
                outputs_ = algorithm.predict(Weights(trainable, non_trainable), query_x, training=training)
                return tf.cast(outputs_, tf.float32)

            self.adapt_weights = adapt_weights
            self.predict_with_weights = predict_with_weights


class _AdaptedClassifierModule(tf.Module):
    """A plain classifier: fixed (adapted) weights stored as variables."""

    def traced_functions(self):
        return [self.serve.get_concrete_function()]

    def __init__(self, algorithm, weights, example_shape, training, name):
        super().__init__(name=name)
        self.learner_variables = _tf_variables(list(algorithm.model.variables) + list(algorithm.extra_variables))
        self.trainable_weights_ = [tf.Variable(t, trainable=False, name="adapted") for t in weights.trainable]
        self.non_trainable_weights_ = [tf.Variable(t, trainable=False, name="adapted") for t in weights.non_trainable]
        dtype = algorithm.model.compute_dtype

        @tf.function(input_signature=[tf.TensorSpec((None,) + example_shape, tf.float32, "images")])
        def serve(images):
            images = checks.with_checks(checks.check_batch(images, "images", example_shape), images)
            fixed = Weights(
                [tf.convert_to_tensor(v) for v in self.trainable_weights_],
                [tf.convert_to_tensor(v) for v in self.non_trainable_weights_],
            )
            logits = algorithm.predict(fixed, tf.cast(images, dtype), training=training)
            return _classifier_outputs(tf.cast(logits, tf.float32))

        self.serve = serve


# ----------------------------------------------------------------- exporters


def export_few_shot_classifier(
    algorithm: Algorithm,
    export_root="saved_models",
    name: str = "few_shot_classifier",
    model_card: dict | None = None,
    inner_steps: int | None = None,
    training: bool = True,
    input_shape=None,
) -> pathlib.Path:
    """Exports an "adapt and predict" few-shot classifier.

    `serving_default` takes `support_images` float32 `[S, H, W, C]` (values in
    [0, 1]), `support_labels` int32 `[S]` (0..N-1, every class present) and
    `query_images` float32 `[Q, H, W, C]`, runs the algorithm's adaptation from
    the meta-learned initialisation inside the graph (MAML's inner steps, with
    learned per-step learning rates where the algorithm has them) and returns
    `logits` float32 `[Q, N]`, `probabilities` float32 `[Q, N]` and `classes`
    int64 `[Q]`. N is fixed: the size of the learner's head.

    Args:
        algorithm: a classification `Algorithm` (e.g. `tfmeta.algorithms.MAML`).
        export_root: root directory; the export goes to `<export_root>/<name>/<version>`.
        name: the model's name.
        model_card: the caller's model-card fields, e.g. `{"training": config_dict,
            "evaluation": {"accuracy": 0.97, "ci95": 0.004, "episodes": 600},
            "shots": 1, "preprocessing": {"invert": True}}`.
        inner_steps: inner steps run per request (default: the algorithm's
            `eval_inner_steps` or `inner_steps`, else its own default).
        training: passed to the learner (BatchNorm uses batch statistics when
            True, as during meta-training).
        input_shape: `(H, W, C)` when the model has no defined input shape.

    Returns:
        The path of the new version directory.

    Raises:
        TypeError: if `algorithm` is not an `Algorithm`.
        ValueError: if it is not a classifier, or `model_card` is not a
            JSON-serialisable dict.

    Example:

    ```python
    algo = tfmeta.algorithms.MAML(tfmeta.models.conv4(ways=5), inner_steps=5)
    path = export_few_shot_classifier(algo, "saved_models", "omniglot_5way_1shot",
                                      model_card={"shots": 1})
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    out = serve(support_images=sx, support_labels=sy, query_images=qx)
    ```
    """
    _check_algorithm(algorithm, CLASSIFICATION, name, model_card)
    example_shape = _example_shape(algorithm, input_shape)
    ways = _num_outputs(algorithm, example_shape)
    steps = _default_steps(algorithm, inner_steps)
    module = _FewShotModule(algorithm, example_shape, ways, steps, training, name="few_shot_classifier")
    concrete = module.serve.get_concrete_function()
    _track_captured(module, module.traced_functions())
    computed = _algorithm_card(algorithm, example_shape, steps, training)
    computed["ways"] = ways
    computed["input"]["preprocessing"] = {
        "image_size": list(example_shape[:2]),
        "channels": example_shape[-1],
        "invert": False,
        "scale": "pixel / 255",
    }
    card = build_model_card("few_shot_classifier", _signature_card(concrete), computed, model_card)
    return _save(module, concrete, export_root, name, card)


def export_few_shot_regressor(
    algorithm: Algorithm,
    export_root="saved_models",
    name: str = "few_shot_regressor",
    model_card: dict | None = None,
    inner_steps: int | None = None,
    training: bool = True,
    input_shape=None,
) -> pathlib.Path:
    """Exports an "adapt and predict" few-shot regressor.

    `serving_default` takes `support_x` float32 `[S, D]`, `support_y` float32
    `[S, 1]` and `query_x` float32 `[Q, D]`, adapts inside the graph and returns
    `predictions` float32 `[Q, 1]`.

    Args:
        algorithm: a regression `Algorithm`.
        export_root, name, model_card, inner_steps, training, input_shape: as in
            `export_few_shot_classifier`.

    Returns:
        The path of the new version directory.

    Raises:
        TypeError: if `algorithm` is not an `Algorithm`.
        ValueError: if it is not a regressor, or `model_card` is invalid.

    Example:

    ```python
    algo = tfmeta.algorithms.MAML(tfmeta.models.mlp(), task="regression", inner_lr=0.01)
    path = export_few_shot_regressor(algo, "saved_models", "sinusoid")
    ```
    """
    _check_algorithm(algorithm, REGRESSION, name, model_card)
    example_shape = _example_shape(algorithm, input_shape)
    steps = _default_steps(algorithm, inner_steps)
    module = _FewShotModule(algorithm, example_shape, 1, steps, training, name="few_shot_regressor")
    concrete = module.serve.get_concrete_function()
    _track_captured(module, module.traced_functions())
    computed = _algorithm_card(algorithm, example_shape, steps, training)
    card = build_model_card("few_shot_regressor", _signature_card(concrete), computed, model_card)
    return _save(module, concrete, export_root, name, card)


def export_adapted_classifier(
    algorithm: Algorithm,
    weights: Weights,
    class_names,
    export_root="saved_models",
    name: str = "adapted_classifier",
    model_card: dict | None = None,
    training: bool = True,
    input_shape=None,
) -> pathlib.Path:
    """Exports a plain classifier with fixed adapted weights.

    `serving_default` takes `images` float32 `[B, H, W, C]` and returns `logits`,
    `probabilities` `[B, N]` and `classes` int64 `[B]`; `class_names[i]` (in the
    model card) names class `i`.

    Args:
        algorithm: the classification `Algorithm` the weights belong to.
        weights: adapted `Weights` (e.g. `algorithm.adapt(support_x, support_y)`).
        class_names: one name per output class.
        export_root, name, model_card, input_shape: as in `export_few_shot_classifier`.
        training: passed to the learner. True (the default, as MAML is evaluated)
            normalises with the statistics of the request's batch: send a batch
            of several images, not one at a time.

    Returns:
        The path of the new version directory.

    Raises:
        TypeError: if `algorithm` is not an `Algorithm` or `weights` not `Weights`.
        ValueError: if `class_names` does not name every output class.

    Example:

    ```python
    fast = algo.adapt(support_x, support_y)
    path = export_adapted_classifier(algo, fast, ["cat", "dog"], name="pets")
    ```
    """
    _check_algorithm(algorithm, CLASSIFICATION, name, model_card)
    if not isinstance(weights, Weights):
        raise TypeError(f"`weights` must be a tfmeta Weights. Received: weights={type(weights).__name__}")
    example_shape = _example_shape(algorithm, input_shape)
    dummy = tf.zeros((2,) + example_shape, algorithm.model.compute_dtype)
    logits, _ = algorithm.call_model(weights, dummy, training=False)
    ways = int(logits.shape[-1])
    class_names = [str(c) for c in class_names]
    if len(class_names) != ways:
        raise ValueError(
            f"`class_names` must name each of the {ways} output classes. "
            f"Received: {len(class_names)} class_names={class_names!r}"
        )
    module = _AdaptedClassifierModule(algorithm, weights, example_shape, training, name="adapted_classifier")
    concrete = module.serve.get_concrete_function()
    _track_captured(module, module.traced_functions())
    computed = _algorithm_card(algorithm, example_shape, None, training)
    computed.update(ways=ways, class_names=class_names)
    computed["input"]["preprocessing"] = {
        "image_size": list(example_shape[:2]),
        "channels": example_shape[-1],
        "invert": False,
        "scale": "pixel / 255",
    }
    card = build_model_card("adapted_classifier", _signature_card(concrete), computed, model_card)
    return _save(module, concrete, export_root, name, card)
