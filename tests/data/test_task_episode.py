"""`TaskEpisode` (masks and metadata), sinusoid task metadata, GP batches as TaskEpisodes, and every consumer."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfmeta.data import Episode, TaskEpisode, as_episode, gp_tasks, sinusoid_tasks
from tfmeta.learners import map_over_tasks


def _first(dataset):
    return next(iter(dataset))


def test_metadata_is_the_exact_amplitude_and_phase_and_the_points_do_not_change():
    plain = _first(sinusoid_tasks(5, 7, 16, seed=4))
    with_metadata = _first(sinusoid_tasks(5, 7, 16, seed=4, metadata_noise=0.0))
    assert isinstance(plain, Episode) and isinstance(with_metadata, TaskEpisode)
    for a, b in zip(plain, with_metadata.episode):  # the same tasks and points, metadata or not
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    amplitude, phase = with_metadata.metadata.numpy()[:, :1, None], with_metadata.metadata.numpy()[:, 1:, None]
    assert with_metadata.metadata.shape == (16, 2)
    np.testing.assert_allclose(amplitude * np.sin(with_metadata.query_x.numpy() - phase), with_metadata.query_y,
                               atol=1e-5)
    np.testing.assert_array_equal(with_metadata.support_mask.numpy(), np.ones((16, 5)))
    np.testing.assert_array_equal(with_metadata.query_mask.numpy(), np.ones((16, 7)))


def test_metadata_noise_has_the_requested_standard_deviation():
    exact = np.concatenate([b.metadata.numpy() for b in sinusoid_tasks(1, 1, 500, seed=5, metadata_noise=0.0).take(4)])
    noisy = np.concatenate([b.metadata.numpy() for b in sinusoid_tasks(1, 1, 500, seed=5, metadata_noise=0.3).take(4)])
    noise = noisy - exact  # (2000, 2): same tasks, independent N(0, 0.3^2) per entry
    # The sample std of n normals has a standard error of sigma / sqrt(2n): 5 standard errors of tolerance.
    np.testing.assert_allclose(noise.std(axis=0), [0.3, 0.3], atol=5 * 0.3 / math.sqrt(2 * 2000))
    np.testing.assert_allclose(noise.mean(axis=0), [0.0, 0.0], atol=5 * 0.3 / math.sqrt(2000))


def test_min_shots_draws_prefix_masks_with_zeroed_padding():
    counts = []
    for batch in sinusoid_tasks(5, 3, 64, seed=6, min_shots=0, metadata_noise=0.0).take(5):
        mask = batch.support_mask.numpy()
        n = mask.sum(axis=1).astype(int)
        np.testing.assert_array_equal(mask, np.arange(5)[None] < n[:, None])  # prefixes
        assert np.all(batch.support_x.numpy()[mask == 0] == 0) and np.all(batch.support_y.numpy()[mask == 0] == 0)
        counts.extend(n)
    # 320 draws, uniform over 0..5: every count appears (each missed with probability < 1e-24).
    assert set(counts) == set(range(6))


def test_zero_shots_need_metadata_and_bad_arguments_name_the_argument():
    zero = _first(sinusoid_tasks(0, 4, 3, metadata_noise=0.0))
    assert zero.support_x.shape == (3, 0, 1) and zero.support_mask.shape == (3, 0)
    with pytest.raises(ValueError, match="Received: shots=0"):
        sinusoid_tasks(0, 4, 3)
    with pytest.raises(ValueError, match="Received: metadata_noise=-0.1"):
        sinusoid_tasks(5, 4, 3, metadata_noise=-0.1)
    with pytest.raises(ValueError, match=r"in \[0, shots=5\]. Received: min_shots=6"):
        sinusoid_tasks(5, 4, 3, min_shots=6)


def test_gp_batches_become_task_episodes_with_masks_and_kernel_metadata():
    batch = _first(gp_tasks(4, seed=1, per_task_counts=True, length_scale=(0.1, 0.6)))
    task = batch.task_episode(kernel_metadata=True)
    assert isinstance(task, TaskEpisode) and task.metadata_dim == 2 and task.num_tasks == 4
    np.testing.assert_array_equal(task.metadata.numpy(), np.stack([batch.length_scale, batch.signal_scale], -1))
    np.testing.assert_array_equal(task.support_mask.numpy(), batch.support_mask.numpy())
    assert batch.task_episode().metadata.shape == (4, 0)


def test_from_episode_task_and_as_episode():
    episode = _first(sinusoid_tasks(3, 2, 5, seed=0))
    task_episode = TaskEpisode.from_episode(episode, metadata=tf.ones([5, 3]))
    assert task_episode.support_mask.shape == (5, 3) and task_episode.query_mask.shape == (5, 2)
    one = task_episode.task(2)
    assert one.support_x.shape == (3, 1) and one.metadata.shape == (3,) and not one.is_batched
    assert isinstance(as_episode(tuple(task_episode)), TaskEpisode) and as_episode(task_episode) is task_episode
    assert isinstance(as_episode(tuple(episode)), Episode) and as_episode(episode) is episode
    assert episode.support_mask is None and episode.metadata is None  # an Episode: all real, no metadata
    with pytest.raises(ValueError, match="Received: 3 fields"):
        as_episode(tuple(episode)[:3])


def test_map_over_tasks_gives_each_task_its_masks_and_metadata():
    batch = _first(sinusoid_tasks(5, 2, 6, seed=2, metadata_noise=0.0, min_shots=1))

    def per_task(task):
        assert isinstance(task, TaskEpisode) and task.metadata.shape == (2,)
        return tf.reduce_sum(task.support_mask), task.metadata[0]

    counts, amplitudes = map_over_tasks(per_task, batch, (tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.float32)))
    np.testing.assert_array_equal(counts.numpy(), batch.support_mask.numpy().sum(1))
    np.testing.assert_array_equal(amplitudes.numpy(), batch.metadata.numpy()[:, 0])


def test_a_gradient_learner_evaluates_padded_task_episodes_on_the_real_points_only():
    """The default `Learner.adapt_task` drops padded support points; the query mask weighs the metrics."""
    from tfmeta.learners import MAML
    from tfmeta.models import mlp

    maml = MAML(mlp(hidden=(8,), seed=0), task="regression", inner_lr=0.01)
    batch = _first(sinusoid_tasks(5, 4, 3, seed=1, metadata_noise=0.0, min_shots=2))
    got = maml.evaluate_tasks(batch, steps=1)["mse"].numpy()
    for t in range(3):
        real = batch.support_mask.numpy()[t] > 0
        state = maml.adapt(batch.support_x[t][real], batch.support_y[t][real], steps=1)
        expected = np.mean((maml.predict(state, batch.query_x[t]).numpy() - batch.query_y[t].numpy()) ** 2)
        np.testing.assert_allclose(got[t], expected, rtol=1e-5)
