"""Tests for `tfmeta.data.rl.bandits`: Bernoulli bandit tasks and the vectorised environment.

Statistical checks use 5 standard errors computed from the sample size.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfmeta.data.rl import BernoulliBandit, bandit_tasks


def test_arm_means_are_uniform_and_independent():
    means = BernoulliBandit(10).sample_tasks(tf.constant([3, 0], tf.int64), 2000).numpy()  # (2000, 10)
    assert means.shape == (2000, 10) and means.dtype == np.float32
    values = np.sort(means.ravel())
    n = values.size
    # Kolmogorov-Smirnov against U[0, 1]: the asymptotic critical value at level 1e-3 is
    # sqrt(-ln(0.0005) / 2) / sqrt(n) = 1.95 / sqrt(n).
    ks = max(np.max(np.arange(1, n + 1) / n - values), np.max(values - np.arange(n) / n))
    assert ks < 1.95 / math.sqrt(n), ks
    # Arms independent: correlation of arms 0 and 1 across tasks, stderr 1 / sqrt(tasks).
    assert abs(np.corrcoef(means[:, 0], means[:, 1])[0, 1]) < 5 / math.sqrt(2000)


def test_task_rows_do_not_depend_on_the_number_of_tasks():
    env = BernoulliBandit(5)
    few = env.sample_tasks(tf.constant([1, 2], tf.int64), 3).numpy()
    many = env.sample_tasks(tf.constant([1, 2], tf.int64), 8).numpy()
    np.testing.assert_array_equal(few, many[:3])


def test_rewards_are_bernoulli_with_the_pulled_arms_mean():
    envs, steps = 3000, 30
    env = BernoulliBandit(3)
    means = np.tile([[0.1, 0.5, 0.9]], (envs, 1)).astype(np.float32)
    obs, state = env.reset(means, seed=[4, 5])
    assert obs.shape == (envs,) and obs.dtype == tf.int32
    action = tf.constant(np.arange(envs) % 3, tf.int32)  # env e always pulls arm e % 3
    rewards = []
    for t in range(steps):
        obs, reward, done, state = env.step(state, action)
        assert np.all(obs.numpy() == 0) and np.all(done.numpy())
        rewards.append(reward.numpy())
    assert np.all(state.pulls.numpy() == steps)
    rewards = np.stack(rewards)  # (steps, envs)
    assert set(np.unique(rewards)) <= {0.0, 1.0}
    for arm, p in enumerate((0.1, 0.5, 0.9)):
        r = rewards[:, arm::3]
        assert abs(r.mean() - p) < 5 * math.sqrt(p * (1 - p) / r.size), (arm, r.mean())
    # Independent draws across steps and across environments (stderr 1 / sqrt(pairs)).
    centred = rewards - np.array([0.1, 0.5, 0.9])[np.arange(envs) % 3]
    scale = centred.std()
    across_steps = np.mean(centred[1:] * centred[:-1]) / scale**2
    across_envs = np.mean(centred[:, 1:] * centred[:, :-1]) / scale**2
    assert abs(across_steps) < 5 / math.sqrt(centred[1:].size)
    assert abs(across_envs) < 5 / math.sqrt(centred[:, 1:].size)


def test_same_seed_same_rewards_other_seed_differs():
    env = BernoulliBandit(4)
    means = env.sample_tasks([0, 0], 500)

    def trial(seed):
        _, state = env.reset(means, seed)
        out = []
        for t in range(5):
            _, reward, _, state = env.step(state, tf.fill([500], t % 4))
            out.append(reward.numpy())
        return np.stack(out)

    np.testing.assert_array_equal(trial([1, 2]), trial([1, 2]))
    assert not np.array_equal(trial([1, 2]), trial([1, 3]))


def test_random_trial_in_a_while_loop_matches_the_papers_random_baseline():
    # Random arm each pull: E[reward] = E[p] = 1/2, so a trial of n = 10 pulls totals 5 in
    # expectation (RL² Table 1: Random 5.0 for n = 10).
    env, envs, pulls = BernoulliBandit(5), 4000, 10

    @tf.function
    def trial(means, seed):
        _, state = env.reset(means, seed)
        total = tf.zeros([envs])

        def body(t, total, state):
            action = tf.random.stateless_uniform([envs], seed=tf.stack([seed[0], 100 + t]), maxval=5, dtype=tf.int64)
            _, reward, _, state = env.step(state, action)
            return t + 1, total + reward, state

        _, total, _ = tf.while_loop(lambda t, *_: t < pulls, body, (tf.constant(0, tf.int64), total, state))
        return total

    total = trial(env.sample_tasks([9, 9], envs), tf.constant([1, 1], tf.int64)).numpy()
    assert abs(total.mean() - 5.0) < 5 * total.std() / math.sqrt(envs), total.mean()


def _take(dataset, n):
    return [tf.nest.map_structure(lambda t: t.numpy(), e) for e in dataset.take(n)]


def test_task_stream_is_deterministic_resumable_and_shardable():
    full = _take(bandit_tasks(5, 8, seed=2), 4)
    assert full[0].params.shape == (8, 5) and full[0].seed.shape == (2,)
    again = _take(bandit_tasks(5, 8, seed=2), 4)
    resumed = _take(bandit_tasks(5, 8, seed=2, start_step=2), 2)
    for a, b in zip(full, again):
        np.testing.assert_array_equal(a.params, b.params)
        np.testing.assert_array_equal(a.seed, b.seed)
    for a, b in zip(full[2:], resumed):
        np.testing.assert_array_equal(a.params, b.params)
        np.testing.assert_array_equal(a.seed, b.seed)
    assert len({tuple(e.seed) for e in full}) == 4  # a fresh rollout seed every step
    assert not np.allclose(full[0].params, full[1].params)
    slices = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(2, pipeline, 2)
        slices.append(_take(bandit_tasks(5, 8, seed=2, input_context=context), 2))
    for step in range(2):
        np.testing.assert_array_equal(np.concatenate([s[step].params for s in slices]), full[step].params)
        assert tuple(slices[0][step].seed) != tuple(slices[1][step].seed)  # independent noise per slice


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: BernoulliBandit(0), "num_arms=0"),
        (lambda: bandit_tasks(5, 0), "meta_batch_size=0"),
        (lambda: bandit_tasks(5, 4, start_step=-1), "start_step=-1"),
    ],
)
def test_bad_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()
