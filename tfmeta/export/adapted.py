"""Adapted classifiers: a learner adapted once to fixed classes, served in one forward pass.

`serving_default` takes `images` float32 `[B, H, W, C]` and returns `logits`,
`probabilities` `[B, N]` and `classes` int64 `[B]`; the task state (MAML's fast
weights, ProtoNet's prototypes, ...) is stored in the SavedModel as constants,
and the model card names the classes.

* `export_adapted_classifier`: from a learner and a task state it adapted to.
* `adapt_export`: from a few-shot export (any learner) and a folder of class
  folders, without tfmeta's learner code: the export's own `adapt_task` and
  `predict_task` functions do the work.
"""

import pathlib

import numpy as np
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
from tfmeta.export.predictor import FewShotPredictor
from tfmeta.learners.base import CLASSIFICATION, Learner


def _constants(task_state) -> list:
    return [tf.Variable(t, trainable=False, name="task_state") for t in tf.nest.flatten(task_state)]


def _images_spec(example_shape):
    return tf.TensorSpec((None,) + example_shape, tf.float32, "images")


class AdaptedClassifierModule(tf.Module):
    """`serving_default(images)` of a learner with a fixed task state."""

    def __init__(self, learner: Learner, task_state, example_shape, training: bool):
        super().__init__(name="adapted_classifier")
        self.learner_variables = tf_variables(learner.variables)
        self.task_state = _constants(task_state)
        dtype = learner.model.compute_dtype

        @tf.function(input_signature=[_images_spec(example_shape)])
        def serve(images):
            images = checks.with_checks(checks.check_batch(images, "images", example_shape), images)
            state = tf.nest.pack_sequence_as(task_state, [tf.convert_to_tensor(v) for v in self.task_state])
            logits = learner.predict(state, tf.cast(images, dtype), training=training)
            return classifier_outputs(tf.cast(logits, tf.float32))

        self.serve = serve


class AdaptedFromExportModule(tf.Module):
    """`serving_default(images)` built on a loaded few-shot export's `predict_task`."""

    def __init__(self, predictor: FewShotPredictor, task_state, example_shape):
        super().__init__(name="adapted_classifier")
        self.few_shot = predictor.saved_model  # Tracked: its variables and functions are saved with us.
        self.learner_variables = []
        self.task_state = _constants(task_state)

        @tf.function(input_signature=[_images_spec(example_shape)])
        def serve(images):
            images = checks.with_checks(checks.check_batch(images, "images", example_shape), images)
            return predictor.predict_with_state([tf.convert_to_tensor(v) for v in self.task_state], images)

        self.serve = serve


def export_adapted_classifier(
    learner: Learner,
    task_state,
    class_names,
    export_root="saved_models",
    name: str = "adapted_classifier",
    model_card: dict | None = None,
    training: bool | None = None,
    input_shape=None,
    preprocessing: dict | None = None,
) -> pathlib.Path:
    """Exports a plain classifier: `learner.predict` with a fixed task state.

    Args:
        learner: the classification `Learner` the task state belongs to.
        task_state: what `learner.adapt(support_x, support_y)` returned.
        class_names: one name per class; `class_names[i]` names class `i`.
        export_root, name, model_card, input_shape, preprocessing: as in
            `export_few_shot_classifier`.
        training: passed to the network (None: the learner's
            `training_at_test`). True (MAML) normalises with the statistics of
            the request's batch: send a batch of several images, not one at a time.

    Returns:
        The path of the new version directory.

    Raises:
        TypeError: if `learner` is not a `Learner`.
        ValueError: if `class_names` does not name every class of the task state.

    Example:

    ```python
    state = maml.adapt(support_x, support_y)
    path = export_adapted_classifier(maml, state, ["cat", "dog"], name="pets")
    ```
    """
    check_export_arguments(learner, CLASSIFICATION, name, model_card)
    training = learner.training_at_test if training is None else training
    example_shape = example_shape_of(learner, input_shape)
    dummy = tf.zeros((2,) + example_shape, learner.model.compute_dtype)
    ways = int(learner.predict(task_state, dummy, training=False).shape[-1])
    class_names = [str(c) for c in class_names]
    if len(class_names) != ways:
        raise ValueError(
            f"`class_names` must name each of the {ways} classes of the task state. "
            f"Received: {len(class_names)} class_names={class_names!r}"
        )
    module = AdaptedClassifierModule(learner, task_state, example_shape, training)
    computed = learner_card(learner, example_shape, preprocessing, training)
    computed.update(ways=ways, class_names=class_names)
    return save_export(module, "adapted_classifier", export_root, name, computed, model_card)


def adapt_export(few_shot_path, support_dir, export_root="saved_models", name="adapted_classifier",
                 model_card=None) -> pathlib.Path:
    """Adapts a few-shot classifier export to a support folder; exports a plain classifier.

    Args:
        few_shot_path: a few-shot classifier export (`<root>/<name>/<version>`).
        support_dir: one sub-folder of images per class (sorted names: labels 0..N-1).
        export_root, name, model_card: as in `export_adapted_classifier`.

    Returns:
        The new export's version directory (class names in its model card).

    Raises:
        ValueError: if the export is not a few-shot classifier, or `support_dir`
            holds a number of classes it does not serve.

    Example:

    ```python
    path = adapt_export("saved_models/omniglot_5way/1", "my_classes/", name="my_classes")
    ```
    """
    predictor = FewShotPredictor(few_shot_path)
    if predictor.kind != "few_shot_classifier":
        raise ValueError(f"`few_shot_path` must be a few-shot classifier export. Received: {few_shot_path} "
                         f"of kind {predictor.kind!r}")
    images, labels, class_names = predictor.read_support(support_dir)
    task_state = predictor.adapt_arrays(images, labels)
    module = AdaptedFromExportModule(predictor, task_state, tuple(predictor.input_shape))
    source = predictor.card
    computed = {key: source[key] for key in ("algorithm", "input", "inner_steps", "inner_learning_rates",
                                             "batch_norm_batch_statistics", "versions", "training", "evaluation")
                if key in source}
    computed.update(
        ways=len(class_names),
        class_names=class_names,
        adapted_from={"export": str(few_shot_path), "support_dir": str(support_dir),
                      "support_examples_per_class": np.bincount(labels).tolist()},
    )
    return save_export(module, "adapted_classifier", export_root, name, computed, model_card)
