"""Classifier pre-training batches (`class_batch_dataset`, `ClassBatchSampler`): global labels, epochs, resuming."""

import numpy as np
import pytest
import tensorflow as tf

from tfmeta.data import ClassBatchSampler, ClassDataset, Episode, class_batch_dataset

NUM_CLASSES, PER_CLASS = 7, (3, 5, 4, 6, 2, 5, 4)  # unequal class sizes: 29 images
NUM_IMAGES = sum(PER_CLASS)


@pytest.fixture(scope="module")
def tiny() -> ClassDataset:
    """7 classes of 2 to 6 images, each image holding its own index everywhere."""
    images = np.arange(NUM_IMAGES, dtype=np.float32)[:, None, None, None] * np.ones((1, 4, 4, 1), np.float32)
    return ClassDataset.from_arrays(images / NUM_IMAGES, np.repeat(np.arange(NUM_CLASSES), PER_CLASS))


def _ids(x):  # (..., 4, 4, 1) -> (...,) image indices into `tiny`
    return np.rint(x[..., 0, 0, 0] * NUM_IMAGES).astype(int)


def _take(dataset, n):
    return [Episode(*(t.numpy() for t in e)) for e in dataset.take(n)]


def test_batches_hold_images_with_their_global_labels_and_no_support_set(tiny):
    dataset = class_batch_dataset(tiny, batch_size=5, meta_batch_size=3, seed=0)
    assert [tuple(s.shape) for s in dataset.element_spec] == [(3, 0, 4, 4, 1), (3, 0), (3, 5, 4, 4, 1), (3, 5)]
    image_class = np.repeat(np.arange(NUM_CLASSES), PER_CLASS)
    for batch in _take(dataset, 4):
        assert batch.support_x.shape == (3, 0, 4, 4, 1) and batch.support_y.dtype == np.int32
        # The label of each image is the class that owns it in the source (a wrong offset or order fails).
        np.testing.assert_array_equal(batch.query_y, image_class[_ids(batch.query_x)])
    labels = np.concatenate([b.query_y.ravel() for b in _take(dataset, 6)])
    assert set(labels) == set(range(NUM_CLASSES))  # every class appears: labels are not per-task 0..ways-1


def test_each_epoch_reads_every_image_once_in_a_new_order(tiny):
    # 2 tasks of 4 images a step: positions 0..28 are epoch 0, 29..57 epoch 1 (steps 3 and 7 straddle them).
    stream = np.concatenate([_ids(b.query_x).ravel() for b in _take(class_batch_dataset(tiny, 4, 2, seed=3), 8)])
    first, second = stream[:NUM_IMAGES], stream[NUM_IMAGES:2 * NUM_IMAGES]
    assert sorted(first) == list(range(NUM_IMAGES)) and sorted(second) == list(range(NUM_IMAGES))
    assert not np.array_equal(first, second) and not np.array_equal(first, np.arange(NUM_IMAGES))


def test_pure_function_of_seed_and_step_and_resuming(tiny):
    first = _take(class_batch_dataset(tiny, 4, 2, seed=5), 9)
    resumed = _take(class_batch_dataset(tiny, 4, 2, seed=5, start_step=7), 2)  # across the epoch boundary
    for a, b in zip(first[7:], resumed):
        for ta, tb in zip(a, b):
            np.testing.assert_array_equal(ta, tb)
    other = _take(class_batch_dataset(tiny, 4, 2, seed=6), 1)[0]
    assert not np.array_equal(first[0].query_y, other.query_y) or not np.array_equal(first[0].query_x, other.query_x)
    # The sampler alone, batches drawn out of order, gives the same indices.
    sampler = ClassBatchSampler(tiny.class_offsets, 4, tasks_per_step=2, seed=5)
    index, labels = sampler.sample(step=7, task=1)
    np.testing.assert_array_equal(index, _ids(first[7].query_x[1]))
    np.testing.assert_array_equal(labels, first[7].query_y[1])


@pytest.mark.parametrize("pipelines, replicas", [(1, 2), (2, 2)])
def test_input_context_splits_the_tasks_of_a_step(tiny, pipelines, replicas):
    unsharded = _take(class_batch_dataset(tiny, 3, 4, seed=2), 2)
    shares = [_take(class_batch_dataset(tiny, 3, 4, seed=2, input_context=tf.distribute.InputContext(
        pipelines, p, replicas)), 2 * replicas // pipelines) for p in range(pipelines)]
    per_pipeline = replicas // pipelines
    for step in range(2):
        slices = [pipe[step * per_pipeline + r] for pipe in shares for r in range(per_pipeline)]
        for field in range(4):
            np.testing.assert_array_equal(np.concatenate([s[field] for s in slices]), unsharded[step][field])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(batch_size=0), "Received: batch_size=0"),
        (dict(meta_batch_size=0), "Received: meta_batch_size=0"),
        (dict(seed=-1), "Received: seed=-1"),
        (dict(start_step=-2), "Received: start_step=-2"),
        (dict(num_steps=0), "Received: num_steps=0"),
        (dict(meta_batch_size=3, input_context=tf.distribute.InputContext(1, 0, 2)), "among 2 replicas"),
    ],
)
def test_bad_arguments(tiny, kwargs, match):
    with pytest.raises(ValueError, match=match):
        class_batch_dataset(tiny, **(dict(batch_size=2, meta_batch_size=2) | kwargs))


def test_finite_num_steps(tiny):
    assert len(_take(class_batch_dataset(tiny, 2, 1, num_steps=3), 10)) == 3
