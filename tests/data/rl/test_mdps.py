"""Tests for `tfmeta.data.rl.mdps`: random tabular MDPs and the vectorised environment.

Statistical checks use 5 standard errors computed from the sample size.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfmeta.data.rl import MDPParams, TabularMDP, mdp_tasks


def test_sampled_mdps_follow_the_rl2_distribution():
    params = TabularMDP().sample_tasks(tf.constant([1, 0], tf.int64), 1000)
    p, r = params.transitions.numpy().astype(np.float64), params.reward_means.numpy().astype(np.float64)
    assert p.shape == (1000, 10, 5, 10) and r.shape == (1000, 10, 5)
    assert np.all(p >= 0)
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
    # Flat Dirichlet over 10 states: each entry is Beta(1, 9), mean 1/10 and
    # E[p^2] = 1 * 2 / (10 * 11). One entry per row, so the samples are independent.
    first = p[..., 0].ravel()
    assert abs(first.mean() - 0.1) < 5 * first.std() / math.sqrt(first.size)
    second_moment = first**2
    assert abs(second_moment.mean() - 2 / 110) < 5 * second_moment.std() / math.sqrt(first.size)
    # Reward means ~ N(1, 1): mean (stderr 1/sqrt(N)) and variance (stderr sqrt(2/N)).
    values = r.ravel()
    assert abs(values.mean() - 1.0) < 5 / math.sqrt(values.size)
    assert abs(values.var() - 1.0) < 5 * math.sqrt(2 / values.size)


def _one_task_many_envs(envs, seed=(2, 0)):
    env = TabularMDP()
    task = env.sample_tasks(tf.constant(seed, tf.int64), 1)
    params = MDPParams(*(tf.repeat(t, envs, axis=0) for t in task))
    return env, params, MDPParams(*(t.numpy()[0] for t in task))


def test_steps_follow_the_sampled_transitions_and_rewards():
    envs = 20000
    env, params, task = _one_task_many_envs(envs)
    obs, state = env.reset(params, seed=[3, 4])
    assert np.all(obs.numpy() == 0)
    obs, reward, done, state = env.step(state, tf.fill([envs], 2))  # (s=0, a=2) everywhere
    next_state, reward = obs.numpy(), reward.numpy().astype(np.float64)
    assert not np.any(done.numpy())
    expected = task.transitions[0, 2].astype(np.float64)
    frequencies = np.bincount(next_state, minlength=10) / envs
    stderr = np.sqrt(expected * (1 - expected) / envs)
    assert np.all(np.abs(frequencies - expected) <= 5 * stderr + 1e-12), (frequencies, expected)
    # Rewards ~ N(R(0, 2), 1).
    assert abs(reward.mean() - task.reward_means[0, 2]) < 5 / math.sqrt(envs)
    assert abs(reward.var() - 1.0) < 5 * math.sqrt(2 / envs)
    # A second step from the states reached, action 1: P(. | s, 1) for each s reached often.
    obs, _, _, state = env.step(state, tf.fill([envs], 1))
    for s in range(10):
        from_s = next_state == s
        if from_s.sum() < 500:
            continue
        expected = task.transitions[s, 1].astype(np.float64)
        frequencies = np.bincount(obs.numpy()[from_s], minlength=10) / from_s.sum()
        stderr = np.sqrt(expected * (1 - expected) / from_s.sum())
        assert np.all(np.abs(frequencies - expected) <= 5 * stderr + 1e-12), (s, frequencies, expected)


def test_episodes_last_the_horizon_and_restart_in_the_first_state():
    env = TabularMDP(horizon=10)
    params = env.sample_tasks([5, 5], 64)
    obs, state = env.reset(params, seed=[0, 1])
    visited = set()
    for t in range(30):
        obs, reward, done, state = env.step(state, tf.fill([64], t % 5))
        assert reward.shape == (64,) and reward.dtype == tf.float32
        assert np.all(done.numpy() == ((t + 1) % 10 == 0))
        if (t + 1) % 10 == 0:
            assert np.all(obs.numpy() == 0) and np.all(state.time.numpy() == 0)
        else:
            visited.update(obs.numpy().tolist())
            assert np.all(state.time.numpy() == (t + 1) % 10)
    assert len(visited) == 10


def test_random_trial_in_a_tf_function_matches_the_papers_random_baseline():
    # Random actions are independent of the reward means, so each step's reward has mean
    # E[R] = 1 and a trial of n = 10 episodes of 10 steps totals 100 in expectation
    # (RL² Table 2: Random 100.1).
    env, envs = TabularMDP(), 2000

    @tf.function
    def trial(params, seed):
        _, state = env.reset(params, seed)

        def body(t, total, state):
            action = tf.random.stateless_uniform([envs], seed=tf.stack([seed[0], 50 + t]), maxval=5, dtype=tf.int64)
            _, reward, _, state = env.step(state, action)
            return t + 1, total + reward, state

        _, total, _ = tf.while_loop(lambda t, *_: t < 100, body, (tf.constant(0, tf.int64), tf.zeros([envs]), state))
        return total

    total = trial(env.sample_tasks([8, 8], envs), tf.constant([2, 2], tf.int64)).numpy()
    assert abs(total.mean() - 100.0) < 5 * total.std() / math.sqrt(envs), total.mean()


def _take(dataset, n):
    return [tf.nest.map_structure(lambda t: t.numpy(), e) for e in dataset.take(n)]


def test_task_stream_is_deterministic_resumable_and_shardable():
    full = _take(mdp_tasks(6, seed=4), 3)
    assert full[0].params.transitions.shape == (6, 10, 5, 10) and full[0].params.reward_means.shape == (6, 10, 5)
    resumed = _take(mdp_tasks(6, seed=4, start_step=1), 2)
    for a, b in zip(full[1:], resumed):
        for ta, tb in zip(tf.nest.flatten(a), tf.nest.flatten(b)):
            np.testing.assert_array_equal(ta, tb)
    other = _take(mdp_tasks(6, seed=5), 1)[0]
    assert not np.allclose(other.params.reward_means, full[0].params.reward_means)
    slices = [_take(mdp_tasks(6, seed=4, input_context=tf.distribute.InputContext(3, i, 3)), 1)[0] for i in range(3)]
    np.testing.assert_array_equal(np.concatenate([s.params.transitions for s in slices]), full[0].params.transitions)
    small = TabularMDP(num_states=3, num_actions=2, horizon=4)
    element = _take(mdp_tasks(2, env=small), 1)[0]
    assert element.params.transitions.shape == (2, 3, 2, 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_states=0), "num_states=0"),
        (dict(horizon=2.5), "horizon=2.5"),
        (dict(dirichlet_concentration=0.0), "dirichlet_concentration=0.0"),
        (dict(reward_prior=(1.0, -1.0)), r"reward_prior=\(1.0, -1.0\)"),
        (dict(reward_std=-1.0), "reward_std=-1.0"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TabularMDP(**kwargs)
