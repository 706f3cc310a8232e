"""Tests for `tfmeta.data.completion`: image completion tasks (pixel coordinates -> intensity)."""

import numpy as np
import pytest
import tensorflow as tf

from tfmeta.data import TaskEpisode
from tfmeta.data.completion import (
    CompletionEpisode,
    completion_settings,
    image_completion_tasks,
    pixel_coordinates,
)

# Not square, so a transposed (column, row) pairing cannot pass.
HEIGHT, WIDTH = 5, 7
PIXELS = HEIGHT * WIDTH


def _images(n=9, seed=0):
    """Random images: every pixel of every image a distinct value (a wrong pairing shows)."""
    return np.random.default_rng(seed).permutation(n * PIXELS).reshape(n, HEIGHT, WIDTH, 1).astype(np.float32)


def _take(dataset, n):
    return [CompletionEpisode(*(t.numpy() for t in e)) for e in dataset.take(n)]


def _pixel(x, coordinate_range=(0.0, 1.0)):
    """(row, column) of coordinates `x` (..., 2), checked to be exactly on the pixel grid."""
    low, high = coordinate_range
    scaled = (x - low) / (high - low) * np.array([HEIGHT - 1, WIDTH - 1])
    index = np.rint(scaled).astype(int)
    np.testing.assert_allclose(scaled, index, atol=1e-5)
    return index[..., 0], index[..., 1]


@pytest.mark.parametrize("coordinate_range", [(0.0, 1.0), (-1.0, 1.0)])
def test_each_y_is_the_intensity_of_its_image_at_its_coordinates(coordinate_range):
    images = _images()
    for extra in ((0, 10), None):
        tasks = image_completion_tasks(images, 4, seed=3, num_context=(1, 20), num_extra_targets=extra,
                                       coordinate_range=coordinate_range)
        for b in _take(tasks, 3):
            for t in range(4):
                image = images[b.image_index[t], ..., 0]
                for x, y, mask in ((b.support_x, b.support_y, b.support_mask), (b.query_x, b.query_y, b.query_mask)):
                    real = mask[t] > 0
                    rows, cols = _pixel(x[t, real], coordinate_range)
                    np.testing.assert_array_equal(y[t, real, 0], image[rows, cols])
                    assert len(set(zip(rows, cols))) == real.sum()  # no pixel twice
    # The corners map to the ends of the range: (0, 0) top left, (H-1, W-1) bottom right.
    grid = pixel_coordinates(HEIGHT, WIDTH, (-1.0, 1.0))
    np.testing.assert_array_equal(grid[[0, WIDTH - 1, PIXELS - 1]], [[-1, -1], [-1, 1], [1, 1]])
    np.testing.assert_allclose(grid[WIDTH + 2], [-1 + 2 / 4, -1 + 2 * 2 / 6], rtol=1e-6)


def test_test_layout_is_the_whole_image_in_raster_order():
    images = _images()
    b = _take(image_completion_tasks(images, 3, seed=1, num_context=(2, 6)), 1)[0]
    assert b.query_x.shape == (3, PIXELS, 2) and b.query_y.shape == (3, PIXELS, 1)
    np.testing.assert_array_equal(b.query_mask, 1.0)
    np.testing.assert_array_equal(b.query_x, np.broadcast_to(pixel_coordinates(HEIGHT, WIDTH), (3, PIXELS, 2)))
    np.testing.assert_array_equal(b.query_y, images[b.image_index].reshape(3, PIXELS, 1))


def test_masks_cover_exactly_the_drawn_counts_and_padding_is_zero():
    contexts, extras = set(), set()
    for b in _take(image_completion_tasks(_images(), 8, seed=2, num_context=(1, 6), num_extra_targets=(2, 5)), 20):
        assert b.support_x.shape == (8, 6, 2) and b.query_x.shape == (8, 11, 2)
        n_c, n_q = b.support_mask.sum(-1).astype(int), b.query_mask.sum(-1).astype(int)
        # Prefix masks: exactly the first n_c (n_q) slots are real, the rest zeros.
        np.testing.assert_array_equal(b.support_mask, np.arange(6)[None] < n_c[:, None])
        np.testing.assert_array_equal(b.query_mask, np.arange(11)[None] < n_q[:, None])
        for field, mask in ((b.support_x, b.support_mask), (b.support_y, b.support_mask),
                            (b.query_x, b.query_mask), (b.query_y, b.query_mask)):
            assert np.all(field[mask == 0] == 0)
        # The targets are the context pixels followed by the extra ones.
        np.testing.assert_array_equal(b.support_x, b.query_x[:, :6] * b.support_mask[..., None])
        np.testing.assert_array_equal(b.support_y, b.query_y[:, :6] * b.support_mask[..., None])
        contexts |= set(n_c)
        extras |= set(n_q - n_c)
    # 160 draws, uniform over 6 (4) values: each value is missed with probability < 1e-12.
    assert contexts == set(range(1, 7)) and extras == set(range(2, 6))


