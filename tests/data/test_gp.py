"""Tests for `tfmeta.data.gp`: the GP task streams and the exact GP oracle.

Statistical tests use tolerances of 5 standard errors, each standard error computed
from the sample size (a false alarm has probability < 1e-6 per check).
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfmeta.data import Episode
from tfmeta.data.gp import (
    ANP_SETTING,
    ANP_TEST_SETTING,
    NOISE,
    GPEpisode,
    gp_log_likelihood,
    gp_posterior,
    gp_test_tasks,
    gp_tasks,
)


def _take(dataset, n):
    return [GPEpisode(*(t.numpy() for t in e)) for e in dataset.take(n)]


def _kernel(x1, x2, length, signal):
    return signal**2 * np.exp(-0.5 * (x1[:, None] - x2[None, :]) ** 2 / length**2)


def test_static_shapes_and_episode_view():
    dataset = gp_tasks(meta_batch_size=4)
    shapes = [tuple(s.shape) for s in dataset.element_spec]
    assert shapes == [(4, 9, 1), (4, 9, 1), (4, 18, 1), (4, 18, 1), (4, 9), (4, 18), (4,), (4,)]
    assert [s.dtype for s in dataset.element_spec] == [tf.float32] * 8
    anp = gp_tasks(meta_batch_size=2, **ANP_SETTING).element_spec
    assert tuple(anp.support_x.shape) == (2, 49, 1) and tuple(anp.query_x.shape) == (2, 49, 1)
    test = gp_test_tasks(meta_batch_size=3).element_spec
    assert tuple(test.support_x.shape) == (3, 9, 1) and tuple(test.query_x.shape) == (3, 400, 1)
    batch = next(iter(dataset))
    assert isinstance(batch.episode, Episode) and batch.episode.support_size == 9


def test_counts_masks_and_padding_follow_the_reference():
    # CNP reference: num_context ~ U{3..9}, extra targets ~ U{2..9}, one count per meta-batch.
    contexts, extras = set(), set()
    for b in _take(gp_tasks(meta_batch_size=5, seed=3), 150):
        n_c, n_q = b.support_mask.sum(-1).astype(int), b.query_mask.sum(-1).astype(int)
        assert len(set(n_c)) == 1 and len(set(n_q)) == 1  # one count per meta-batch
        contexts.add(n_c[0])
        extras.add(n_q[0] - n_c[0])
        # Masks are prefixes; padding is zero; the support is the first n_c targets.
        np.testing.assert_array_equal(b.support_mask, np.arange(9)[None] < n_c[:, None])
        np.testing.assert_array_equal(b.query_mask, np.arange(18)[None] < n_q[:, None])
        for field, mask in ((b.support_x, b.support_mask), (b.support_y, b.support_mask),
                            (b.query_x, b.query_mask), (b.query_y, b.query_mask)):
            assert np.all(field[mask == 0] == 0)
        np.testing.assert_array_equal(b.support_x, b.query_x[:, :9] * b.support_mask[..., None])
        np.testing.assert_array_equal(b.support_y, b.query_y[:, :9] * b.support_mask[..., None])
        real_x = b.query_x[b.query_mask == 1]
        assert real_x.min() >= -2.0 and real_x.max() < 2.0
        np.testing.assert_array_equal(b.length_scale, np.float32(0.4))
        np.testing.assert_array_equal(b.signal_scale, np.float32(1.0))
    # 150 draws of a uniform over 7 (8) values: each is missed with probability < 1e-8.
    assert contexts == set(range(3, 10)) and extras == set(range(2, 10))


def test_anp_setting_per_task_counts_and_kernel_ranges():
    batches = _take(gp_tasks(meta_batch_size=64, seed=4, per_task_counts=True, **ANP_SETTING), 4)
    n_c = np.concatenate([b.support_mask.sum(-1) for b in batches])
    n_q = np.concatenate([b.query_mask.sum(-1) for b in batches])
    assert n_c.min() >= 3 and n_c.max() <= 49 and len(set(n_c)) > 20  # drawn per task
    assert np.all(n_q >= n_c) and n_q.max() <= 49  # the reference's total of at most 49 points
    lengths = np.concatenate([b.length_scale for b in batches])
    signals = np.concatenate([b.signal_scale for b in batches])
    assert 0.1 <= lengths.min() and lengths.max() <= 0.6 and lengths.std() > 0.1
    assert 0.1 <= signals.min() and signals.max() <= 1.0 and signals.std() > 0.2


def test_test_stream_grid_and_context_subset():
    b = _take(gp_test_tasks(meta_batch_size=6, seed=5, per_task_counts=True), 1)[0]
    np.testing.assert_allclose(b.query_x[0, :, 0], -2.0 + 0.01 * np.arange(400), atol=1e-6)  # tf.range(-2, 2, .01)
    np.testing.assert_array_equal(b.query_mask, 1.0)
    for t in range(6):
        n_c = int(b.support_mask[t].sum())
        assert 3 <= n_c <= 9
        index = np.rint((b.support_x[t, :n_c, 0] + 2.0) / 0.01).astype(int)
        assert len(set(index)) == n_c  # distinct grid points
        np.testing.assert_array_equal(b.support_y[t, :n_c, 0], b.query_y[t, index, 0])  # same draw
        assert np.all(b.support_x[t, n_c:] == 0) and np.all(b.support_y[t, n_c:] == 0)


def test_samples_at_fixed_inputs_have_the_kernel_covariance():
    # y at fixed grid inputs over n tasks: mean(y_i y_j) estimates K_ij + noise^2 [i = j]
    # with standard error sqrt((K_ii K_jj + K_ij^2) / n) (Isserlis). signal_scale=0.7 so
    # that sigma and sigma^2 differ.
    n_per, steps = 1000, 4
    batches = _take(gp_test_tasks(n_per, seed=6, num_targets=40, signal_scale=0.7), steps)
    y = np.concatenate([b.query_y[:, :, 0] for b in batches]).astype(np.float64)  # (n, 40)
    x = batches[0].query_x[0, :, 0].astype(np.float64)
    points = [0, 2, 5, 20]  # x = -2.0, -1.8, -1.5, 0.0
    cov = _kernel(x[points], x[points], 0.4, 0.7) + NOISE**2 * np.eye(4)
    sample = y[:, points]
    empirical = sample.T @ sample / len(sample)
    stderr = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / len(sample))
    assert np.all(np.abs(empirical - cov) < 5 * stderr), (empirical, cov, stderr)
    assert np.all(np.abs(sample.mean(0)) < 5 * np.sqrt(np.diag(cov) / len(sample)))


def test_training_samples_whiten_to_standard_normal_under_their_kernel():
    # y ~ N(0, K + noise^2 I) iff L^-1 y ~ N(0, I), L the Cholesky factor: pooled whitened
    # values have mean 0 (stderr 1/sqrt(N)) and variance 1 (stderr sqrt(2/N)), and
    # neighbours are uncorrelated (stderr 1/sqrt(M)). Random kernel parameters per task,
    # read from the episode, so the reported parameters are the ones used.
    whitened, products = [], []
    for b in _take(gp_tasks(256, seed=7, per_task_counts=True, **ANP_SETTING), 3):
        for t in range(256):
            n = int(b.query_mask[t].sum())
            x, y = b.query_x[t, :n, 0].astype(np.float64), b.query_y[t, :n, 0].astype(np.float64)
            cov = _kernel(x, x, float(b.length_scale[t]), float(b.signal_scale[t])) + NOISE**2 * np.eye(n)
            w = np.linalg.solve(np.linalg.cholesky(cov), y)
            whitened.append(w)
            products.append(w[1:] * w[:-1])
    w, p = np.concatenate(whitened), np.concatenate(products)
    assert abs(w.mean()) < 5 / math.sqrt(w.size)
    assert abs(w.var() - 1.0) < 5 * math.sqrt(2.0 / w.size), w.var()
    assert abs(p.mean()) < 5 / math.sqrt(p.size)


def test_same_seed_same_stream_and_resume():
    first = _take(gp_tasks(3, seed=8), 4)
    again = _take(gp_tasks(3, seed=8), 4)
    other = _take(gp_tasks(3, seed=9), 4)
    resumed = _take(gp_tasks(3, seed=8, start_step=2), 2)
    for a, b, c in zip(first, again, other):
        for ta, tb in zip(a, b):
            np.testing.assert_array_equal(ta, tb)
        assert not np.allclose(a.query_x, c.query_x)
    for a, b in zip(first[2:], resumed):
        for ta, tb in zip(a, b):
            np.testing.assert_array_equal(ta, tb)
    test_full = _take(gp_test_tasks(2, seed=8, num_targets=50), 3)
    test_resumed = _take(gp_test_tasks(2, seed=8, num_targets=50, start_step=1), 2)
    for a, b in zip(test_full[1:], test_resumed):
        for ta, tb in zip(a, b):
            np.testing.assert_array_equal(ta, tb)


def test_task_does_not_depend_on_meta_batch_size():
    small = _take(gp_tasks(2, seed=10, **ANP_SETTING), 2)
    large = _take(gp_tasks(5, seed=10, **ANP_SETTING), 2)
    for a, b in zip(small, large):
        for ta, tb in zip(a, b):
            np.testing.assert_allclose(ta, tb[:2], rtol=1e-5, atol=1e-5)


def test_input_context_shards_the_global_meta_batch():
    full = _take(gp_tasks(8, seed=11, start_step=3), 2)
    slices = {}
    for pipeline in range(2):
        context = tf.distribute.InputContext(2, pipeline, 4)
        for i, element in enumerate(_take(gp_tasks(8, seed=11, start_step=3, input_context=context), 4)):
            slices[(i // 2, pipeline * 2 + i % 2)] = element
    for step in range(2):
        for field in range(8):
            joined = np.concatenate([slices[(step, r)][field] for r in range(4)])
            np.testing.assert_array_equal(joined, full[step][field])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(meta_batch_size=0), "meta_batch_size=0"),
        (dict(start_step=-1), "start_step=-1"),
        (dict(num_context=(0, 4)), r"num_context=\(0, 4\)"),
        (dict(num_context=(5, 4)), r"num_context=\(5, 4\)"),
        (dict(num_extra_targets=(2,)), r"num_extra_targets=\(2,\)"),
        (dict(length_scale=-0.4), "length_scale=-0.4"),
        (dict(signal_scale=(1.0, 0.1)), r"signal_scale=\(1.0, 0.1\)"),
        (dict(noise=0.0), "noise=0.0"),
        (dict(x_range=(2.0, -2.0)), r"x_range=\(2.0, -2.0\)"),
        (dict(max_total_points=10), "max_total_points=10"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    args = dict(meta_batch_size=2) | kwargs
    with pytest.raises(ValueError, match=match):
        gp_tasks(**args)


def test_anp_test_stream_draws_kernels_and_up_to_49_context_points():
    b = _take(gp_test_tasks(32, seed=13, per_task_counts=True, **ANP_TEST_SETTING), 1)[0]
    assert b.support_x.shape == (32, 49, 1) and b.query_x.shape == (32, 400, 1)
    n_c = b.support_mask.sum(-1)
    assert n_c.min() >= 3 and n_c.max() <= 49 and len(set(n_c)) > 10
    assert 0.1 <= b.length_scale.min() and b.length_scale.max() <= 0.6 and b.length_scale.std() > 0.05


def test_test_stream_needs_enough_targets():
    with pytest.raises(ValueError, match="num_targets=5"):
        gp_test_tasks(2, num_targets=5)


# --- The exact GP oracle -------------------------------------------------------------


def _hand_posterior(x1, x2, y1, y2, xs, length, signal, noise):
    """2 context points, 1 target: the 2x2 inverse written out."""
    k = lambda a, b: signal**2 * math.exp(-0.5 * (a - b) ** 2 / length**2)  # noqa: E731
    a11, a22, a12 = k(x1, x1) + noise**2, k(x2, x2) + noise**2, k(x1, x2)
    det = a11 * a22 - a12**2
    inv = [[a22 / det, -a12 / det], [-a12 / det, a11 / det]]
    ks = [k(xs, x1), k(xs, x2)]
    mean = sum(ks[i] * inv[i][j] * (y1, y2)[j] for i in range(2) for j in range(2))
    var = signal**2 + noise**2 - sum(ks[i] * inv[i][j] * ks[j] for i in range(2) for j in range(2))
    return mean, var


def test_posterior_and_log_likelihood_match_a_hand_computation():
    x1, x2, y1, y2, xs, ys = 0.0, 0.5, 1.0, -0.5, 0.25, 0.3
    length, signal, noise = 0.4, 1.3, 0.1
    mean, var = _hand_posterior(x1, x2, y1, y2, xs, length, signal, noise)
    got_mean, got_std = gp_posterior([[x1], [x2]], [[y1], [y2]], [[xs]], length, signal, noise)
    assert got_mean.dtype == tf.float64 and got_mean.shape == (1, 1)
    np.testing.assert_allclose(got_mean.numpy()[0, 0], mean, rtol=1e-12)
    np.testing.assert_allclose(got_std.numpy()[0, 0] ** 2, var, rtol=1e-12)
    log_p = gp_log_likelihood([[x1], [x2]], [[y1], [y2]], [[xs]], [[ys]], length, signal, noise)
    expected = -0.5 * math.log(2 * math.pi * var) - (ys - mean) ** 2 / (2 * var)
    np.testing.assert_allclose(log_p.numpy()[0], expected, rtol=1e-12)
    # The latent f: the same without the target's noise variance.
    _, f_std = gp_posterior([[x1], [x2]], [[y1], [y2]], [[xs]], length, signal, noise, include_noise=False)
    np.testing.assert_allclose(f_std.numpy()[0, 0] ** 2, var - noise**2, rtol=1e-12)


def test_no_context_gives_the_prior():
    mean, std = gp_posterior(np.zeros((0, 1)), np.zeros((0, 1)), [[0.3], [1.0]], 0.4, 0.8)
    np.testing.assert_allclose(mean.numpy(), 0.0)
    np.testing.assert_allclose(std.numpy(), math.sqrt(0.8**2 + NOISE**2))


def test_masks_ignore_padded_points_and_batch_parameters_broadcast():
    # Task 0 has a garbage padded context point; task 1 has other kernel parameters.
    cx = np.array([[[0.0], [0.5], [0.26]], [[0.1], [-0.3], [0.7]]])
    cy = np.array([[[1.0], [-0.5], [99.0]], [[0.2], [0.4], [-0.1]]])
    mask = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    tx = np.array([[[0.25], [9.0]], [[0.0], [1.0]]])
    ty = np.array([[[0.3], [0.0]], [[0.1], [0.2]]])
    lengths, signals = np.array([0.4, 0.7]), np.array([1.3, 0.6])
    mean, std = gp_posterior(cx, cy, tx, lengths, signals, 0.1, context_mask=mask)
    hand_mean, hand_var = _hand_posterior(0.0, 0.5, 1.0, -0.5, 0.25, 0.4, 1.3, 0.1)
    np.testing.assert_allclose(mean.numpy()[0, 0, 0], hand_mean, rtol=1e-10)
    np.testing.assert_allclose(std.numpy()[0, 0, 0] ** 2, hand_var, rtol=1e-10)
    for t in range(2):  # each task alone, unmasked points only, its own parameters
        keep = mask[t] == 1
        m, s = gp_posterior(cx[t][keep], cy[t][keep], tx[t], lengths[t], signals[t], 0.1)
        np.testing.assert_allclose(mean.numpy()[t], m.numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(std.numpy()[t], s.numpy(), rtol=1e-10)
    log_p = gp_log_likelihood(cx, cy, tx, ty, lengths, signals, 0.1, context_mask=mask,
                              target_mask=[[1.0, 0.0], [1.0, 1.0]])
    assert log_p.shape == (2, 2) and log_p.numpy()[0, 1] == 0.0


def test_oracle_is_calibrated_on_generated_tasks_and_beats_a_wrong_kernel():
    # Under the true kernel, z = (y - mean) / std of each extra target is N(0, 1): mean 0
    # (stderr 1/sqrt(N)), variance 1 (stderr sqrt(2/N)); the tasks are independent and we
    # pool one target per task so the z are independent. And the expected log-likelihood
    # is highest under the true kernel (Gibbs' inequality): the per-task difference to a
    # kernel with half the length scale has a positive mean, beyond 5 standard errors.
    zs, gains = [], []
    for b in _take(gp_tasks(500, seed=12, per_task_counts=True), 4):
        mean, std = gp_posterior(b.support_x, b.support_y, b.query_x, b.length_scale, b.signal_scale,
                                 context_mask=b.support_mask)
        n_c = b.support_mask.sum(-1).astype(int)
        first_extra = np.take_along_axis(np.arange(18)[None], n_c[:, None], 1)[:, 0]  # (tasks,)
        rows = np.arange(500)
        y = b.query_y[rows, first_extra, 0]
        zs.append((y - mean.numpy()[rows, first_extra, 0]) / std.numpy()[rows, first_extra, 0])
        args = (b.support_x, b.support_y, b.query_x, b.query_y)
        kwargs = dict(context_mask=b.support_mask, target_mask=b.query_mask)
        true_ll = gp_log_likelihood(*args, b.length_scale, b.signal_scale, **kwargs).numpy().sum(-1)
        wrong_ll = gp_log_likelihood(*args, 0.5 * b.length_scale, b.signal_scale, **kwargs).numpy().sum(-1)
        gains.append(true_ll - wrong_ll)
    z, gain = np.concatenate(zs), np.concatenate(gains)
    assert abs(z.mean()) < 5 / math.sqrt(z.size)
    assert abs(z.var() - 1.0) < 5 * math.sqrt(2.0 / z.size), z.var()
    assert gain.mean() > 5 * gain.std() / math.sqrt(gain.size)


def test_oracle_rejects_targets_without_a_trailing_axis():
    with pytest.raises(ValueError, match=r"context_y.shape=\(2,\)"):
        gp_posterior([[0.0], [1.0]], [0.0, 1.0], [[0.5]], 0.4, 1.0)
    with pytest.raises(ValueError, match=r"target_y.shape=\(1, 2\)"):
        gp_log_likelihood([[0.0]], [[0.0]], [[0.5]], [[0.1, 0.2]], 0.4, 1.0)
