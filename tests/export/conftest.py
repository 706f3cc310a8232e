"""Exports shared by the export tests (built once per session: saving takes seconds)."""

import sys
import pathlib

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))

import toy  # noqa: E402

from tfmeta.export import export_adapted_classifier, export_few_shot_classifier, export_few_shot_regressor  # noqa: E402


@pytest.fixture(scope="session")
def classifier(tmp_path_factory):
    """`(learner, export_path)`: a small few-shot classifier and its export."""
    root = tmp_path_factory.mktemp("few_shot")
    learner = toy.classifier_learner(seed=1, inner_steps=2)
    card = {
        "shots": 2,
        "training": {"meta_batch_size": 4, "steps": 0},
        "evaluation": {"accuracy": 0.5, "ci95": 0.01, "episodes": 600},
    }
    path = export_few_shot_classifier(learner, root, "toy", model_card=card)
    return learner, path


@pytest.fixture(scope="session")
def regressor(tmp_path_factory):
    learner = toy.regressor_learner(seed=2, inner_steps=3)
    path = export_few_shot_regressor(learner, tmp_path_factory.mktemp("reg"), "sinusoid")
    return learner, path


@pytest.fixture(scope="session")
def adapted(classifier, tmp_path_factory):
    import numpy as np  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    learner, _ = classifier
    request = toy.classification_request(np.random.default_rng(7))
    fast = learner.adapt(tf.constant(request["support_images"]), tf.constant(request["support_labels"]))
    names = [f"class_{i}" for i in range(toy.WAYS)]
    path = export_adapted_classifier(learner, fast, names, tmp_path_factory.mktemp("adapted"), "toy_adapted")
    return learner, fast, names, path
