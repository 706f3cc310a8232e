"""Few-shot ("adapt and predict") exports: the learner adapts inside the served graph.

`serving_default` takes a support set and queries, runs `learner.adapt` and
`learner.predict` in one request, and returns the outputs. Two more functions
are saved with the module, for clients that adapt once and predict many times
(`tfmeta.export.adapt_export`, `FewShotPredictor.adapt`):

* `adapt_task(support, labels) -> {"task_state": [tensors]}`: the learner's task
  state, flattened to a list;
* `predict_task(task_state, query) -> outputs`.

Regressors of probabilistic learners (Neural Processes, `Learner.probabilistic`)
also return `stddev`; learners that condition on a task description
(`Learner.metadata_dim`) take `task_metadata` `[M]` in `serving_default` and
`adapt_task`, and accept an empty support set (zero-shot).
"""

import pathlib

import tensorflow as tf

from tfmeta.export import checks
from tfmeta.export.exporter import (
    check_export_arguments,
    classifier_outputs,
    example_shape_of,
    learner_card,
    save_export,
    tf_variables,
)
from tfmeta.learners.base import CLASSIFICATION, REGRESSION, Learner


def _task_state_specs(adapt, dummy_a, dummy_b):
    """The flat task state's `TensorSpec`s, with a dimension set to None where
    two different support sets give it different sizes (any-ways learners);
    and the state's structure."""
    state_a, state_b = adapt(*dummy_a), adapt(*dummy_b)
    flat_a, flat_b = tf.nest.flatten(state_a), tf.nest.flatten(state_b)
    specs = []
    for a, b in zip(flat_a, flat_b):
        shape = [da if da == db else None for da, db in zip(a.shape.as_list(), b.shape.as_list())]
        specs.append(tf.TensorSpec(shape, a.dtype))
    return specs, state_a


