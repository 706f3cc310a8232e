"""Tests for `tfmeta.data.augment`: seeded per-image augmentation of episodes."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from tfmeta.data import AUGMENTATIONS, Augmentation, ClassDataset, Episode, TaskShard, augment_episode, episode_dataset

RFS = Augmentation(crop_padding=4, flip=True, color_jitter=0.4)  # CIFAR-FS / FC100 setting


def _episode(images_support, images_query=None):
    """An unbatched episode around the given support (and query) images; labels 0."""
    query = images_support if images_query is None else images_query
    zeros = lambda x: tf.zeros([x.shape[0]], tf.int32)
    return Episode(tf.constant(images_support), zeros(images_support), tf.constant(query), zeros(query))


def _random_batch(tasks=4, support=6, query=8, size=12, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    x = lambda n: tf.constant(rng.uniform(size=(tasks, n, size, size, channels)), tf.float32)
    y = lambda n: tf.constant(np.tile(np.arange(n, dtype=np.int32) % 3, (tasks, 1)))
    return Episode(x(support), y(support), x(query), y(query))


def _numpy(episode):
    return Episode(*(t.numpy() for t in episode))


def test_deterministic_per_seed_step_and_task():
    batch = _random_batch()
    a = _numpy(augment_episode(batch, RFS, seed=1, step=5))
    np.testing.assert_array_equal(a.support_x, augment_episode(batch, RFS, seed=1, step=5).support_x.numpy())
    for other in (dict(seed=2, step=5), dict(seed=1, step=6)):
        assert not np.array_equal(a.support_x, augment_episode(batch, RFS, **other).support_x.numpy())
    # Task t depends on (seed, step, t) only: a replica's slice, or one task alone, gets the same images.
    tail = _numpy(augment_episode(Episode(*(t[2:] for t in batch)), RFS, seed=1, step=5, first_task=2))
    np.testing.assert_array_equal(tail.support_x, a.support_x[2:])
    np.testing.assert_array_equal(tail.query_x, a.query_x[2:])
    single = augment_episode(batch.task(1), RFS, seed=1, step=tf.constant(5, tf.int64), first_task=1)
    np.testing.assert_array_equal(single.query_x.numpy(), a.query_x[1])
    # Identical input tasks are augmented differently (tasks draw their own randomness).
    same = Episode(*(tf.repeat(t[:1], 2, axis=0) for t in batch))
    twice = augment_episode(same, RFS, seed=1, step=5).support_x.numpy()
    assert not np.array_equal(twice[0], twice[1])


def test_values_stay_in_unit_interval_and_shapes_and_labels_are_kept():
    batch = _random_batch(size=16)
    strong = Augmentation(crop_padding=6, flip=True, color_jitter=1.0)
    out = augment_episode(batch, strong, seed=0, step=0)
    for a, b in zip(out, batch):
        assert a.shape == b.shape and a.dtype == b.dtype
    assert out.support_y is batch.support_y and out.query_y is batch.query_y
    for x in (out.support_x.numpy(), out.query_x.numpy()):
        assert x.min() >= 0.0 and x.max() <= 1.0
        assert x.max() == 1.0  # jitter factors up to 2 do saturate: the clip is what keeps [0, 1]


def test_off_returns_the_episode_unchanged():
    batch = _random_batch()
    assert augment_episode(batch, Augmentation(), seed=0, step=3) is batch
    assert AUGMENTATIONS["omniglot"].is_identity


def test_flip_mirrors_left_right_about_half_the_time():
    image = np.arange(5 * 7, dtype=np.float32).reshape(1, 5, 7, 1) / 35  # no symmetry
    images = np.repeat(image, 64, axis=0)
    out = augment_episode(_episode(images), Augmentation(flip=True), seed=0, step=0).support_x.numpy()
    mirrored = np.all(out == image[:, :, ::-1], axis=(1, 2, 3))
    unchanged = np.all(out == image, axis=(1, 2, 3))
    assert np.all(mirrored | unchanged)  # left-right only: never upside down, never anything else
    assert 16 < mirrored.sum() < 48  # p = 1/2 per image (64 draws)


def test_crop_is_a_shift_with_zero_padding_and_keeps_the_size():
    p = 3
    image = (np.arange(10 * 10 * 2, dtype=np.float32).reshape(1, 10, 10, 2) + 1) / 201  # distinct, non-zero
    images = np.repeat(image, 100, axis=0)
    episode = augment_episode(_episode(images), Augmentation(crop_padding=p), seed=3, step=0)
    out = episode.support_x.numpy()
    assert out.shape == images.shape
    assert not np.array_equal(out, episode.query_x.numpy())  # same images, own draws for the query set
    padded = np.pad(image[0], [(p, p), (p, p), (0, 0)])
    windows = {(dy, dx): padded[dy : dy + 10, dx : dx + 10] for dy in range(2 * p + 1) for dx in range(2 * p + 1)}
    offsets = []
    for x in out:
        match = [key for key, window in windows.items() if np.array_equal(x, window)]
        assert len(match) == 1  # a crop of the zero-padded image at an integer offset
        offsets.append(match[0])
    assert len(set(offsets)) > 30  # per image, spread over the 49 offsets (not one offset per call)
    assert {o[0] for o in offsets} == set(range(2 * p + 1)) == {o[1] for o in offsets}  # both extremes reached


def test_color_jitter_factors_follow_torchvision():
    gray = np.full((200, 6, 6, 3), 0.5, np.float32)  # saturation and contrast leave it alone
    out = augment_episode(_episode(gray), Augmentation(color_jitter=0.4), seed=0, step=0).support_x.numpy()
    values = out[:, 0, 0, 0]
    assert np.all(out == values[:, None, None, None])  # brightness scales each image uniformly
    assert 0.3 - 1e-6 <= values.min() < 0.33 and 0.67 < values.max() <= 0.7 + 1e-6  # 0.5 * U[0.6, 1.4]
    # Contrast pulls an image towards its mean grey level, saturation each pixel towards its grey.
    rng = np.random.default_rng(0)
    colour = rng.uniform(0.3, 0.7, size=(200, 6, 6, 3)).astype(np.float32)
    out = augment_episode(_episode(colour), Augmentation(color_jitter=0.4), seed=1, step=0).support_x.numpy()
    assert not np.allclose(out / colour, (out / colour)[:, :1, :1, :1])  # not brightness alone
    ones = np.ones((4, 6, 6, 1), np.float32) * np.linspace(0.2, 0.8, 6)[None, :, None, None]
    single = augment_episode(_episode(ones), Augmentation(color_jitter=0.4), seed=0, step=0).support_x.numpy()
    assert single.shape == ones.shape and single.min() >= 0.0 and single.max() <= 1.0  # one channel works


# Six classes of constant colour images: class c is the c-th ordering of three channel levels.
# Crops (a centre pixel is never padding), flips, and each jitter op (x -> f*x + (1-f)*t with a
# target t shared by the channels of a pixel, f > 0) all keep the order of a pixel's channels.
_LEVELS = (0.3, 0.45, 0.6)
_ORDERS = list(itertools.permutations(range(3)))


def _ordered_classes(images_per_class=5, size=16):
    images, labels = [], []
    for c, order in enumerate(_ORDERS):
        colour = np.array(_LEVELS, np.float32)[list(order)]
        images.append(np.broadcast_to(colour, (images_per_class, size, size, 3)))
        labels += [c] * images_per_class
    return ClassDataset.from_arrays(np.concatenate(images), np.array(labels))


def _class_of(x):
    """Class of each image (..., H, W, 3), from the order of the centre pixel's channels."""
    centre = x[..., x.shape[-3] // 2, x.shape[-2] // 2, :]
    ranks = np.argsort(np.argsort(centre, axis=-1), axis=-1)  # (..., 3): class c has ranks _ORDERS[c]
    assert np.all(np.diff(np.sort(centre, axis=-1), axis=-1) > 0)  # no ties: the order is defined
    lookup = {order: c for c, order in enumerate(_ORDERS)}
    return np.apply_along_axis(lambda r: lookup[tuple(r)], -1, ranks)


@pytest.mark.parametrize("augmentation", [RFS, Augmentation(crop_padding=7, flip=True)])
def test_augmented_labels_still_match_their_classes(augmentation):
    source = _ordered_classes()
    plain = episode_dataset(source, ways=5, shots=2, queries=3, meta_batch_size=4, seed=0, num_steps=3)
    augmented = plain.enumerate().map(lambda step, e: augment_episode(e, augmentation, seed=0, step=step))
    for before, after in zip(plain, augmented):
        before, after = _numpy(before), _numpy(after)
        assert not np.array_equal(before.support_x, after.support_x)  # something was done
        np.testing.assert_array_equal(before.support_y, after.support_y)
        np.testing.assert_array_equal(before.query_y, after.query_y)
        support, query = _class_of(after.support_x), _class_of(after.query_x)  # (tasks, n)
        np.testing.assert_array_equal(support, _class_of(before.support_x))
        np.testing.assert_array_equal(query, _class_of(before.query_x))
        for t in range(4):  # label -> class is one-to-one, and the same in support and query
            label_to_class = dict(zip(after.support_y[t], support[t]))
            assert len(label_to_class) == 5 and len(set(label_to_class.values())) == 5
            assert [label_to_class[y] for y in after.query_y[t]] == list(query[t])


def test_composes_with_episode_dataset_and_resumes():
    rng = np.random.default_rng(0)
    source = ClassDataset.from_arrays(rng.uniform(size=(60, 10, 10, 3)), np.repeat(np.arange(12), 5))
    augmentation = AUGMENTATIONS["cifar_fs"]

    def stream(start_step, input_context=None):
        tasks = episode_dataset(source, 3, 1, 2, 4, seed=7, start_step=start_step, input_context=input_context)
        shard = TaskShard.from_context(4, input_context)

        def augment(element, episode):
            steps, first_task = shard.locate(element)
            return augment_episode(episode, augmentation, seed=7, step=start_step + steps, first_task=first_task)

        return tasks.enumerate().map(augment)

    plain = episode_dataset(source, 3, 1, 2, 4, seed=7)
    augmented = stream(0)
    assert augmented.element_spec == plain.element_spec  # static shapes kept
    run = [_numpy(e) for e in augmented.take(4)]
    resumed = _numpy(next(iter(stream(3))))
    for a, b in zip(run[3], resumed):
        np.testing.assert_array_equal(a, b)
    # Two replicas: their slices concatenate to the unsharded meta-batch, augmentation included.
    context = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=2)
    halves = [_numpy(e) for e in stream(0, context).take(2)]  # step 0, replicas 0 and 1
    np.testing.assert_array_equal(np.concatenate([h.query_x for h in halves]), run[0].query_x)
    # Off at test time by not mapping: the mapped stream differs from the plain one only in the images.
    plain = _numpy(next(iter(plain)))
    np.testing.assert_array_equal(plain.support_y, run[0].support_y)
    assert not np.array_equal(plain.support_x, run[0].support_x)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(crop_padding=-1), "crop_padding=-1"),
        (dict(crop_padding=2.0), "crop_padding=2.0"),
        (dict(flip=1), "flip=1"),
        (dict(color_jitter=1.5), "color_jitter=1.5"),
    ],
)
def test_bad_configs_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Augmentation(**kwargs)


def test_bad_arguments_are_named():
    batch = _random_batch()
    with pytest.raises(ValueError, match="seed=-1"):
        augment_episode(batch, RFS, seed=-1, step=0)
    with pytest.raises(ValueError, match="augmentation=None"):
        augment_episode(batch, None, seed=0, step=0)
    sinusoid = Episode(*(tf.zeros([5, 1]) for _ in range(4)))
    with pytest.raises(ValueError, match=r"support_x.shape=\(5, 1\)"):
        augment_episode(sinusoid, RFS, seed=0, step=0)
