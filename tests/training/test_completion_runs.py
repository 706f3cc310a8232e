"""run(config) on image completion tasks (`omniglot_completion`): data from the right classes, a tiny
CNP run with its test, pictures and an export that serves a whole 28x28 image (and an ANP's export)."""

import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfmeta.export import export_few_shot_regressor, read_model_card
from tfmeta.learners.amortized import build_cnp
from tfmeta.training import MetaTrainConfig, plots, run
from tfmeta.training.runner import TEST_START_STEP, data_spec, eval_dataset_fn, load_data, train_dataset_fn

# The sample split's test (Sanskrit, Tagalog) and validation (Early_Aramaic) alphabets, and two training ones.
ALPHABETS = ("Sanskrit", "Tagalog", "Early_Aramaic", "Greek", "Latin")
SIDE = 28
PIXELS = SIDE * SIDE


@pytest.fixture(scope="module")
def omniglot_tree(tmp_path_factory) -> pathlib.Path:
    """An unpacked Omniglot tree `<alphabet>/<character>/*.png`: 2 characters of 2 random 28x28 grey images
    per alphabet (every image different, so a task's pixels tell which image it is)."""
    root = tmp_path_factory.mktemp("omniglot")
    rng = np.random.default_rng(0)
    for alphabet in ALPHABETS:
        for character in ("character01", "character02"):
            folder = root / alphabet / character
            folder.mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 256, (SIDE, SIDE), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def quick(tmp_path, data_dir, **kwargs):
    values = dict(variant="cnp", dataset="omniglot_completion", data_dir=str(data_dir), meta_batch_size=4,
                  num_iterations=4, eval_every=2, eval_episodes=6, workdir=str(tmp_path / "run"), export_dir="")
    values.update(kwargs)
    return MetaTrainConfig(**values)


def _flat(classes):
    return classes.images.reshape(len(classes.pixels), PIXELS)


