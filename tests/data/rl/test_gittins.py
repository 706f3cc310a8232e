"""Tests for `tfmeta.data.rl.gittins.gittins_indices`."""

import functools

import numpy as np
import pytest

from tfmeta.data.rl.gittins import gittins_indices

# Gittins, Glazebrook & Weber (2011), "Multi-armed Bandit Allocation Indices", 2nd ed.,
# Bernoulli/Beta(1, 1) table at discount 0.9, to 4 decimals (the same values are the
# expected ones of ydalmia/GittinsIndices.jl's tests): {(successes, failures): index}.
PUBLISHED_0_9 = {(0, 0): 0.7029, (1, 0): 0.8001, (2, 0): 0.8452, (0, 1): 0.5001, (1, 1): 0.6346, (0, 2): 0.3796}


def test_matches_published_indices_at_discount_0_9():
    table = gittins_indices(0.9, max_pulls=2, truncation=300)
    for (s, f), value in PUBLISHED_0_9.items():
        assert abs(table[s, f] - value) <= 1e-4, ((s, f), table[s, f], value)  # 5e-5 rounding + grid
    assert np.isnan(table[2, 1]) and np.isnan(table[1, 2])  # beyond max_pulls


def test_hand_solved_one_step_look_ahead():
    # Truncation after one observation: the posterior after it is taken as exact, so
    # V1 = max(lam, mu1) / (1 - g) with mu1 = 2/3 (success) or 1/3 (failure). For
    # 1/3 < lam < 2/3 the indifference lam / (1 - g) = 1/2 + g (2/3 + lam) / (2 (1 - g))
    # gives lam = (1/2 - g/6) / (1 - g/2).
    for g in (0.5, 0.9):
        expected = (0.5 - g / 6) / (1 - g / 2)
        assert 1 / 3 < expected < 2 / 3
        np.testing.assert_allclose(gittins_indices(g, 0, truncation=1)[0, 0], expected, atol=2e-6)


def _bisection_index(a, b, discount, depth):
    """Independent check: bisection on lam, one memoised recursion per lam."""

    def advantage(lam):
        @functools.lru_cache(maxsize=None)
        def value(s, f):
            mu = (a + s) / (a + b + s + f)
            if s + f == depth:
                return max(lam, mu) / (1 - discount)
            cont = mu + discount * (mu * value(s + 1, f) + (1 - mu) * value(s, f + 1))
            return max(lam / (1 - discount), cont)

        mu = a / (a + b)
        return mu + discount * (mu * value(1, 0) + (1 - mu) * value(0, 1)) - lam / (1 - discount)

    low, high = 0.0, 1.0
    for _ in range(40):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if advantage(mid) > 0 else (low, mid)
    return 0.5 * (low + high)


def test_matches_per_state_bisection_with_a_beta_2_3_prior():
    discount, truncation = 0.8, 25
    table = gittins_indices(discount, 3, prior=(2.0, 3.0), truncation=truncation)
    for s in range(4):
        for f in range(4 - s):
            expected = _bisection_index(2.0 + s, 3.0 + f, discount, truncation - s - f)
            assert abs(table[s, f] - expected) < 2e-5, ((s, f), table[s, f], expected)


def test_structure_bonus_monotone_and_vanishing_with_the_discount():
    table = gittins_indices(0.95, 20)
    s, f = np.meshgrid(np.arange(21), np.arange(21), indexing="ij")
    valid = s + f <= 20
    mean = (s + 1.0) / (s + f + 2.0)
    assert np.all(table[valid] > mean[valid])  # the value of information is positive
    assert np.all(np.diff(table[:, 0]) > 0)  # more successes: higher
    assert np.all(np.diff(table[0, :]) < 0)  # more failures: lower
    bonus_at_half = [table[k, k] - 0.5 for k in range(11)]  # mean 1/2, more and more evidence
    assert np.all(np.diff(bonus_at_half) < 0)
    myopic = gittins_indices(0.01, 5)
    np.testing.assert_allclose(myopic[0, 0], 0.5, atol=0.01)  # no future: the mean


def test_cached_and_read_only():
    assert gittins_indices(0.9, 4) is gittins_indices(0.9, 4)
    with pytest.raises(ValueError):
        gittins_indices(0.9, 4)[0, 0] = 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(discount=1.0, max_pulls=3), "discount=1.0"),
        (dict(discount=0.9, max_pulls=-1), "max_pulls=-1"),
        (dict(discount=0.9, max_pulls=3, prior=(0.0, 1.0)), r"prior=\(0.0, 1.0\)"),
        (dict(discount=0.9, max_pulls=3, truncation=3), "truncation=3"),
        (dict(discount=0.9, max_pulls=3, resolution=2), "resolution=2"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gittins_indices(**kwargs)
