"""The README's TF Serving REST example (docs/serving/predict_request.json) runs against a real export."""

import json
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmeta.export import export_few_shot_classifier, read_model_card

REQUEST = pathlib.Path(__file__).resolve().parents[2] / "docs" / "serving" / "predict_request.json"
_DTYPES = {"float32": np.float32, "int32": np.int32}


@pytest.fixture(scope="module")
def omniglot_shaped_export(tmp_path_factory):
    """A 5-way 28x28x1 Conv-4 MAML export (narrow, untrained: the numbers are compared, not judged)."""
    from tfmeta.learners import MAML  # noqa: PLC0415
    from tfmeta.models import conv4  # noqa: PLC0415

    keras.utils.set_random_seed(0)
    learner = MAML(conv4(ways=5, input_shape=(28, 28, 1), filters=8), inner_steps=2, inner_lr=0.4)
    return learner, export_few_shot_classifier(learner, tmp_path_factory.mktemp("docs"), "omniglot_5way_1shot")


def _as_served(body, card):
    """What TF Serving does with a columnar REST body: lists -> tensors of the signature's dtypes."""
    assert body["signature_name"] == "serving_default"
    specs = card["signature"]["inputs"]
    assert sorted(body["inputs"]) == sorted(specs)
    return {name: np.asarray(value, _DTYPES[specs[name]["dtype"]]) for name, value in body["inputs"].items()}


def test_rest_example_runs_through_the_session_loader(omniglot_shaped_export):
    learner, path = omniglot_shaped_export
    request = _as_served(json.loads(REQUEST.read_text()), read_model_card(path))
    assert request["support_images"].shape == (5, 28, 28, 1)
    assert request["query_images"].shape == (5, 28, 28, 1)
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        signature = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(path)).signature_def["serving_default"]
        out = session.run({k: v.name for k, v in signature.outputs.items()},
                          {signature.inputs[k].name: v for k, v in request.items()})
    # The REST response is {"outputs": {"logits": [[...]], "probabilities": [[...]], "classes": [...]}}.
    response = json.loads(json.dumps({"outputs": {k: v.tolist() for k, v in out.items()}}))
    assert sorted(response["outputs"]) == ["classes", "logits", "probabilities"]
    fast = learner.adapt(tf.constant(request["support_images"]), tf.constant(request["support_labels"]))
    expected = learner.predict(fast, tf.constant(request["query_images"])).numpy()
    np.testing.assert_allclose(np.array(response["outputs"]["logits"]), expected, atol=1e-5)
    np.testing.assert_allclose(np.array(response["outputs"]["probabilities"]).sum(-1), 1.0, atol=1e-5)
    assert response["outputs"]["classes"] == expected.argmax(-1).tolist()
