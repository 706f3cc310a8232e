"""Tests for `tfmeta.data.pipeline.episode_dataset` on real Omniglot and on small arrays."""

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfmeta.data import ClassDataset, Episode, episode_dataset


@pytest.fixture(scope="module")
def tiny() -> ClassDataset:
    """12 classes of 6 images, each image holding its own index everywhere."""
    images = np.arange(72, dtype=np.float32)[:, None, None, None] * np.ones((1, 4, 4, 1), np.float32) / 72
    return ClassDataset.from_arrays(images, np.repeat(np.arange(12), 6))


def _take(dataset, n):
    return [Episode(*(t.numpy() for t in e)) for e in dataset.take(n)]


def _image_ids(x):  # (..., 4, 4, 1) -> (...,) indices into `tiny`
    return np.rint(x[..., 0, 0, 0] * 72).astype(int)


def _assert_same(a, b):
    for ta, tb in zip(a, b):
        np.testing.assert_array_equal(ta, tb)


@pytest.mark.data
def test_omniglot_episodes(omniglot):
    ways, shots, queries, tasks = 5, 1, 15, 8
    dataset = episode_dataset(omniglot, ways, shots, queries, tasks, seed=0)
    expected = [(tasks, 5, 28, 28, 1), (tasks, 5), (tasks, 75, 28, 28, 1), (tasks, 75)]
    assert [tuple(s.shape) for s in dataset.element_spec] == expected  # static shapes
    # Map each image back to its (class, index) in the source.
    lookup = {omniglot.images[i].tobytes(): i for i in range(len(omniglot.images))}
    assert len(lookup) == 4840
    for episode in _take(dataset, 2):
        assert [t.shape for t in episode] == expected
        assert episode.support_y.dtype == np.int32 and episode.support_x.dtype == np.float32
        for t in range(tasks):
            support = [lookup[x.tobytes()] for x in episode.support_x[t]]
            query = [lookup[x.tobytes()] for x in episode.query_x[t]]
            assert not set(support) & set(query)
            classes = np.searchsorted(omniglot.class_offsets, support, side="right") - 1
            assert len(set(classes)) == ways
            query_classes = np.searchsorted(omniglot.class_offsets, query, side="right") - 1
            np.testing.assert_array_equal(query_classes, classes[episode.query_y[t]])
            np.testing.assert_array_equal(np.bincount(episode.support_y[t]), [shots] * ways)
            np.testing.assert_array_equal(np.bincount(episode.query_y[t]), [queries] * ways)


def test_labels_index_the_support_classes(tiny):
    episode = _take(episode_dataset(tiny, 4, 2, 3, 5, seed=1), 1)[0]
    support_class, query_class = _image_ids(episode.support_x) // 6, _image_ids(episode.query_x) // 6
    for t in range(5):
        label_to_class = dict(zip(episode.support_y[t], support_class[t]))
        assert len(label_to_class) == 4 and len(set(label_to_class.values())) == 4
        assert [label_to_class[y] for y in episode.query_y[t]] == list(query_class[t])
        assert not set(_image_ids(episode.support_x[t])) & set(_image_ids(episode.query_x[t]))


def test_determinism_and_resuming(tiny):
    first = _take(episode_dataset(tiny, 3, 1, 2, 4, seed=5), 4)
    _assert_same(first[2], _take(episode_dataset(tiny, 3, 1, 2, 4, seed=5), 3)[2])
    _assert_same(first[3], _take(episode_dataset(tiny, 3, 1, 2, 4, seed=5, start_step=3), 1)[0])
    other = _take(episode_dataset(tiny, 3, 1, 2, 4, seed=6), 1)[0]
    assert not np.array_equal(first[0].support_x, other.support_x)
    assert not np.array_equal(first[0].support_x, first[1].support_x)


def test_finite_num_steps(tiny):
    assert len(_take(episode_dataset(tiny, 2, 1, 1, 1, num_steps=3), 10)) == 3


@pytest.mark.parametrize("pipelines, replicas", [(2, 2), (1, 2), (2, 4)])
def test_input_context_shards_the_global_meta_batch(tiny, pipelines, replicas):
    global_batch, steps = 8, 2
    unsharded = _take(episode_dataset(tiny, 3, 1, 2, global_batch, seed=2), steps)
    per_pipeline = []
    for p in range(pipelines):
        context = tf.distribute.InputContext(pipelines, p, replicas)
        dataset = episode_dataset(tiny, 3, 1, 2, global_batch, seed=2, input_context=context)
        assert dataset.element_spec.support_x.shape[0] == global_batch // replicas
        per_pipeline.append(_take(dataset, steps * replicas // pipelines))
    for s in range(steps):
        # Replica r of pipeline p gets element s * (replicas per pipeline) + r.
        per_step = replicas // pipelines
        slices = [pipe[s * per_step + r] for pipe in per_pipeline for r in range(per_step)]
        for field in range(4):
            np.testing.assert_array_equal(np.concatenate([e[field] for e in slices]), unsharded[s][field])
    tasks = [tuple(_image_ids(e.support_x[t])) for pipe in per_pipeline for e in pipe[:1] for t in range(e.support_x.shape[0])]
    assert len(set(tasks)) == len(tasks)  # distinct tasks per input pipeline


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(ways=1), ValueError, "Received: ways=1"),
        (dict(shots=0), ValueError, "Received: shots=0"),
        (dict(queries=0), ValueError, "Received: queries=0"),
        (dict(meta_batch_size=0), ValueError, "Received: meta_batch_size=0"),
        (dict(meta_batch_size=2.0), ValueError, r"Received: meta_batch_size=2\.0"),
        (dict(ways=13), ValueError, "only 12.*Received: ways=13"),
        (dict(shots=3, queries=4), ValueError, r"Class '0' has 6 images, fewer than shots \+ queries = 3 \+ 4 = 7"),
        (dict(start_step=-1), ValueError, "start_step=-1"),
        (dict(num_steps=0), ValueError, "num_steps=0"),
        (dict(meta_batch_size=3, input_context=tf.distribute.InputContext(1, 0, 2)), ValueError, "among 2 replicas"),
    ],
)
def test_bad_arguments(tiny, kwargs, error, match):
    args = dict(ways=2, shots=1, queries=1, meta_batch_size=2) | kwargs
    with pytest.raises(error, match=match):
        episode_dataset(tiny, **args)


def test_exits_cleanly_with_a_live_iterator():
    """A script that exits while an iterator is prefetching must not hang (see pipeline.py)."""
    script = (
        "import numpy as np\n"
        "from tfmeta.data import ClassDataset, episode_dataset\n"
        "source = ClassDataset.from_arrays(np.random.rand(600, 28, 28), np.repeat(np.arange(30), 20))\n"
        "iterator = iter(episode_dataset(source, 5, 1, 15, 32))\n"
        "next(iterator)\n"
    )
    for _ in range(2):  # without the exit hook this hung in most runs
        subprocess.run([sys.executable, "-c", script], check=True, timeout=60, capture_output=True)