def test_same_seed_same_tasks_resume_and_shards():
    images = _images(n=11)
    stream = lambda **kw: _take(image_completion_tasks(images, 4, num_context=(1, 9), num_extra_targets=(1, 4),
                                                       **kw), 6)
    first, again, other = stream(seed=5), stream(seed=5), stream(seed=6)
    for a, b in zip(first, again):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(a.support_x, b.support_x) for a, b in zip(first, other))
    resumed = stream(seed=5, start_step=2)
    for a, b in zip(first[2:], resumed):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    # Two replicas' slices of each step concatenate to the single-device meta-batch.
    sharded = _take(image_completion_tasks(images, 4, seed=5, num_context=(1, 9), num_extra_targets=(1, 4),
                                           input_context=tf.distribute.InputContext(1, 0, 2)), 4)
    for step in range(2):
        for x, y, z in zip(first[step], sharded[2 * step], sharded[2 * step + 1]):
            np.testing.assert_array_equal(x, np.concatenate([y, z]))


def test_every_image_once_per_epoch():
    images = _images(n=10)
    indices = np.concatenate([b.image_index for b in _take(image_completion_tasks(images, 4, seed=7), 5)])
    assert sorted(indices[:10]) == list(range(10)) and sorted(indices[10:20]) == list(range(10))
    assert not np.array_equal(indices[:10], indices[10:20])  # a new permutation per epoch
    # More tasks per step than images: each step spans several epochs, still each image once per epoch.
    big = np.concatenate([b.image_index for b in _take(image_completion_tasks(images[:3], 7, seed=7), 3)])
    assert [sorted(big[i:i + 3]) for i in range(0, 21, 3)] == [[0, 1, 2]] * 7


def test_task_episode_and_settings():
    b = next(iter(image_completion_tasks(_images(), 2, num_context=(1, 4))))
    episode = b.task_episode()
    assert next(iter(image_completion_tasks(_images(), 2))).support_x.shape == (2, PIXELS - 1, 2)  # at most H*W - 1
    assert isinstance(episode, TaskEpisode) and episode.metadata.shape == (2, 0)
    assert episode.support_size == 4 and episode.query_size == PIXELS
    assert b.num_context.dtype == tf.int32 and 1 <= int(tf.reduce_min(b.num_context))
    train, test = completion_settings((28, 28, 1))
    assert train == dict(num_context=(1, 200), num_extra_targets=(1, 200))
    assert test == dict(num_context=(1, 200), num_extra_targets=None)
    small_train, _ = completion_settings((4, 4))  # capped at the pixels there are
    assert small_train == dict(num_context=(1, 15), num_extra_targets=(1, 1))
    with pytest.raises(ValueError, match=r"at least 2 pixels. Received: image_shape=\(1, 1\)"):
        completion_settings((1, 1))
    # Integer pixels and (N, H, W) images are accepted; a tensor too.
    b = next(iter(image_completion_tasks(tf.constant(np.arange(2 * PIXELS).reshape(2, HEIGHT, WIDTH)), 1)))
    assert b.query_y.dtype == tf.float32


@pytest.mark.parametrize("kwargs, match", [
    (dict(images=np.zeros((3, 4, 4, 3))), r"greyscale images .* Received: images.shape=\(3, 4, 4, 3\)"),
    (dict(images=np.zeros((0, 4, 4))), r"N >= 1 .* Received: images.shape=\(0, 4, 4\)"),
    (dict(images=np.zeros((4, 4))), r"Received: images.shape=\(4, 4\)"),
    (dict(images=np.full((1, 2, 2), "a")), r"Received: images.dtype=<U1"),
    (dict(meta_batch_size=0), r"Received: meta_batch_size=0"),
    (dict(seed=-1), r"Received: seed=-1"),
    (dict(start_step=1.5), r"Received: start_step=1.5"),
    (dict(num_context=(0, 3)), r"1 <= low <= high <= 35. Received: num_context=\(0, 3\)"),
    (dict(num_context=(1, 36)), r"Received: num_context=\(1, 36\)"),
    (dict(num_context=5), r"Received: num_context=5"),
    (dict(num_context=(1, 30), num_extra_targets=(0, 6)), r"0 <= low <= high <= 5. "
                                                          r"Received: num_extra_targets=\(0, 6\)"),
    (dict(coordinate_range=(1.0, 0.0)), r"low < high. Received: coordinate_range=\(1.0, 0.0\)"),
])
def test_bad_arguments_name_what_was_received(kwargs, match):
    arguments = dict(images=_images(2), meta_batch_size=2, num_context=(1, 3))
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        image_completion_tasks(**arguments)
