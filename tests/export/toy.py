"""Small learners and requests for the export tests."""

import keras
import numpy as np
import tensorflow as tf

from tfmeta.learners import MAML
from tfmeta.models import conv4, mlp

IMAGE_SHAPE = (16, 16, 1)
WAYS = 3


def classifier_learner(seed=0, inner_steps=2, image_shape=IMAGE_SHAPE, ways=WAYS, **maml_options):
    """MAML on a small Conv-4 (4 filters)."""
    keras.utils.set_random_seed(seed)
    return MAML(conv4(ways=ways, input_shape=image_shape, filters=4), inner_steps=inner_steps, inner_lr=0.3,
                **maml_options)


def regressor_learner(seed=0, inner_steps=2):
    keras.utils.set_random_seed(seed)
    return MAML(mlp(input_dim=1, hidden=(16, 16)), task="regression", inner_steps=inner_steps, inner_lr=0.01)


def classification_request(rng, shots=2, queries=3, ways=WAYS):
    """A valid request: every class `shots` times (shuffled), images in [0, 1]."""
    labels = rng.permutation(np.repeat(np.arange(ways), shots)).astype(np.int32)
    support = rng.random((ways * shots,) + IMAGE_SHAPE, dtype=np.float32)
    # Make classes separable: class k brightens row k.
    for i, k in enumerate(labels):
        support[i, k] += 1.0
    query = rng.random((ways * queries,) + IMAGE_SHAPE, dtype=np.float32)
    return {"support_images": support / 2, "support_labels": labels, "query_images": query}


def eager_classifier_outputs(learner, request, steps=None):
    state = learner.adapt(tf.constant(request["support_images"]), tf.constant(request["support_labels"]), steps=steps)
    logits = learner.predict(state, tf.constant(request["query_images"]))
    return np.asarray(logits)
