"""Tests for `tfmeta.data.rl.bandit_baselines`: each policy on a case with a known answer."""

import functools
import math

import numpy as np
import pytest

from tfmeta.data.rl import BernoulliBandit
from tfmeta.data.rl.bandit_baselines import (
    RL2_BANDIT_RESULTS,
    bandit_baselines,
    best_arm_total,
    epsilon_greedy_choice,
    gittins_choice,
    greedy_choice,
    mean_ci95,
    run_bandit_baseline,
    thompson_choice,
    thompson_posterior,
    ucb1_choice,
)

# A hand-made history of 18 pulls on 3 arms: arm 0 8/10 successes, arm 1 1/2, arm 2 3/6.
SUCCESSES = np.array([[8, 1, 3]])
FAILURES = np.array([[2, 1, 3]])
ROUND = 19  # the next pull is the 19th


def _rng(seed=0):
    return np.random.default_rng(seed)


def test_ucb1_auer_form_on_a_hand_made_history():
    # Auer et al. (2002): mean_i + sqrt(2 ln t / n_i).
    log_t = math.log(ROUND)
    scores = [8 / 10 + math.sqrt(2 * log_t / 10), 1 / 2 + math.sqrt(2 * log_t / 2), 3 / 6 + math.sqrt(2 * log_t / 6)]
    assert scores[1] > max(scores[0], scores[2])  # 2.216 vs 1.567, 1.491: the rarely pulled arm
    assert ucb1_choice(SUCCESSES, FAILURES, ROUND, _rng(), c=1.0, prior=(0, 0))[0] == 1
    assert greedy_choice(SUCCESSES, FAILURES, ROUND, _rng(), prior=(0, 0))[0] == 0  # greedy differs
    # An arm never pulled (no prior pseudo-counts) is pulled first.
    assert ucb1_choice([[5, 0]], [[0, 0]], 6, _rng(), prior=(0, 0))[0] == 1


def test_ucb1_rl2_form_with_one_prior_success_and_failure():
    # RL²: statistics initialised with one success and one failure, bonus c sqrt(2 ln t / n_i).
    log_t = math.log(ROUND)
    means, counts = np.array([9 / 12, 2 / 4, 4 / 8]), np.array([12, 4, 8])
    for c, expected in ((0.2, 0), (1.0, 1)):
        scores = means + c * np.sqrt(2 * log_t / counts)  # c=0.2: .890 .743 .672; c=1: 1.450 1.713 1.358
        assert int(np.argmax(scores)) == expected
        assert ucb1_choice(SUCCESSES, FAILURES, ROUND, _rng(), c=c)[0] == expected


def test_greedy_picks_the_best_posterior_mean_and_breaks_ties_at_random():
    assert greedy_choice([[1, 5, 2]], [[0, 1, 2]], 12, _rng(), prior=(0, 0))[0] == 0  # 1/1 is the best mean
    assert greedy_choice([[1, 5, 2]], [[0, 1, 2]], 12, _rng())[0] == 1  # with Beta(1, 1): 2/3 < 6/8
    # Two tied arms (2/4 each) out of three: each chosen half the time (5 stderr).
    choices = greedy_choice(np.tile([[1, 0, 1]], (4000, 1)), np.tile([[1, 3, 1]], (4000, 1)), 9, _rng())
    assert set(np.unique(choices)) == {0, 2}
    assert abs(np.mean(choices == 0) - 0.5) < 5 * math.sqrt(0.25 / 4000)


def test_epsilon_greedy_explores_with_probability_epsilon():
    choices = epsilon_greedy_choice(np.tile([[9, 0, 0, 0]], (8000, 1)), np.zeros((8000, 4), int), 10, _rng(), 0.3)
    expected = 0.3 * 3 / 4  # a random arm other than the greedy one
    assert abs(np.mean(choices != 0) - expected) < 5 * math.sqrt(expected * (1 - expected) / 8000)


