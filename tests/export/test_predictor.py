"""Tests of tfmeta/export/predictor.py and adapt.py, and of trainers.predict / trainers.adapt."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import toy
from tfmeta.data.sources import ClassDataset
from tfmeta.export import load_few_shot, read_model_card
from tfmeta.export import adapt_export

ROOT = pathlib.Path(__file__).resolve().parents[2]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
CLASSES = ("beta", "alpha", "gamma")  # Sorted: alpha=0, beta=1, gamma=2.


def _png(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8), mode="L").save(path)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A support folder (2 images per class, 20x20 so they get resized) and 4 query files."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for k, name in enumerate(sorted(CLASSES)):
        for i in range(2):
            pixels = rng.integers(0, 80, (20, 20))
            pixels[4 * k : 4 * k + 6] = 255  # A bright band per class.
            _png(root / "support" / name / f"{i}.png", pixels)
    queries = []
    for i, k in enumerate([2, 0, 1, 2]):
        pixels = rng.integers(0, 80, (20, 20))
        pixels[4 * k : 4 * k + 6] = 255
        queries.append(root / "query" / f"q{i}.png")
        _png(queries[-1], pixels)
    return root / "support", queries


def _eager(learner, support_dir, queries):
    support = ClassDataset.from_folder(support_dir, image_size=toy.IMAGE_SHAPE[:2])
    labels = np.concatenate([np.full(support.num_images(c), c, np.int32) for c in range(support.num_classes)])
    query = _read(queries)
    fast = learner.adapt(tf.constant(support.images), tf.constant(labels))
    return tf.nn.softmax(learner.predict(fast, tf.constant(query))).numpy()


def _read(paths):
    from tfmeta.data.sources import _decode, _resize_and_scale  # noqa: PLC0415

    images = [_decode(p.read_bytes(), str(p), 1) for p in paths]
    return _resize_and_scale(images, toy.IMAGE_SHAPE[:2], False, 1, [str(p) for p in paths])


def test_predictor_matches_eager(classifier, folders):
    learner, path = classifier
    support_dir, queries = folders
    predictions = load_few_shot(path).predict(queries, support_dir=support_dir)
    expected = _eager(learner, support_dir, queries)
    names = sorted(CLASSES)
    assert [p.class_name for p in predictions] == [names[i] for i in expected.argmax(-1)]
    np.testing.assert_allclose([p.probability for p in predictions], expected.max(-1), atol=1e-5)
    assert [p.query for p in predictions] == [str(q) for q in queries]


def test_predictor_errors(classifier, folders, tmp_path):
    _, path = classifier
    support_dir, queries = folders
    predictor = load_few_shot(path)
    with pytest.raises(ValueError, match="needs `support_dir`"):
        predictor.predict(queries)
    two = tmp_path / "two"
    for name in ("a", "b"):
        _png(two / name / "0.png", np.zeros((16, 16)))
    with pytest.raises(ValueError, match=r"3 classes for this 3-way model. Received: 2 classes \['a', 'b'\]"):
        predictor.predict(queries, support_dir=two)


def test_trainers_predict_prints_classes(classifier, folders):
    learner, path = classifier
    support_dir, queries = folders
    result = subprocess.run(
        [sys.executable, "-m", "trainers.predict", f"--model={path}", f"--support_dir={support_dir}"]
        + [f"--query={q}" for q in queries],
        capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [l.split("\t") for l in result.stdout.strip().splitlines()]
    expected = _eager(learner, support_dir, queries)
    names = sorted(CLASSES)
    assert [l[0] for l in lines] == [str(q) for q in queries]
    assert [l[1] for l in lines] == [names[i] for i in expected.argmax(-1)]
    np.testing.assert_allclose([float(l[2]) for l in lines], expected.max(-1), atol=1e-4)


def test_adapt_export_gives_a_plain_classifier(classifier, folders, tmp_path):
    learner, path = classifier
    support_dir, queries = folders
    adapted_path = adapt_export(path, support_dir, tmp_path, "mine")
    assert adapted_path == tmp_path / "mine" / "1"
    card = read_model_card(adapted_path)
    assert card["kind"] == "adapted_classifier"
    assert card["class_names"] == sorted(CLASSES)
    # Served from a plain `images` signature, without the support set.
    serve = tf.saved_model.load(str(adapted_path)).signatures["serving_default"]
    probabilities = serve(images=tf.constant(_read(queries)))["probabilities"].numpy()
    np.testing.assert_allclose(probabilities, _eager(learner, support_dir, queries), atol=1e-5)
    predictions = load_few_shot(adapted_path).predict(queries)
    assert [p.class_name for p in predictions] == [sorted(CLASSES)[i] for i in probabilities.argmax(-1)]


def test_trainers_adapt_from_export(classifier, folders, tmp_path):
    learner, path = classifier
    support_dir, queries = folders
    result = subprocess.run(
        [sys.executable, "-m", "trainers.adapt", f"--model={path}", f"--support_dir={support_dir}",
         f"--export_root={tmp_path}", "--name=cli"],
        capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"exported {tmp_path / 'cli' / '1'}" in result.stdout
    images = _read(queries)
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:  # TF Serving's loader.
        signature = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(tmp_path / "cli" / "1")).signature_def
        out = session.run(signature["serving_default"].outputs["probabilities"].name,
                          {signature["serving_default"].inputs["images"].name: images})
    np.testing.assert_allclose(out, _eager(learner, support_dir, queries), atol=1e-5)


def test_adapt_workdir_restores_the_checkpoint(folders, tmp_path):
    """trainers.maml's run directory (config.json + checkpoint) -> adapted classifier export."""
    from tfmeta.workdir import adapt_workdir  # noqa: PLC0415
    from tfmeta.training import checkpoints  # noqa: PLC0415
    from tfmeta.training.config import MetaTrainConfig  # noqa: PLC0415
    from tfmeta.training.runner import build_trainer  # noqa: PLC0415

    support_dir, queries = folders
    data = tmp_path / "data"  # The "training" classes: 16x16 images, 6 classes.
    rng = np.random.default_rng(1)
    for k in range(6):
        for i in range(2):
            _png(data / f"c{k}" / f"{i}.png", rng.integers(0, 255, (16, 16)))
    config = MetaTrainConfig(dataset="folder", data_dir=str(data), ways=3, shots=1, queries=1, meta_batch_size=1,
                             inner_steps=1, eval_inner_steps=2, inner_lr=0.3, num_iterations=1, eval_every=1,
                             eval_episodes=1, workdir=str(tmp_path / "run")).resolved()
    trainer, _ = build_trainer(config, verbose=False)
    checkpoints.prepare_workdir(config, trainer.data_spec)  # config.json with the input shape: data not read
    for v in trainer.model.trainable_variables:  # Not the initialisation: restoring must matter.
        v.assign(v * 1.5 + 0.01)
    trainer.step.assign(7)
    trainer.save()
    path = adapt_workdir(tmp_path / "run", support_dir, tmp_path / "exports", "from_run")
    card = read_model_card(path)
    assert card["class_names"] == sorted(CLASSES)
    assert card["checkpoint_step"] == 7 and card["training"]["ways"] == 3
    learner = trainer.learner
    support = ClassDataset.from_folder(support_dir, image_size=(16, 16))
    labels = np.repeat(np.arange(3, dtype=np.int32), 2)
    fast = learner.adapt(tf.constant(support.images), tf.constant(labels), steps=2)
    expected = learner.predict(fast, tf.constant(_read(queries))).numpy()
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    np.testing.assert_allclose(serve(images=tf.constant(_read(queries)))["logits"].numpy(), expected, atol=1e-4)
