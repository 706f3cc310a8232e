"""Prototypical Networks: prototypes and distances by hand, unequal shots, one pass per task, export for any N."""

import json
import os
import pathlib
import pickle
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmeta.data.episode import Episode
from tfmeta.export import export_few_shot_classifier, read_model_card
from tfmeta.learners import PrototypicalNetwork
from tfmeta.models import conv4


def _identity_embedding(dim=2):
    """f(x) = x (a Dense layer with an identity kernel), so prototypes and distances can be done by hand."""
    model = keras.Sequential([keras.Input((dim,)), keras.layers.Dense(dim, use_bias=False)])
    model.layers[-1].kernel.assign(np.eye(dim, dtype=np.float32))
    return model


SUPPORT_X = np.array([[0.0, 0.0], [2.0, 0.0], [4.0, 4.0], [1.0, 2.0]], np.float32)  # class 0 has 3 shots
SUPPORT_Y = np.array([0, 0, 1, 0], np.int32)
QUERY_X = np.array([[1.0, 1.0], [3.0, 4.0]], np.float32)


def test_prototypes_and_euclidean_logits_by_hand_with_unequal_shots():
    protonet = PrototypicalNetwork(_identity_embedding())
    prototypes = protonet.adapt(SUPPORT_X, SUPPORT_Y)
    # class 0: mean of (0,0), (2,0), (1,2) = (1, 2/3); class 1: (4, 4)
    np.testing.assert_allclose(prototypes.numpy(), [[1.0, 2 / 3], [4.0, 4.0]], rtol=1e-6)
    logits = protonet.predict(prototypes, QUERY_X).numpy()
    # query (1,1): |.|^2 to (1, 2/3) = 1/9, to (4,4) = 18; query (3,4): 4 + 100/9, 1
    np.testing.assert_allclose(logits, -np.array([[1 / 9, 18.0], [4 + 100 / 9, 1.0]]), rtol=1e-5)


def test_cosine_logits_by_hand():
    protonet = PrototypicalNetwork(_identity_embedding(), distance="cosine", cosine_scale=10.0)
    prototypes = tf.constant([[1.0, 0.0], [1.0, 1.0]])
    logits = protonet.predict(prototypes, np.array([[0.0, 2.0]], np.float32)).numpy()
    np.testing.assert_allclose(logits, [[0.0, 10 / np.sqrt(2)]], rtol=1e-6, atol=1e-6)


def test_task_loss_is_the_query_cross_entropy_from_one_pass():
    protonet = PrototypicalNetwork(_identity_embedding())
    queries = np.array([[2.0, 1.5], [2.5, 2.5]], np.float32)  # near the middle: an O(1) loss
    episode = Episode(SUPPORT_X, SUPPORT_Y, queries, np.array([0, 1], np.int32))
    result = protonet.task_loss(episode, training=True)
    prototypes = np.array([[1.0, 2 / 3], [4.0, 4.0]])
    logits = -((queries[:, None, :] - prototypes[None]) ** 2).sum(-1)  # (2 queries, 2 classes)
    log_softmax = logits - np.logaddexp(logits[:, :1], logits[:, 1:])
    expected = -np.mean([log_softmax[0, 0], log_softmax[1, 1]])
    assert 0.1 < expected < 2.0
    np.testing.assert_allclose(float(result.loss), expected, rtol=1e-5)
    assert float(result.metrics["accuracy"]) == np.mean(logits.argmax(axis=1) == [0, 1])


