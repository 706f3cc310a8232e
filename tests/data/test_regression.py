"""Tests for `tfmeta.data.regression.sinusoid_tasks`."""

import math

import numpy as np
import pytest

from tfmeta.data import Episode
from tfmeta.data.regression import sinusoid_tasks


def _take(dataset, n):
    return [Episode(*(t.numpy() for t in e)) for e in dataset.take(n)]


def test_shapes_dtypes_and_static_shapes():
    dataset = sinusoid_tasks(shots=5, queries=7, meta_batch_size=4)
    spec = dataset.element_spec
    assert [tuple(s.shape) for s in spec] == [(4, 5, 1), (4, 5, 1), (4, 7, 1), (4, 7, 1)]
    episode = _take(dataset, 1)[0]
    assert [t.shape for t in episode] == [(4, 5, 1), (4, 5, 1), (4, 7, 1), (4, 7, 1)]
    assert all(t.dtype == np.float32 for t in episode)


def test_values_follow_a_sinusoid_within_ranges():
    episode = _take(sinusoid_tasks(shots=10, queries=10, meta_batch_size=64, seed=3), 1)[0]
    x = np.concatenate([episode.support_x, episode.query_x], axis=1)[..., 0]  # (tasks, 20)
    y = np.concatenate([episode.support_y, episode.query_y], axis=1)[..., 0]
    assert x.min() >= -5.0 and x.max() <= 5.0 and x.std() > 2.0
    # Recover A and phase per task by least squares on y = a sin x + b cos x.
    design = np.stack([np.sin(x), np.cos(x)], axis=-1)  # (tasks, 20, 2)
    for d, t in zip(design, y):
        (a, b), *_ = np.linalg.lstsq(d, t, rcond=None)
        np.testing.assert_allclose(d @ [a, b], t, atol=1e-4)  # exactly a sinusoid
        amp, phase = math.hypot(a, b), math.atan2(-b, a)  # a = A cos(phi), b = -A sin(phi)
        assert 0.1 - 1e-4 <= amp <= 5.0 + 1e-4
        assert -1e-4 <= phase <= math.pi + 1e-4


def test_same_seed_same_stream_different_seed_differs():
    first = _take(sinusoid_tasks(3, 3, 2, seed=7), 3)
    again = _take(sinusoid_tasks(3, 3, 2, seed=7), 3)
    other = _take(sinusoid_tasks(3, 3, 2, seed=8), 3)
    for a, b, c in zip(first, again, other):
        for ta, tb, tc in zip(a, b, c):
            np.testing.assert_array_equal(ta, tb)
            assert not np.allclose(ta, tc)
    assert not np.allclose(first[0].support_x, first[1].support_x)  # steps differ


def test_start_step_resumes_the_stream():
    full = _take(sinusoid_tasks(4, 4, 3, seed=1), 5)
    resumed = _take(sinusoid_tasks(4, 4, 3, seed=1, start_step=3), 2)
    for a, b in zip(full[3:], resumed):
        for ta, tb in zip(a, b):
            np.testing.assert_array_equal(ta, tb)


def test_task_does_not_depend_on_meta_batch_size():
    small = _take(sinusoid_tasks(4, 4, 2, seed=5), 2)
    large = _take(sinusoid_tasks(4, 4, 6, seed=5), 2)
    for a, b in zip(small, large):
        for ta, tb in zip(a, b):  # same draws; vectorised sin may round the last bit differently
            np.testing.assert_allclose(ta, tb[:2], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(shots=0), "shots=0"),
        (dict(queries=-1), "queries=-1"),
        (dict(meta_batch_size=0), "meta_batch_size=0"),
        (dict(start_step=-2), "start_step=-2"),
        (dict(amplitude=(5.0, 0.1)), r"amplitude=\(5.0, 0.1\)"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    args = dict(shots=5, queries=5, meta_batch_size=2) | kwargs
    with pytest.raises(ValueError, match=match):
        sinusoid_tasks(**args)


@pytest.mark.parametrize("num_input_pipelines", [1, 2])
def test_input_context_shards_the_global_meta_batch(num_input_pipelines):
    # 4 replicas fed by 1 or 2 input pipelines: the slices of step s, in replica
    # order, concatenate to the unsharded meta-batch of step s (distinct tasks).
    import tensorflow as tf

    steps, replicas = 3, 4
    full = _take(sinusoid_tasks(3, 4, 8, seed=2, start_step=5), steps)
    per_pipeline = replicas // num_input_pipelines
    slices = {}
    for pipeline in range(num_input_pipelines):
        context = tf.distribute.InputContext(num_input_pipelines, pipeline, replicas)
        elements = _take(sinusoid_tasks(3, 4, 8, seed=2, start_step=5, input_context=context), steps * per_pipeline)
        for i, element in enumerate(elements):
            assert element.support_x.shape == (2, 3, 1) and element.query_y.shape == (2, 4, 1)
            slices[(i // per_pipeline, pipeline * per_pipeline + i % per_pipeline)] = element
    for step in range(steps):
        for field in range(4):
            joined = np.concatenate([slices[(step, r)][field] for r in range(replicas)])
            np.testing.assert_array_equal(joined, full[step][field])
    amplitudes = {round(float(np.max(np.abs(e.support_y))), 5) for e in slices.values()}
    assert len(amplitudes) == len(slices)  # no task twice


def test_input_context_needs_a_divisible_meta_batch():
    import tensorflow as tf

    with pytest.raises(ValueError, match="divide evenly among 4 replicas. Received: meta_batch_size=6"):
        sinusoid_tasks(3, 4, 6, input_context=tf.distribute.InputContext(1, 0, 4))
