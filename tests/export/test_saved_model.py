"""Tests of tfmeta/export/saved_model.py: layout, model card, loaders, numbers, bad requests."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import toy
from tfmeta.export import export_few_shot_classifier, read_model_card
from tfmeta.export import export_adapted_classifier

HERE = pathlib.Path(__file__).parent
VENV_BIN = pathlib.Path(sys.executable).parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def _call(path, request):
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    return {k: v.numpy() for k, v in serve(**{k: tf.constant(v) for k, v in request.items()}).items()}


def _session_run(path, request, outputs=("logits", "probabilities", "classes")):
    """The TF1 Session-based loader, as TF Serving's C++ server uses it."""
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(path))
        signature = meta_graph.signature_def["serving_default"]
        feed = {signature.inputs[k].name: v for k, v in request.items()}
        fetches = {k: signature.outputs[k].name for k in outputs}
        return session.run(fetches, feed)


def test_model_card(classifier):
    learner, path = classifier
    card = read_model_card(path)
    assert card["kind"] == "few_shot_classifier"
    assert card["ways"] == toy.WAYS
    assert card["shots"] == 2
    assert card["inner_steps"] == 2
    assert card["input"]["shape"] == list(toy.IMAGE_SHAPE)
    assert card["input"]["preprocessing"]["image_size"] == list(toy.IMAGE_SHAPE[:2])
    assert card["algorithm"] == learner.config()
    assert card["evaluation"] == {"accuracy": 0.5, "ci95": 0.01, "episodes": 600}
    assert card["training"]["meta_batch_size"] == 4
    inputs = card["signature"]["inputs"]
    assert inputs["support_images"] == {"dtype": "float32", "shape": [None, *toy.IMAGE_SHAPE]}
    assert inputs["support_labels"] == {"dtype": "int32", "shape": [None]}
    assert card["signature"]["outputs"]["classes"]["dtype"] == "int64"


def test_bad_arguments_are_rejected(classifier, tmp_path):
    learner, _ = classifier
    with pytest.raises(ValueError, match="Received: name='a/b'"):
        export_few_shot_classifier(learner, tmp_path, "a/b")
    with pytest.raises(ValueError, match="reserved keys"):
        export_few_shot_classifier(learner, tmp_path, "m", model_card={"signature": {}})
    with pytest.raises(ValueError, match="JSON-serialisable"):
        export_few_shot_classifier(learner, tmp_path, "m", model_card={"x": object()})
    with pytest.raises(TypeError, match="Received: learner=str"):
        export_few_shot_classifier("maml", tmp_path, "m")
    assert not (tmp_path / "m").exists() or list((tmp_path / "m").iterdir()) == []


# ------------------------------------------------------------------ numbers


def test_loaded_signature_matches_eager(classifier):
    learner, path = classifier
    request = toy.classification_request(np.random.default_rng(0))
    expected = toy.eager_classifier_outputs(learner, request)
    out = _call(path, request)
    assert out["logits"].shape == (3 * toy.WAYS, toy.WAYS)
    np.testing.assert_allclose(out["logits"], expected, atol=1e-5)
    np.testing.assert_allclose(out["probabilities"], tf.nn.softmax(expected).numpy(), atol=1e-5)
    assert out["classes"].dtype == np.int64
    np.testing.assert_array_equal(out["classes"], np.argmax(expected, axis=-1))
    # Adaptation really happens in the graph: zero steps gives other logits.
    assert not np.allclose(expected, toy.eager_classifier_outputs(learner, request, steps=0), atol=1e-3)


def test_session_loader_matches_eager(classifier):
    learner, path = classifier
    request = toy.classification_request(np.random.default_rng(1))
    expected = toy.eager_classifier_outputs(learner, request)
    out = _session_run(path, request)
    np.testing.assert_allclose(out["logits"], expected, atol=1e-5)
    np.testing.assert_array_equal(out["classes"], np.argmax(expected, axis=-1))


def test_regressor_matches_eager(regressor):
    learner, path = regressor
    rng = np.random.default_rng(0)
    x = rng.uniform(-5, 5, (10, 1)).astype(np.float32)
    request = {"support_x": x, "support_y": 2 * np.sin(x), "query_x": np.linspace(-5, 5, 7, dtype=np.float32)[:, None]}
    fast = learner.adapt(tf.constant(request["support_x"]), tf.constant(request["support_y"]))
    expected = learner.predict(fast, tf.constant(request["query_x"])).numpy()
    np.testing.assert_allclose(_call(path, request)["predictions"], expected, atol=1e-5)
    np.testing.assert_allclose(_session_run(path, request, ("predictions",))["predictions"], expected, atol=1e-5)
    assert read_model_card(path)["signature"]["outputs"]["predictions"]["shape"] == [None, 1]
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"`support_y` must have one entry per example"):
        _call(path, {**request, "support_y": request["support_y"][:3]})