class FewShotModule(tf.Module):
    """`serving_default`, `adapt_task` and `predict_task` of a learner.

    Args:
        learner: the learner.
        example_shape: shape of one example.
        steps: adaptation steps per request (learners that adapt in steps), or None.
        training: passed to the network.
        max_ways: classes a request may hold: the head size of a fixed-ways
            classifier; the maximum for `any_ways` learners; 1 for regressors.
        max_shots: the most support examples of one class a request may hold
            (None: no limit).
    """

    def __init__(self, learner: Learner, example_shape, steps, training: bool, max_ways: int,
                 max_shots: int | None = None):
        super().__init__(name=f"few_shot_{learner.task}")
        self.learner_variables = tf_variables(learner.variables)
        classifier = learner.task == CLASSIFICATION
        probabilistic = learner.probabilistic and not classifier
        metadata_dim = learner.metadata_dim  # None: no `task_metadata` input
        x_name, y_name, q_name = (
            ("support_images", "support_labels", "query_images") if classifier else ("support_x", "support_y", "query_x")
        )
        y_spec = tf.TensorSpec([None], tf.int32, y_name) if classifier else tf.TensorSpec([None, 1], tf.float32, y_name)
        specs = [tf.TensorSpec((None,) + example_shape, tf.float32, x_name), y_spec,
                 tf.TensorSpec((None,) + example_shape, tf.float32, q_name)]
        # `[None]`, checked to be `[M]` at run time: a static `[M]` would let the graph optimiser fold the
        # shape check away, and TF Serving feeds tensors without checking them against the signature.
        metadata_spec = [] if metadata_dim is None else [tf.TensorSpec([None], tf.float32, "task_metadata")]
        dtype = learner.model.compute_dtype

        def validated(support_x, support_y, query_x):
            guards = checks.check_batch(support_x, x_name, example_shape, allow_empty=metadata_dim is not None)
            guards += checks.check_batch(query_x, q_name, example_shape)
            if classifier:
                guards += checks.check_rank(support_y, y_name, 1, "[batch]")
                guards += checks.check_same_batch(support_x, x_name, support_y, y_name)
                guards += checks.check_labels(support_y, y_name, max_ways, any_ways=learner.any_ways)
                if max_shots is not None:
                    guards += checks.check_shots(support_y, y_name, max_shots)
            else:
                guards += checks.check_rank(support_y, y_name, 2, "[batch, 1]")
                guards += checks.check_batch(support_y, y_name, (1,), allow_empty=metadata_dim is not None)
                guards += checks.check_same_batch(support_x, x_name, support_y, y_name)
            support_x, support_y, query_x = checks.with_checks(guards, support_x, support_y, query_x)
            return tf.cast(support_x, dtype), support_y, tf.cast(query_x, dtype)

        def adapt(support_x, support_y, metadata=None):
            return learner.adapt_task(support_x, support_y, metadata=metadata, steps=steps, training=training)

        def validated_metadata(metadata):
            # (Not `tf.ensure_shape`: its own error would come before the check's.)
            return checks.with_checks(checks.check_vector(metadata, "task_metadata", metadata_dim), metadata)

        def outputs_of(predictions):
            if probabilistic:  # a Gaussian per query
                return {"predictions": tf.cast(predictions["mean"], tf.float32),
                        "stddev": tf.cast(predictions["stddev"], tf.float32)}
            predictions = tf.cast(predictions, tf.float32)
            return classifier_outputs(predictions) if classifier else {"predictions": predictions}

        if metadata_dim is None:
            @tf.function(input_signature=specs)
            def serve(support_x, support_y, query_x):
                support_x, support_y, query_x = validated(support_x, support_y, query_x)
                return outputs_of(learner.predict(adapt(support_x, support_y), query_x, training=training))
        else:
            @tf.function(input_signature=specs + metadata_spec)
            def serve(support_x, support_y, query_x, task_metadata):
                support_x, support_y, query_x = validated(support_x, support_y, query_x)
                state = adapt(support_x, support_y, validated_metadata(task_metadata))
                return outputs_of(learner.predict(state, query_x, training=training))

        # Two different valid support sets give the task state's shapes (and which dims vary).
        if classifier:
            ways_a, ways_b = (max_ways, max_ways) if not learner.any_ways else (2, 3)
            dummy = lambda ways, shots: (tf.zeros((ways * shots,) + example_shape, dtype),
                                         tf.repeat(tf.range(ways, dtype=tf.int32), shots))
            dummy_a, dummy_b = dummy(ways_a, 1), dummy(ways_b, 2)
        else:
            metadata = () if metadata_dim is None else (tf.zeros([metadata_dim], tf.float32),)
            dummy = lambda n: (tf.zeros((n,) + example_shape, dtype), tf.zeros((n, 1), tf.float32)) + metadata
            dummy_a, dummy_b = dummy(1), dummy(2)
        state_specs, structure = _task_state_specs(adapt, dummy_a, dummy_b)

        if metadata_dim is None:
            @tf.function(input_signature=specs[:2])
            def adapt_task(support_x, support_y):
                support_x, support_y, _ = validated(support_x, support_y, support_x)
                return {"task_state": tf.nest.flatten(adapt(support_x, support_y))}
        else:
            @tf.function(input_signature=specs[:2] + metadata_spec)
            def adapt_task(support_x, support_y, task_metadata):
                # The query check needs one example: a zero-filled stand-in (the support may be empty).
                stand_in = tf.zeros((1,) + example_shape, tf.float32)
                support_x, support_y, _ = validated(support_x, support_y, stand_in)
                return {"task_state": tf.nest.flatten(adapt(support_x, support_y, validated_metadata(task_metadata)))}

        @tf.function(input_signature=[state_specs, specs[2]])
        def predict_task(task_state, query_x):
            query_x = checks.with_checks(checks.check_batch(query_x, q_name, example_shape), query_x)
            state = tf.nest.pack_sequence_as(structure, task_state)
            return outputs_of(learner.predict(state, tf.cast(query_x, dtype), training=training))

        self.serve, self.adapt_task, self.predict_task = serve, adapt_task, predict_task
        self.extra_signatures = {}
        if learner.has_embedding:  # clients that index classes themselves
            @tf.function(input_signature=[tf.TensorSpec((None,) + example_shape, tf.float32, "images")])
            def embed(images):
                images = checks.with_checks(checks.check_batch(images, "images", example_shape), images)
                return {"embeddings": tf.cast(learner.embed(tf.cast(images, dtype), training=training), tf.float32)}

            self.embed = embed
            self.extra_signatures["embed"] = embed


def _export_few_shot(learner, task, kind, export_root, name, model_card, inner_steps, training, input_shape,
                     preprocessing, max_ways=None, max_shots=None) -> pathlib.Path:
    check_export_arguments(learner, task, name, model_card)
    if task == CLASSIFICATION and learner.metadata_dim is not None:
        raise ValueError(
            f"Classifier exports do not take class metadata yet; {type(learner).__name__} conditions on it. "
            f"Received: metadata_dim={learner.metadata_dim}"
        )
    training = learner.training_at_test if training is None else training
    example_shape = example_shape_of(learner, input_shape)
    if inner_steps is not None:
        learner.check_adapt_steps(inner_steps)
        if not isinstance(inner_steps, int) or isinstance(inner_steps, bool) or inner_steps < 0:
            raise ValueError(f"`inner_steps` must be a non-negative integer. Received: inner_steps={inner_steps!r}")
    steps = learner.eval_steps if inner_steps is None else inner_steps
    if task == CLASSIFICATION:
        ways = learner.ways if not learner.any_ways else max_ways
        if ways is None:
            raise ValueError(
                f"A classifier export needs the number of classes: `max_ways` for {type(learner).__name__} "
                f"(serves any number of classes), or a network with a fixed output size. Received: max_ways={max_ways!r}"
            )
    else:
        ways = 1
    max_shots = max_shots if task == CLASSIFICATION and learner.any_ways else None
    module = FewShotModule(learner, example_shape, steps, training, ways, max_shots)
    computed = learner_card(learner, example_shape, preprocessing, training)
    computed["inner_steps"] = steps
    if task == CLASSIFICATION:
        computed["ways"] = ways
        computed["any_ways"] = bool(learner.any_ways)
        if max_shots is not None:
            computed["max_shots"] = int(max_shots)
    return save_export(module, kind, export_root, name, computed, model_card,
                       functions=(module.adapt_task, module.predict_task), signatures=module.extra_signatures)


