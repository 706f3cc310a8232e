"""Tests of the served signature's request validation (tfmeta/export/checks.py) under load."""

import json
import os
import pathlib
import pickle
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import toy

HERE = pathlib.Path(__file__).parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


_LOADED = {}


def _call(path, request):
    """Runs the export's signature (each export loaded once per test session)."""
    if path not in _LOADED:
        _LOADED[path] = tf.saved_model.load(str(path))
    serve = _LOADED[path].signatures["serving_default"]
    return {k: v.numpy() for k, v in serve(**{k: tf.constant(v) for k, v in request.items()}).items()}


# ------------------------------------------------------------------ bad requests


def _bad_requests():
    """`(case, request, expected message)` for invalid requests built from a valid one."""
    ok = toy.classification_request(np.random.default_rng(4))
    h, w, c = toy.IMAGE_SHAPE
    return [
        ("label out of range", {**ok, "support_labels": np.array([0, 1, 2, 3, 1, 2], np.int32)},
         r"`support_labels` must lie in \[0, 3\)"),
        ("negative label", {**ok, "support_labels": np.array([0, 1, 2, -1, 1, 2], np.int32)},
         r"`support_labels` must lie in \[0, 3\)"),
        ("class without example", {**ok, "support_labels": np.array([0, 1, 0, 1, 0, 1], np.int32)},
         r"every class 0..2 needs at least one example in `support_labels`.*classes:\] \[2\]"),
        ("wrong image size", {**ok, "query_images": np.zeros((2, h + 1, w, c), np.float32)},
         rf"`query_images` must have shape \[batch, {h}, {w}, 1\]. Received: query_images.shape=\] \[2 {h + 1} {w} 1\]"),
        ("wrong channels", {**ok, "support_images": np.zeros((6, h, w, 3), np.float32)},
         rf"`support_images` must have shape \[batch, {h}, {w}, 1\]. Received: support_images.shape=\] \[6 {h} {w} 3\]"),
        ("empty support", {**ok, "support_images": np.zeros((0, h, w, c), np.float32),
                           "support_labels": np.zeros((0,), np.int32)},
         r"`support_images` must hold at least one example"),
        ("empty query", {**ok, "query_images": np.zeros((0, h, w, c), np.float32)},
         r"`query_images` must hold at least one example"),
        ("label count", {**ok, "support_labels": ok["support_labels"][:4]},
         r"`support_labels` must have one entry per example of `support_images`"),
    ]


@pytest.mark.parametrize("case", [c[0] for c in _bad_requests()])
def test_bad_request_gets_clear_error(classifier, case):
    _, path = classifier
    _, request, message = next(c for c in _bad_requests() if c[0] == case)
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        _call(path, request)


def test_bad_requests_through_session_without_client_checks(classifier):
    """TF Serving feeds tensors unchecked: the in-graph checks must still fire."""
    _, path = classifier
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        signature = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(path)).signature_def["serving_default"]
        fetch = [graph.get_tensor_by_name(signature.outputs["logits"].name)._as_tf_output()]
        for case, request, message in _bad_requests():
            feed = {graph.get_tensor_by_name(signature.inputs[k].name)._as_tf_output(): v for k, v in request.items()}
            with pytest.raises(tf.errors.InvalidArgumentError, match=message):
                # Bypasses the Python client's feed-shape check, like the C++ server.
                session._call_tf_sessionrun(None, feed, fetch, [], None)


def test_wrong_dtype_is_rejected_by_the_signature(classifier):
    _, path = classifier
    request = toy.classification_request(np.random.default_rng(5))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"expected to be a int32 tensor but is a int64 tensor"):
        _call(path, {**request, "support_labels": request["support_labels"].astype(np.int64)})
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"expected to be a float tensor but is a double tensor"):
        _call(path, {**request, "query_images": request["query_images"].astype(np.float64)})


def test_mixed_stream_of_requests(classifier, tmp_path):
    """>= 1,000 valid and invalid requests to one loaded model: right answers, bounded memory."""
    learner, path = classifier
    rng = np.random.default_rng(6)
    valid = []
    for _ in range(24):
        request = toy.classification_request(rng, shots=int(rng.integers(1, 4)), queries=int(rng.integers(1, 4)))
        valid.append({"inputs": request, "logits": toy.eager_classifier_outputs(learner, request), "error": None})
    invalid = [{"inputs": r, "logits": None, "error": "Received"} for _, r, _ in _bad_requests()]
    invalid.append({"inputs": {**valid[0]["inputs"], "support_labels": valid[0]["inputs"]["support_labels"].astype(np.int64)},
                    "logits": None, "error": "int32"})
    stream = [valid[i % len(valid)] if rng.random() < 0.7 else invalid[i % len(invalid)] for i in range(1000)]
    with open(tmp_path / "requests.pkl", "wb") as f:
        pickle.dump(stream, f)
    result = subprocess.run(
        [sys.executable, str(HERE / "serve_stream.py"), str(path), str(tmp_path / "requests.pkl")],
        capture_output=True, text=True, env=ENV, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["failures"] == []
    assert report["valid_ok"] == sum(r["error"] is None for r in stream)
    assert report["invalid_ok"] == sum(r["error"] is not None for r in stream)
    assert report["valid_ok"] > 600 and report["invalid_ok"] > 200
    assert report["imported_tfmeta"] is False
    rss_warm, rss_end = report["rss_mib"]
    assert rss_end - rss_warm < 25, f"RSS grew from {rss_warm:.1f} to {rss_end:.1f} MiB after warm-up"