def test_adapted_classifier_matches_eager(adapted):
    learner, fast, names, path = adapted
    images = np.random.default_rng(3).random((5, *toy.IMAGE_SHAPE), dtype=np.float32)
    expected = learner.predict(fast, tf.constant(images)).numpy()
    np.testing.assert_allclose(_call(path, {"images": images})["logits"], expected, atol=1e-5)
    np.testing.assert_allclose(_session_run(path, {"images": images})["logits"], expected, atol=1e-5)
    card = read_model_card(path)
    assert card["kind"] == "adapted_classifier"
    assert card["class_names"] == names
    with pytest.raises(ValueError, match="Received: 2 class_names"):
        export_adapted_classifier(learner, fast, ["a", "b"], path.parent.parent, "x")


# ------------------------------------------------------------------ self-contained


_NO_TFMETA = r"""
import sys, json, numpy as np, tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
request = dict(np.load(sys.argv[2]))
out = serve(**{k: tf.constant(v) for k, v in request.items()})
np.save(sys.argv[3], out["logits"].numpy())
print(json.dumps({"tfmeta": "tfmeta" in sys.modules, "keras": "keras" in sys.modules}))
"""


def test_loads_in_a_process_without_tfmeta(classifier, tmp_path):
    learner, path = classifier
    request = toy.classification_request(np.random.default_rng(2))
    np.savez(tmp_path / "request.npz", **request)
    result = subprocess.run(
        [sys.executable, "-c", _NO_TFMETA, str(path), str(tmp_path / "request.npz"), str(tmp_path / "logits.npy")],
        capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["tfmeta"] is False
    expected = toy.eager_classifier_outputs(learner, request)
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), expected, atol=1e-5)


def test_saved_model_cli_show_and_run(classifier, tmp_path):
    learner, path = classifier
    cli = str(VENV_BIN / "saved_model_cli")
    show = subprocess.run([cli, "show", "--dir", str(path), "--all"], capture_output=True, text=True, env=ENV, timeout=120)
    assert show.returncode == 0, show.stderr[-2000:]
    for name in ("serving_default", "support_images", "support_labels", "query_images", "logits", "probabilities", "classes"):
        assert name in show.stdout
    request = {
        "support_images": np.round(np.linspace(0, 1, 6 * 256), 3).reshape(6, 16, 16, 1).astype(np.float32),
        "support_labels": np.array([0, 1, 2, 2, 1, 0], np.int32),
        "query_images": np.round(np.linspace(1, 0, 4 * 256), 3).reshape(4, 16, 16, 1).astype(np.float32),
    }
    # saved_model_cli takes Python literals: nested lists.
    exprs = ";".join(f"{k}={v.tolist()}" for k, v in request.items())
    run = subprocess.run(
        [cli, "run", "--dir", str(path), "--tag_set", "serve", "--signature_def", "serving_default",
         "--input_exprs", exprs, "--outdir", str(tmp_path / "out")],
        capture_output=True, text=True, env=ENV, timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    expected = toy.eager_classifier_outputs(learner, request)
    np.testing.assert_allclose(np.load(tmp_path / "out" / "logits.npy"), expected, atol=1e-5)




def test_maml_plus_plus_state_is_exported(tmp_path):
    """Learned per-step rates, per-step BatchNorm statistics and weights travel with the export."""
    learner = toy.classifier_learner(seed=5, inner_steps=2, learn_inner_lr=True, per_step_bn_stats=True,
                                         per_step_bn_weights=True)
    for v in learner.extra_variables:  # Distinct learned rates and BatchNorm weights per step.
        scale = np.linspace(0.5, 1.5, v.shape[0]).reshape((-1,) + (1,) * (len(v.shape) - 1))
        v.assign(v.numpy() * scale + 0.1 * (scale - 1.0))
    path = export_few_shot_classifier(learner, tmp_path, "mpp")
    card = read_model_card(path)
    assert any(isinstance(r, list) and len(r) == 2 for r in card["inner_learning_rates"].values())
    request = toy.classification_request(np.random.default_rng(8))
    expected = toy.eager_classifier_outputs(learner, request)
    np.testing.assert_allclose(_session_run(path, request)["logits"], expected, atol=1e-5)
    np.testing.assert_allclose(_call(path, request)["logits"], expected, atol=1e-5)