def test_tasks_come_from_the_right_classes_and_pair_pixels_with_coordinates(tmp_path, omniglot_tree):
    config = quick(tmp_path, omniglot_tree, eval_episodes=8)
    split = load_data(config)
    assert set(split.test.alphabets) == {"Sanskrit", "Tagalog"} and split.val.alphabets == ["Early_Aramaic"]
    assert data_spec(config, split)["input_shape"] == [2] and data_spec(config, split)["image_shape"] == [28, 28, 1]
    train, val, test = (_flat(c) for c in split)
    # Test and validation tasks: every pixel in raster order; each task is one image of its own part, and
    # the 8 tasks visit every image of the part equally often (the 8 test images once, the 4 validation ones twice).
    for classes, part, others in ((split.test, test, (train, val)), (split.val, val, (train, test))):
        batches = list(eval_dataset_fn(config, split, start_step=TEST_START_STEP, classes=classes)())
        assert len(batches) == 2
        seen = []
        for batch in batches:
            assert batch.query_x.shape == (4, PIXELS, 2) and batch.support_x.shape == (4, 200, 2)
            for y in batch.query_y.numpy()[..., 0]:
                matches = np.flatnonzero((part == y).all(axis=1))
                assert len(matches) == 1 and not any((other == y).all(axis=1).any() for other in others)
                seen.append(int(matches[0]))
        assert sorted(seen) == sorted(list(range(len(part))) * (8 // len(part)))
    # Training tasks: the context and other pixels of one training image (with rotations), at their coordinates.
    batch = next(iter(train_dataset_fn(config, split)(0)))
    assert batch.query_x.shape == (4, 400, 2)
    for x, y, mask in zip(batch.query_x.numpy(), batch.query_y.numpy()[..., 0], batch.query_mask.numpy()):
        pixel = np.rint(x[mask > 0] * (SIDE - 1)).astype(int) @ np.array([SIDE, 1])  # r * 28 + c
        assert (train[:, pixel] == y[mask > 0]).all(axis=1).any()
        assert not any((other[:, pixel] == y[mask > 0]).all(axis=1).any() for other in (val, test))


def _whole_image_request(image, context=30, seed=1):
    """A request for every pixel of a 28x28 `image` from `context` random pixels: `(support_x, support_y, query_x)`."""
    grid = np.stack(np.meshgrid(np.arange(SIDE), np.arange(SIDE), indexing="ij"), -1).reshape(PIXELS, 2)
    query_x = (grid / (SIDE - 1)).astype(np.float32)  # (784, 2): (row, column) in [0, 1]
    chosen = np.random.default_rng(seed).choice(PIXELS, context, replace=False)
    return query_x[chosen], image.reshape(PIXELS, 1)[chosen], query_x


def _assert_serves_as_the_learner_predicts(path, learner, request):
    support_x, support_y, query_x = request
    served = tf.saved_model.load(str(path)).signatures["serving_default"](
        support_x=tf.constant(support_x), support_y=tf.constant(support_y), query_x=tf.constant(query_x))
    assert served["predictions"].shape == (PIXELS, 1) and served["stddev"].shape == (PIXELS, 1)
    expected = learner.predict(learner.adapt(support_x, support_y, training=False), query_x, training=False)
    np.testing.assert_allclose(served["predictions"], expected["mean"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(served["stddev"], expected["stddev"], rtol=1e-4, atol=1e-5)


def test_cnp_run_tests_on_test_images_plots_and_exports_a_784_pixel_server(tmp_path, omniglot_tree, capsys):
    config = quick(tmp_path, omniglot_tree, export_dir=str(tmp_path / "exports"), meta_lr=1e-3)
    result = run(config)
    assert result.trainer.trace_count == 1
    test = result.test_results[None]
    assert test["num_episodes"] == 6 and np.isfinite(test["log_likelihood"][0]) and 0 < test["mse"][0] < 1
    out = capsys.readouterr().out
    assert "image completion of 6 distinct test images of 4 classes, every pixel a target" in out
    assert "test: log_likelihood" in out
    card = read_model_card(result.export_path)
    assert card["completion"]["image_shape"] == [28, 28, 1] and card["completion"]["coordinate_range"] == [0.0, 1.0]
    assert result.export_path.parent.name == "cnp_omniglot_completion"
    # The export serves a whole image: 784 query pixels from 30 context pixels, as the learner predicts.
    request = _whole_image_request(load_data(config).test.images[0])
    _assert_serves_as_the_learner_predicts(result.export_path, result.trainer.learner, request)
    if not plots.available():
        return
    pictures = sorted((tmp_path / "run" / "plots").glob("*.png"))
    assert [p.name for p in pictures] == ["predictions_00000002.png", "predictions_00000004.png"]
    height, width, _ = tf.image.decode_png(pictures[-1].read_bytes()).shape
    assert height > 500 and width > 500  # 4 rows of 4 pictures


def test_exported_anp_serves_a_784_pixel_query(tmp_path):
    """The Attentive NP (what --attention builds on these tasks): 784 queries attend to the context pixels."""
    keras.utils.set_random_seed(0)
    anp = build_cnp(None, task="regression", attention=True, input_dim=2)
    path = export_few_shot_regressor(anp, tmp_path, "anp_omniglot_completion")
    image = np.random.default_rng(0).random((SIDE, SIDE)).astype(np.float32)
    _assert_serves_as_the_learner_predicts(path, anp, _whole_image_request(image, context=200))


def test_completion_figure_shows_the_context_pixels_where_they_are():
    pytest.importorskip("matplotlib")
    from tfmeta.data.completion import image_completion_tasks

    images = np.random.default_rng(0).random((2, 5, 7)).astype(np.float32)
    episode = next(iter(image_completion_tasks(images, 2, num_context=(3, 3)))).task_episode()
    mean = np.zeros((2, 35, 1), np.float32)
    with_stddev = plots.completion_figure(episode, mean, np.ones_like(mean), (5, 7), title="t")
    without = plots.completion_figure(episode, mean, None, (5, 7), title="t")
    assert with_stddev[:4] == b"\x89PNG" and with_stddev != without
    with pytest.raises(ValueError, match=r"every pixel of a 5x6 image .* Received: query_x.shape=\(2, 35, 2\)"):
        plots.completion_figure(episode, mean, None, (5, 6))


@pytest.mark.parametrize("kwargs, match", [
    (dict(variant="maml"), "only the amortized learners.*Received: variant='maml', dataset='omniglot_completion'"),
    (dict(task_metadata=True), "Received: variant='cnp', dataset='omniglot_completion'"),
    (dict(flip=True), "Image augmentation needs image tasks"),
])
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MetaTrainConfig(dataset="omniglot_completion", **{"variant": "cnp", **kwargs})
