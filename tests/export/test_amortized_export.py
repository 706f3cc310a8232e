"""Regressor exports of the amortized family: `stddev`, `task_metadata`, zero-shot requests, in every loader."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfmeta.export import export_few_shot_classifier, export_few_shot_regressor, read_model_card
from tfmeta.learners.amortized import CNPClassifier, ConditionalNeuralProcess, HyperNetwork
from tfmeta.models import mlp

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
RNG = np.random.default_rng(0)
REQUEST = {
    "support_x": RNG.uniform(-2, 2, (6, 1)).astype(np.float32),
    "support_y": RNG.normal(size=(6, 1)).astype(np.float32),
    "query_x": np.linspace(-2, 2, 9, dtype=np.float32)[:, None],
}
METADATA = np.array([0.5, 1.5], np.float32)


@pytest.fixture(scope="module")
def anp_export(tmp_path_factory):
    """An attentive CNP conditioned on 2-d metadata, and its export."""
    anp = ConditionalNeuralProcess(encoder_sizes=(16, 16), decoder_sizes=(16,), attention=True, num_heads=4,
                                   attention_sizes=(16,), self_attention_layers=1, metadata_dim=2,
                                   metadata_sizes=(8,), seed=0)
    path = export_few_shot_regressor(anp, tmp_path_factory.mktemp("anp"), "anp", model_card={"note": "test"})
    return anp, path


def _eager(learner, request, metadata=None):
    state = learner.adapt_task(tf.constant(request["support_x"]), tf.constant(request["support_y"]),
                               metadata=None if metadata is None else tf.constant(metadata))
    out = learner.predict(state, tf.constant(request["query_x"]))
    return out if isinstance(out, dict) else {"mean": out}


def _session_run(path, request, outputs):
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(path))
        signature = meta_graph.signature_def["serving_default"]
        feed = {signature.inputs[k].name: v for k, v in request.items()}
        return session.run({k: signature.outputs[k].name for k in outputs}, feed)


def test_stddev_and_task_metadata_match_the_eager_learner_in_both_loaders(anp_export):
    anp, path = anp_export
    expected = _eager(anp, REQUEST, METADATA)
    request = {**REQUEST, "task_metadata": METADATA}
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    got = serve(**{k: tf.constant(v) for k, v in request.items()})
    np.testing.assert_allclose(got["predictions"].numpy(), expected["mean"].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["stddev"].numpy(), expected["stddev"].numpy(), rtol=1e-5, atol=1e-5)
    session = _session_run(path, request, ("predictions", "stddev"))  # TF Serving's loader
    np.testing.assert_allclose(session["stddev"], expected["stddev"].numpy(), rtol=1e-5, atol=1e-5)
    card = read_model_card(path)
    assert card["probabilistic"] is True and card["metadata_dim"] == 2 and card["algorithm"]["attention"]
    assert card["signature"]["inputs"]["task_metadata"]["shape"] == [None]  # [2], checked at run time
    assert card["signature"]["outputs"]["stddev"]["shape"] == [None, 1]


def test_saved_model_cli_shows_and_runs_the_regressor(anp_export, tmp_path):
    """TF's own command-line tool sees the four inputs and two outputs and serves the eager learner's answer."""
    anp, path = anp_export
    cli = str(pathlib.Path(sys.executable).parent / "saved_model_cli")
    show = subprocess.run([cli, "show", "--dir", str(path), "--all"], capture_output=True, text=True, env=ENV,
                          timeout=120)
    assert show.returncode == 0, show.stderr[-2000:]
    for name in ("serving_default", "support_x", "support_y", "query_x", "task_metadata", "predictions", "stddev"):
        assert name in show.stdout
    # saved_model_cli takes Python literals; rounded so that the literal is the array.
    request = {k: np.round(v, 3) for k, v in {**REQUEST, "task_metadata": METADATA}.items()}
    exprs = ";".join(f"{k}={v.tolist()}" for k, v in request.items())
    run = subprocess.run([cli, "run", "--dir", str(path), "--tag_set", "serve", "--signature_def", "serving_default",
                          "--input_exprs", exprs, "--outdir", str(tmp_path / "out")],
                         capture_output=True, text=True, env=ENV, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    expected = _eager(anp, request, request["task_metadata"])
    np.testing.assert_allclose(np.load(tmp_path / "out" / "predictions.npy"), expected["mean"].numpy(), atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "out" / "stddev.npy"), expected["stddev"].numpy(), atol=1e-5)


def test_zero_shot_request_and_adapt_once_predict_many(anp_export):
    anp, path = anp_export
    loaded = tf.saved_model.load(str(path))
    empty = {"support_x": np.zeros((0, 1), np.float32), "support_y": np.zeros((0, 1), np.float32),
             "query_x": REQUEST["query_x"], "task_metadata": METADATA}
    got = loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in empty.items()})
    expected = _eager(anp, empty, METADATA)
    np.testing.assert_allclose(got["predictions"].numpy(), expected["mean"].numpy(), rtol=1e-5, atol=1e-5)
    other = loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in {**empty, "task_metadata":
                                                                                  -METADATA}.items()})
    assert np.abs(other["predictions"].numpy() - got["predictions"].numpy()).max() > 1e-4  # metadata is read
    state = loaded.adapt_task(tf.constant(REQUEST["support_x"]), tf.constant(REQUEST["support_y"]),
                              tf.constant(METADATA))["task_state"]
    again = loaded.predict_task(state, tf.constant(REQUEST["query_x"]))
    np.testing.assert_allclose(again["stddev"].numpy(), _eager(anp, REQUEST, METADATA)["stddev"].numpy(),
                               rtol=1e-5, atol=1e-5)


def test_bad_requests_name_what_was_wrong(anp_export):
    _, path = anp_export
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    good = {**REQUEST, "task_metadata": METADATA}
    cases = [
        ({"task_metadata": np.zeros(3, np.float32)}, r"`task_metadata` must have shape \[2\]"),
        ({"support_y": REQUEST["support_y"][:4]}, "`support_y` must have one entry per example"),
        ({"query_x": np.zeros((0, 1), np.float32)}, "`query_x` must hold at least one example"),
        ({"support_x": np.zeros((6, 2), np.float32)}, r"`support_x` must have shape \[batch, 1\]"),
    ]
    for change, message in cases:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            serve(**{k: tf.constant(v) for k, v in {**good, **change}.items()})


_NO_TFMETA = r"""
import sys, json, numpy as np, tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
request = dict(np.load(sys.argv[2]))
out = serve(**{k: tf.constant(v) for k, v in request.items()})
np.savez(sys.argv[3], **{k: v.numpy() for k, v in out.items()})
print(json.dumps({"tfmeta": "tfmeta" in sys.modules, "keras": "keras" in sys.modules}))
"""


def test_a_hypernetwork_export_loads_in_a_process_without_tfmeta(tmp_path):
    """A deterministic regressor (no `stddev`) conditioned on metadata, zero-shot, in a plain TF process."""
    hypernet = HyperNetwork(mlp(hidden=(8,), seed=0), encoder_sizes=(8,), generator_sizes=(8,), metadata_dim=2,
                            metadata_sizes=(4,), generator_scale=0.5, seed=1)
    path = export_few_shot_regressor(hypernet, tmp_path / "exports", "hypernet")
    request = {"support_x": np.zeros((0, 1), np.float32), "support_y": np.zeros((0, 1), np.float32),
               "query_x": REQUEST["query_x"], "task_metadata": METADATA}
    np.savez(tmp_path / "request.npz", **request)
    result = subprocess.run([sys.executable, "-c", _NO_TFMETA, str(path), str(tmp_path / "request.npz"),
                             str(tmp_path / "out.npz")], capture_output=True, text=True, env=ENV, cwd=tmp_path,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["tfmeta"] is False
    out = dict(np.load(tmp_path / "out.npz"))
    assert set(out) == {"predictions"}  # not probabilistic: no stddev
    np.testing.assert_allclose(out["predictions"], _eager(hypernet, request, METADATA)["mean"].numpy(),
                               rtol=1e-5, atol=1e-5)


def test_a_cnp_without_metadata_keeps_the_three_inputs_and_refuses_an_empty_support(tmp_path):
    cnp = ConditionalNeuralProcess(encoder_sizes=(8,), decoder_sizes=(8,), seed=0)
    path = export_few_shot_regressor(cnp, tmp_path, "cnp")
    card = read_model_card(path)
    assert set(card["signature"]["inputs"]) == {"support_x", "support_y", "query_x"}
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    got = serve(**{k: tf.constant(v) for k, v in REQUEST.items()})
    np.testing.assert_allclose(got["stddev"].numpy(), _eager(cnp, REQUEST)["stddev"].numpy(), rtol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="`support_x` must hold at least one example"):
        serve(**{k: tf.constant(v) for k, v in {**REQUEST, "support_x": np.zeros((0, 1), np.float32),
                                               "support_y": np.zeros((0, 1), np.float32)}.items()})
    with pytest.raises(ValueError, match="adapts in one pass"):
        export_few_shot_regressor(cnp, tmp_path, "cnp", inner_steps=3)


def test_a_cnp_classifier_serves_any_number_of_classes(tmp_path):
    cnp = CNPClassifier(mlp(input_dim=4, hidden=(8,), outputs=6, seed=0), encoder_sizes=(8,), decoder_sizes=(8,),
                        seed=1)
    path = export_few_shot_classifier(cnp, tmp_path, "cnp_classifier", input_shape=(4,), max_ways=10, max_shots=3)
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    rng = np.random.default_rng(1)
    for ways in (2, 7):
        images = rng.normal(size=(2 * ways, 4)).astype(np.float32)
        labels = np.repeat(np.arange(ways), 2).astype(np.int32)
        queries = rng.normal(size=(3, 4)).astype(np.float32)
        got = serve(support_images=images, support_labels=labels, query_images=queries)["logits"].numpy()
        np.testing.assert_allclose(got, cnp.predict(cnp.adapt(images, labels), queries).numpy(), rtol=1e-5,
                                   atol=1e-5)
    with pytest.raises(ValueError, match="do not take class metadata yet.*Received: metadata_dim=2"):
        export_few_shot_classifier(CNPClassifier(mlp(input_dim=4, outputs=6), metadata_dim=2), tmp_path, "x",
                                   input_shape=(4,), max_ways=5)