def test_batchnorm_statistics_come_from_the_support_and_query_batch():
    """While meta-training the embedding normalises support and queries together (one batch), and
    returns the moving statistics updated once; at test time it runs on the moving statistics."""
    keras.utils.set_random_seed(0)
    protonet = PrototypicalNetwork(conv4(ways=None, input_shape=(16, 16, 1), filters=4, seed=0))
    rng = np.random.default_rng(0)
    episode = Episode(rng.random((6, 16, 16, 1), np.float32), np.repeat(np.arange(3), 2).astype(np.int32),
                      rng.random((9, 16, 16, 1), np.float32), np.repeat(np.arange(3), 3).astype(np.int32))
    result = protonet.task_loss(episode)
    both = tf.concat([episode.support_x, episode.query_x], 0)
    first_conv = protonet.model.get_layer("conv0")(both)
    batch_mean = tf.reduce_mean(first_conv, axis=[0, 1, 2]).numpy()
    # moving_mean <- 0.9 * 0 + 0.1 * batch mean (momentum 0.9), once: from the joint batch.
    np.testing.assert_allclose(result.state[0].numpy(), 0.1 * batch_mean, rtol=1e-4, atol=1e-6)
    # At test time (moving statistics) a query's embedding does not depend on the other queries.
    assert protonet.training_at_test is False
    np.testing.assert_allclose(protonet.embed(episode.query_x[:1]).numpy(), protonet.embed(episode.query_x).numpy()[:1],
                               rtol=1e-5, atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="Received: distance='manhattan'"):
        PrototypicalNetwork(_identity_embedding(), distance="manhattan")
    with pytest.raises(ValueError, match="adapts in one pass.*Received: steps=2"):
        PrototypicalNetwork(_identity_embedding()).adapt(SUPPORT_X, SUPPORT_Y, steps=2)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(1)
    protonet = PrototypicalNetwork(conv4(ways=None, input_shape=(16, 16, 1), filters=4, seed=1))
    for v in protonet.model.non_trainable_variables:  # moving statistics away from their initial values
        v.assign(v.numpy() * 0.5 + 0.1)
    path = export_few_shot_classifier(protonet, tmp_path_factory.mktemp("proto"), "proto", max_ways=50, max_shots=4)
    return protonet, path


@pytest.mark.parametrize("ways", [2, 5, 20, 50])
def test_one_export_answers_any_number_of_classes(exported, ways, serve_any_ways):
    serve_any_ways(*exported, ways)


def test_embed_signature_and_model_card(exported):
    protonet, path = exported
    images = np.random.default_rng(3).random((4, 16, 16, 1), np.float32)
    out = tf.saved_model.load(str(path)).signatures["embed"](images=images)["embeddings"].numpy()
    np.testing.assert_allclose(out, protonet.embed(images).numpy(), rtol=1e-5, atol=1e-5)
    card = read_model_card(path)
    assert card["any_ways"] and card["ways"] == 50 and card["max_shots"] == 4
    assert card["signatures"]["embed"]["outputs"]["embeddings"]["shape"] == [None, 4]
    assert card["batch_norm_batch_statistics"] is False  # moving statistics at test time


def test_bad_requests_name_what_was_wrong(exported):
    _, path = exported
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    images = np.zeros((6, 16, 16, 1), np.float32)
    cases = [
        (np.array([0, 0, 1, 1, 3, 3], np.int32), "Received no example of classes"),  # class 2 missing
        (np.array([0, 1, 2, 3, 4, 50], np.int32), r"must lie in \[0, 50\)"),
        (np.array([0, 0, 0, 0, 0, 1], np.int32), "at most 4 examples of a class"),
    ]
    for labels, message in cases:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            serve(support_images=images, support_labels=labels, query_images=images[:2])


def test_adapt_export_freezes_the_prototypes_of_a_support_folder(exported, tmp_path):
    """trainers.adapt's path: a few-shot ProtoNet export + a folder of 3 classes -> a plain classifier
    whose prototypes are constants (one forward pass per request), equal to the library's."""
    from PIL import Image

    from tfmeta.data.sources import ClassDataset
    from tfmeta.export import adapt_export

    protonet, path = exported
    rng = np.random.default_rng(4)
    for name, shots in (("a", 2), ("b", 1), ("c", 3)):  # unequal shots
        for i in range(shots):
            (tmp_path / "support" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (16, 16), np.uint8)).save(tmp_path / "support" / name / f"{i}.png")
    adapted = adapt_export(path, tmp_path / "support", tmp_path / "exports", "abc")
    card = read_model_card(adapted)
    assert card["kind"] == "adapted_classifier" and card["class_names"] == ["a", "b", "c"]
    support = ClassDataset.from_folder(tmp_path / "support")
    labels = np.repeat(np.arange(3, dtype=np.int32), [2, 1, 3])
    images = rng.random((5, 16, 16, 1), np.float32)
    expected = protonet.predict(protonet.adapt(support.images, labels), images).numpy()
    got = tf.saved_model.load(str(adapted)).signatures["serving_default"](images=images)["logits"].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