def export_few_shot_classifier(
    learner: Learner,
    export_root="saved_models",
    name: str = "few_shot_classifier",
    model_card: dict | None = None,
    inner_steps: int | None = None,
    training: bool | None = None,
    input_shape=None,
    preprocessing: dict | None = None,
    max_ways: int | None = None,
    max_shots: int | None = None,
) -> pathlib.Path:
    """Exports an "adapt and predict" few-shot classifier.

    `serving_default` takes `support_images` float32 `[S, H, W, C]` (values in
    [0, 1]), `support_labels` int32 `[S]` (0..N-1, every class present) and
    `query_images` float32 `[Q, H, W, C]`, runs the learner's adaptation inside
    the graph (MAML's inner steps, with learned per-step rates where the
    learner has them) and returns `logits` float32 `[Q, N]`, `probabilities`
    float32 `[Q, N]` and `classes` int64 `[Q]`. N is the network's head size
    (fixed), or any number up to `max_ways` for learners that allow it (metric
    learners), with any number of shots per class. Learners with an embedding
    (`has_embedding`) also get an `embed` signature: `images` -> `embeddings`.

    Args:
        learner: a classification `Learner` (e.g. `tfmeta.learners.MAML`).
        export_root: root directory; the export goes to `<export_root>/<name>/<version>`.
        name: the model's name.
        model_card: the caller's model-card fields, e.g. `{"training": config_dict,
            "evaluation": {...}, "shots": 1}`.
        inner_steps: adaptation steps per request (default: the learner's
            `eval_steps`); only for learners that adapt in steps.
        training: passed to the network: True, BatchNorm on the request's batch
            statistics (as MAML is meta-trained); False, on the moving
            statistics; None: the learner's `training_at_test`.
        input_shape: `(H, W, C)` when the network has no defined input shape.
        preprocessing: how clients must read images (`Preprocessing.to_dict()`
            of the training data); default: resize to the input size, not inverted.
        max_ways: for learners that serve any number of classes, the largest N
            (`ways` in the model card); ignored for a fixed head.
        max_shots: for those learners, the most support examples of one class
            (None: no limit).

    Returns:
        The path of the new version directory.

    Raises:
        TypeError: if `learner` is not a `Learner`.
        ValueError: if it is not a classifier, `model_card` is not a
            JSON-serialisable dict, or the number of classes is unknown.

    Example:

    ```python
    maml = tfmeta.learners.MAML(tfmeta.models.conv4(ways=5), inner_steps=5)
    path = export_few_shot_classifier(maml, "saved_models", "omniglot_5way_1shot", model_card={"shots": 1})
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    out = serve(support_images=sx, support_labels=sy, query_images=qx)
    ```
    """
    return _export_few_shot(learner, CLASSIFICATION, "few_shot_classifier", export_root, name, model_card,
                            inner_steps, training, input_shape, preprocessing, max_ways, max_shots)


def export_few_shot_regressor(
    learner: Learner,
    export_root="saved_models",
    name: str = "few_shot_regressor",
    model_card: dict | None = None,
    inner_steps: int | None = None,
    training: bool | None = None,
    input_shape=None,
) -> pathlib.Path:
    """Exports an "adapt and predict" few-shot regressor.

    `serving_default` takes `support_x` float32 `[S, D]`, `support_y` float32
    `[S, 1]` and `query_x` float32 `[Q, D]`, adapts inside the graph and returns
    `predictions` float32 `[Q, 1]`. A probabilistic learner (`probabilistic`,
    Neural Processes) also returns `stddev` float32 `[Q, 1]` (its predictions
    are the Gaussian's means). A learner that conditions on a task description
    (`metadata_dim = M`) also takes `task_metadata` float32 `[M]`, and `S` may be
    0 (a prediction from the description alone).

    Args:
        learner: a regression `Learner`.
        export_root, name, model_card, inner_steps, training, input_shape: as in
            `export_few_shot_classifier`.

    Returns:
        The path of the new version directory.

    Raises:
        TypeError: if `learner` is not a `Learner`.
        ValueError: if it is not a regressor, or `model_card` is invalid.

    Example:

    ```python
    maml = tfmeta.learners.MAML(tfmeta.models.mlp(), task="regression", inner_lr=0.01)
    path = export_few_shot_regressor(maml, "saved_models", "sinusoid")
    ```
    """
    return _export_few_shot(learner, REGRESSION, "few_shot_regressor", export_root, name, model_card,
                            inner_steps, training, input_shape, None)
