"""`FewShotPredictor`: a small Python client of tfmeta exports (images on disk in, class names out)."""

import dataclasses
import pathlib

import numpy as np
import tensorflow as tf

from tfmeta.data.sources import ClassDataset, read_image_files
from tfmeta.export.exporter import SIGNATURE_KEY, classifier_outputs
from tfmeta.export.model_card import MODEL_CARD_FORMAT_1, read_model_card


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One query's answer.

    Attributes:
        query: the query (image path or index).
        class_name: the predicted class's name.
        probability: its probability.
        class_id: its index in the model's outputs.
    """

    query: str
    class_name: str
    probability: float
    class_id: int


class FewShotPredictor:
    """Runs a tfmeta export on image files, preprocessed as its model card says.

    Works with few-shot classifier exports (a support folder of class folders is
    adapted to in each call) and adapted classifier exports (class names come from
    the model card; no support set). A few-shot export can also adapt once
    (`adapt_arrays`) and predict many times with that task state
    (`predict_with_state`): that is what `tfmeta.export.adapt_export` builds on.

    Args:
        path: an export's version directory (`saved_models/<name>/<version>`).

    Raises:
        FileNotFoundError: if `path` holds no model card.
        ValueError: if the export is not an image classifier.

    Example:

    ```python
    predictor = tfmeta.export.load_few_shot("saved_models/omniglot_5way/1")
    for p in predictor.predict(["query/a.png"], support_dir="support/"):
        print(p.query, p.class_name, p.probability)
    ```
    """

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self.card = read_model_card(self.path)
        self.kind = self.card["kind"]
        if self.kind not in ("few_shot_classifier", "adapted_classifier"):
            raise ValueError(
                "`path` must be a few-shot or adapted classifier export. "
                f"Received: an export of kind {self.kind!r} at {self.path}"
            )
        self._loaded = tf.saved_model.load(str(self.path))
        self._serve = self._loaded.signatures[SIGNATURE_KEY]
        self.ways = int(self.card["ways"])
        self.any_ways = bool(self.card.get("any_ways", False))
        self.input_shape = tuple(self.card["input"]["shape"])
        preprocessing = self.card["input"].get("preprocessing", {})
        self.image_size = tuple(preprocessing.get("image_size", self.input_shape[:2]))
        self.channels = int(preprocessing.get("channels", self.input_shape[-1]))
        self.invert = bool(preprocessing.get("invert", False))

    @property
    def saved_model(self):
        """The loaded SavedModel object (`tf.saved_model.load`), e.g. to track it in a new module."""
        return self._loaded

    # ------------------------------------------------------------ images

    def read_images(self, paths) -> np.ndarray:
        """Reads image files as the model expects them: `(n, H, W, C)` float32 in [0, 1]."""
        paths = [str(p) for p in paths]
        if not paths:
            raise ValueError("`query` must name at least one image file. Received: query=[]")
        return read_image_files(paths, image_size=self.image_size, invert=self.invert, channels=self.channels)

    def read_support(self, support_dir):
        """Reads a folder of class folders: `(images, labels, class_names)`.

        Raises:
            ValueError: if the folder does not hold exactly `ways` classes (at
                least 2 and at most `ways` for exports that serve any number).
        """
        source = ClassDataset.from_folder(support_dir, image_size=self.image_size, invert=self.invert,
                                          channels=self.channels)
        if self.any_ways and not 2 <= source.num_classes <= self.ways:
            raise ValueError(
                f"`support_dir` must hold one folder per class, 2 to {self.ways} classes for this model. "
                f"Received: {source.num_classes} classes {source.class_names} in {support_dir}"
            )
        if not self.any_ways and source.num_classes != self.ways:
            raise ValueError(
                f"`support_dir` must hold one folder per class, {self.ways} classes for this "
                f"{self.ways}-way model. Received: {source.num_classes} classes {source.class_names} in {support_dir}"
            )
        labels = np.concatenate([np.full(source.num_images(c), c, np.int32) for c in range(source.num_classes)])
        return source.images.astype(np.float32), labels, list(source.class_names)

    # ------------------------------------------------------------ predict

    def predict_arrays(self, query_images, support_images=None, support_labels=None) -> dict:
        """Runs the signature on arrays; returns its outputs as numpy arrays."""
        if self.kind == "adapted_classifier":
            inputs = {"images": tf.constant(query_images, tf.float32)}
        else:
            if support_images is None or support_labels is None:
                raise ValueError("A few-shot export needs `support_images` and `support_labels`. Received: None")
            inputs = {
                "support_images": tf.constant(support_images, tf.float32),
                "support_labels": tf.constant(support_labels, tf.int32),
                "query_images": tf.constant(query_images, tf.float32),
            }
        return {k: v.numpy() for k, v in self._serve(**inputs).items()}

    def adapt_arrays(self, support_images, support_labels) -> list:
        """Runs the export's adaptation once: the task state as a flat list of tensors.

        Raises:
            ValueError: if this is not a few-shot export.
        """
        self._check_few_shot("adapt_arrays")
        images, labels = tf.constant(support_images, tf.float32), tf.constant(support_labels, tf.int32)
        if self.card["format"] == MODEL_CARD_FORMAT_1:  # exports of tfmeta 0.1 (MAML family)
            fast = self._loaded.adapt_weights(images, labels)
            self._num_trainable = len(fast["trainable"])
            return list(fast["trainable"]) + list(fast["non_trainable"])
        return list(self._loaded.adapt_task(images, labels)["task_state"])

    def predict_with_state(self, task_state, query_images) -> dict:
        """Outputs (`logits`, `probabilities`, `classes`) for queries under a task state from `adapt_arrays`.

        Works inside a `tf.function` too (tensors in, tensors out).
        """
        self._check_few_shot("predict_with_state")
        query = tf.cast(query_images, tf.float32)
        if self.card["format"] == MODEL_CARD_FORMAT_1:
            n = self._num_trainable
            return classifier_outputs(self._loaded.predict_with_weights(task_state[:n], task_state[n:], query))
        return self._loaded.predict_task(list(task_state), query)

    def _check_few_shot(self, what):
        if self.kind != "few_shot_classifier":
            raise ValueError(f"`{what}` needs a few-shot classifier export. Received: an export of kind {self.kind!r}")

    def predict(self, query_paths, support_dir=None) -> list:
        """Predicts the class of each query image.

        Args:
            query_paths: image files to classify.
            support_dir: for a few-shot export, a folder with one sub-folder of
                images per class (sorted names give the labels 0..N-1).

        Returns:
            A list of `Prediction`, one per query, in order.

        Raises:
            ValueError: if `support_dir` is missing for a few-shot export or
                holds the wrong number of classes.
        """
        queries = self.read_images(query_paths)
        if self.kind == "adapted_classifier":
            class_names = list(self.card["class_names"])
            outputs = self.predict_arrays(queries)
        else:
            if support_dir is None:
                raise ValueError(f"A few-shot export needs `support_dir`. Received: support_dir=None ({self.path})")
            support_images, support_labels, class_names = self.read_support(support_dir)
            outputs = self.predict_arrays(queries, support_images, support_labels)
        predictions = []
        for query, classes, probabilities in zip(query_paths, outputs["classes"], outputs["probabilities"]):
            class_id = int(classes)
            predictions.append(Prediction(str(query), class_names[class_id], float(probabilities[class_id]), class_id))
        return predictions


def load_few_shot(path) -> FewShotPredictor:
    """Loads a tfmeta classifier export for prediction from image files (see `FewShotPredictor`)."""
    return FewShotPredictor(path)