SERVE_STREAM = pathlib.Path(__file__).parents[2] / "export" / "serve_stream.py"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def _any_ways_request(rng, ways):
    shots = rng.integers(1, 5, size=ways)  # unequal shots, up to the export's max_shots
    labels = rng.permutation(np.repeat(np.arange(ways), shots)).astype(np.int32)
    return {"support_images": rng.random((len(labels), 16, 16, 1), np.float32), "support_labels": labels,
            "query_images": rng.random((int(rng.integers(1, 8)), 16, 16, 1), np.float32)}


def test_a_mixed_stream_of_any_ways_requests_in_a_process_without_tfmeta(exported, tmp_path):
    """1,000 requests of 2 to 50 classes, valid and invalid, to one loaded export in a process that
    never imports tfmeta: the library's answers, the right errors, bounded memory."""
    protonet, path = exported
    rng = np.random.default_rng(11)
    valid = []
    for ways in (2, 3, 5, 10, 20, 50) * 4:
        request = _any_ways_request(rng, ways)
        logits = protonet.predict(protonet.adapt(request["support_images"], request["support_labels"]),
                                  request["query_images"]).numpy()
        valid.append({"inputs": request, "logits": logits, "error": None})
    base = valid[0]["inputs"]
    n = len(base["support_labels"])
    six = np.zeros((6, 16, 16, 1), np.float32)
    invalid = [
        {"inputs": {**base, "support_images": six, "support_labels": np.int32([0, 0, 1, 1, 3, 3])},
         "logits": None, "error": "Received no example of classes"},
        {"inputs": {**base, "support_images": six, "support_labels": np.int32([0, 1, 2, 3, 4, 50])},
         "logits": None, "error": "must lie in [0, 50)"},
        {"inputs": {**base, "support_images": six, "support_labels": np.int32([0, 0, 0, 0, 0, 1])},
         "logits": None, "error": "at most 4 examples of a class"},
        {"inputs": {**base, "support_labels": base["support_labels"].astype(np.int64)}, "logits": None, "error": "int32"},
    ]
    stream = [valid[i % len(valid)] if rng.random() < 0.7 else invalid[i % len(invalid)] for i in range(1000)]
    with open(tmp_path / "requests.pkl", "wb") as f:
        pickle.dump(stream, f)
    done = subprocess.run([sys.executable, str(SERVE_STREAM), str(path), str(tmp_path / "requests.pkl")],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["failures"] == []
    assert report["valid_ok"] == sum(r["error"] is None for r in stream) > 600
    assert report["invalid_ok"] == sum(r["error"] is not None for r in stream) > 200
    assert report["imported_tfmeta"] is False
    rss_warm, rss_end = report["rss_mib"]
    assert rss_end - rss_warm < 25, f"RSS grew from {rss_warm:.1f} to {rss_end:.1f} MiB after warm-up"


def test_saved_model_cli_runs_a_20_way_request(exported, tmp_path):
    protonet, path = exported
    rng = np.random.default_rng(12)  # 1 shot: saved_model_cli takes the request as one argument (< 128 KiB)
    request = {"support_images": np.round(rng.random((20, 16, 16, 1)), 2).astype(np.float32),
               "support_labels": rng.permutation(20).astype(np.int32),
               "query_images": np.round(rng.random((3, 16, 16, 1)), 2).astype(np.float32)}
    cli = str(pathlib.Path(sys.executable).parent / "saved_model_cli")
    exprs = ";".join(f"{k}={v.tolist()}" for k, v in request.items())
    done = subprocess.run([cli, "run", "--dir", str(path), "--tag_set", "serve", "--signature_def", "serving_default",
                           "--input_exprs", exprs, "--outdir", str(tmp_path / "out")],
                          capture_output=True, text=True, env=ENV, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    # saved_model_cli's literals are float64, cast by the signature: the library on the same float32 values.
    expected = protonet.predict(protonet.adapt(request["support_images"].astype(np.float32), request["support_labels"]),
                                request["query_images"].astype(np.float32)).numpy()
    logits = np.load(tmp_path / "out" / "logits.npy")
    assert logits.shape == expected.shape == (len(request["query_images"]), 20)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
