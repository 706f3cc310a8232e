"""Adapt once, export a plain classifier: from a few-shot export or a meta-training workdir."""

import dataclasses
import pathlib

import numpy as np
import tensorflow as tf

from tfmeta.algorithms.base import Weights
from tfmeta.export import checks
from tfmeta.export.model_card import build_model_card
from tfmeta.export.predictor import FewShotPredictor
from tfmeta.export.saved_model import (
    _classifier_outputs,
    _save,
    _signature_card,
    export_adapted_classifier,
)


class _AdaptedFromExport(tf.Module):
    """A plain classifier built on a loaded few-shot export's `predict_with_weights`."""

    def __init__(self, few_shot, fast, example_shape):
        super().__init__(name="adapted_classifier")
        self.few_shot = few_shot  # Tracked: its variables and functions are saved with us.
        self.trainable_weights_ = [tf.Variable(t, trainable=False, name="adapted") for t in fast["trainable"]]
        self.non_trainable_weights_ = [tf.Variable(t, trainable=False, name="adapted") for t in fast["non_trainable"]]

        @tf.function(input_signature=[tf.TensorSpec((None,) + example_shape, tf.float32, "images")])
        def serve(images):
            images = checks.with_checks(checks.check_batch(images, "images", example_shape), images)
            logits = few_shot.predict_with_weights(
                [tf.convert_to_tensor(v) for v in self.trainable_weights_],
                [tf.convert_to_tensor(v) for v in self.non_trainable_weights_],
                images,
            )
            return _classifier_outputs(logits)

        self.serve = serve


def adapt_export(few_shot_path, support_dir, export_root="saved_models", name="adapted_classifier",
                 model_card=None) -> pathlib.Path:
    """Adapts a few-shot classifier export to a support folder; exports a plain classifier.

    Args:
        few_shot_path: a few-shot classifier export (`<root>/<name>/<version>`),
            from a MAML-family algorithm.
        support_dir: one sub-folder of images per class (sorted names: labels 0..N-1).
        export_root, name, model_card: as in `export_adapted_classifier`.

    Returns:
        The new export's version directory (class names in its model card).

    Raises:
        ValueError: if the export cannot output its adapted weights (not MAML
            family) or `support_dir` does not hold `ways` classes.

    Example:

    ```python
    path = adapt_export("saved_models/omniglot_5way/1", "my_classes/", name="my_classes")
    ```
    """
    predictor = FewShotPredictor(few_shot_path)
    if predictor.kind != "few_shot_classifier" or not hasattr(predictor._loaded, "adapt_weights"):
        raise ValueError(
            "`few_shot_path` must be a few-shot classifier export of a MAML-family algorithm "
            f"(with adapt_weights). Received: {few_shot_path} of kind {predictor.kind!r}"
        )
    images, labels, class_names = predictor.read_support(support_dir)
    fast = predictor._loaded.adapt_weights(tf.constant(images, tf.float32), tf.constant(labels, tf.int32))
    source_card = predictor.card
    module = _AdaptedFromExport(predictor._loaded, fast, tuple(predictor.input_shape))
    concrete = module.serve.get_concrete_function()
    computed = {key: source_card[key] for key in ("algorithm", "input", "inner_steps", "inner_learning_rates",
                                                  "batch_norm_batch_statistics", "versions", "training",
                                                  "evaluation") if key in source_card}
    computed.update(
        ways=len(class_names),
        class_names=class_names,
        adapted_from={"export": str(few_shot_path), "support_dir": str(support_dir),
                      "support_examples_per_class": np.bincount(labels).tolist()},
    )
    card = build_model_card("adapted_classifier", _signature_card(concrete), computed, model_card)
    return _save(module, concrete, export_root, name, card)


def adapt_workdir(workdir, support_dir, export_root="saved_models", name="adapted_classifier", model_card=None,
                  data_dir=None) -> pathlib.Path:
    """Restores a meta-training workdir (`trainers.maml`), adapts to a support folder, exports.

    Args:
        workdir: a run directory holding `config.json` and `checkpoints/`.
        support_dir: one sub-folder of images per class.
        export_root, name, model_card: as in `export_adapted_classifier`.
        data_dir: overrides the config's `data_dir` (the training data is read
            to rebuild the learner's input shape).

    Returns:
        The new export's version directory.

    Raises:
        FileNotFoundError: if the workdir has no config or checkpoint.
        ValueError: if the run is not classification or the support folder
            holds the wrong number of classes.
    """
    from tfmeta.data.sources import ClassDataset  # noqa: PLC0415
    from tfmeta.training import checkpoints  # noqa: PLC0415
    from tfmeta.training.runner import build_trainer  # noqa: PLC0415

    config = checkpoints.load_config(workdir)
    overrides = {"workdir": str(workdir)}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    config = dataclasses.replace(config, **overrides)
    if config.is_regression:
        raise ValueError(f"`workdir` must hold a classification run. Received: dataset={config.dataset!r}")
    if checkpoints.latest_checkpoint(workdir) is None:
        raise FileNotFoundError(f"No checkpoint in the workdir. Received: workdir={str(workdir)!r}")
    trainer, sources = build_trainer(config, verbose=False)
    step = trainer.restore()
    algorithm = trainer.algorithm
    height, width, channels = sources.train.image_shape
    invert = config.dataset == "omniglot"  # from_omniglot stores strokes as 1.
    support = ClassDataset.from_folder(support_dir, image_size=(height, width), invert=invert, channels=channels)
    if support.num_classes != config.ways:
        raise ValueError(
            f"`support_dir` must hold {config.ways} class folders for this {config.ways}-way model. "
            f"Received: {support.num_classes} classes {support.class_names}"
        )
    labels = np.concatenate([np.full(support.num_images(c), c, np.int32) for c in range(support.num_classes)])
    fast = algorithm.adapt(tf.constant(support.images), tf.constant(labels), steps=config.eval_inner_steps)
    card = {
        "training": dataclasses.asdict(config),
        "checkpoint_step": step,
        "preprocessing": {"invert": invert},
        "adapted_from": {"workdir": str(workdir), "support_dir": str(support_dir)},
        **(model_card or {}),
    }
    return export_adapted_classifier(algorithm, Weights(list(fast.trainable), list(fast.non_trainable)),
                                     support.class_names, export_root, name, model_card=card)