def test_thompson_posterior_and_sampling_after_a_known_history():
    alpha, beta = thompson_posterior([[3, 0]], [[1, 2]])
    np.testing.assert_array_equal(alpha, [[4, 1]])
    np.testing.assert_array_equal(beta, [[2, 3]])
    # Beta(2, 1) vs Beta(1, 2): P(X > Y) = int_0^1 2x (2x - x^2) dx = 5/6.
    n = 20000
    choices = thompson_choice(np.tile([[1, 0]], (n, 1)), np.tile([[0, 1]], (n, 1)), 3, _rng())
    assert abs(np.mean(choices == 0) - 5 / 6) < 5 * math.sqrt(5 / 36 / n)


def test_gittins_choice_takes_the_largest_index():
    table = np.array([[0.5, 0.2], [0.9, np.nan]])  # [successes, failures]
    assert gittins_choice([[0, 1, 0]], [[0, 0, 1]], 3, _rng(), table)[0] == 1  # indices 0.5, 0.9, 0.2


def test_runner_keeps_the_statistics_and_totals():
    # A policy that checks the statistics it is given, then pulls arm e % 2.
    seen = []

    def checking(successes, failures, t, rng):
        assert np.all(successes + failures == (t - 1) * np.eye(2, dtype=int)[np.arange(len(successes)) % 2])
        seen.append(t)
        return np.arange(len(successes)) % 2

    envs = 2000
    means = np.tile([[0.2, 0.7]], (envs, 1))
    totals = run_bandit_baseline(checking, means, num_pulls=20, seed=(1, 2))
    assert seen == list(range(1, 21))
    for arm, p in ((0, 0.2), (1, 0.7)):
        mean = totals[arm::2].mean() / 20
        assert abs(mean - p) < 5 * math.sqrt(p * (1 - p) / (20 * envs / 2))
    np.testing.assert_allclose(best_arm_total(means, 20), 14.0)


def test_rl2_table_is_complete():
    assert set(RL2_BANDIT_RESULTS) == {(n, k) for n in (10, 100, 500) for k in (5, 10, 50)}
    for (n, k), row in RL2_BANDIT_RESULTS.items():
        assert set(row) == {"Random", "Gittins", "TS", "OTS", "UCB1", "EpsGreedy", "Greedy", "RL2"}
        # A random arm earns n/2 in expectation; over 1,000 tasks the standard error is
        # sqrt(Var / 1000) with Var = n/4 + n(n-1)/(12k) (pulls of one arm covary by Var(p) = 1/12).
        stderr = math.sqrt((n / 4 + n * (n - 1) / (12 * k)) / 1000)
        assert abs(row["Random"] - n / 2) < 5 * stderr
        assert min(row, key=row.get) == "Random" and max(row.values()) < n


def test_classical_policies_beat_random_on_1000_test_tasks():
    # n = 100 pulls, k = 10 arms, 1,000 tasks (RL² Table 1: Random 49.9, Gittins 82.8,
    # UCB1 82.4, TS 76.7). Measured here: Random 50.0 ± 0.7, UCB1 83.6 ± 0.7,
    # TS 76.9 ± 0.7, Gittins 83.6 ± 0.7 (mean ± 95% CI).
    means = BernoulliBandit(10).sample_tasks([0, 0], 1000).numpy()
    policies = bandit_baselines(100, 10)
    results = {name: mean_ci95(run_bandit_baseline(policies[name], means, 100, (0, 1)))
               for name in ("Random", "UCB1", "TS", "Gittins")}
    random_high = results["Random"][0] + results["Random"][1]
    for name in ("UCB1", "TS", "Gittins"):
        assert results[name][0] - results[name][1] > random_high, results
    assert results["Gittins"][0] + results["Gittins"][1] >= results["UCB1"][0] - results["UCB1"][1], results
    assert abs(results["Random"][0] - 50.0) < 5 * results["Random"][1] / 1.96


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match=r"means.shape=\(3,\)"):
        run_bandit_baseline(greedy_choice, np.zeros(3), 5)
    with pytest.raises(ValueError, match="num_pulls=0"):
        run_bandit_baseline(greedy_choice, np.zeros((2, 3)), 0)
