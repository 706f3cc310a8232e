"""Classical bandit algorithms, the reference points of RL² on Bernoulli bandits.

Each policy is a pure function of the sufficient statistics of a batch of trials,

```
choose(successes, failures, t, rng) -> actions
```

with `successes`, `failures` `(envs, arms)` integer counts of the rewards observed so
far (prior pseudo-counts not included), `t` the 1-based round (pulls so far + 1) and
`rng` a `numpy.random.Generator`; ties are broken uniformly at random. The policies
(Duan et al., 2016, Section 3.1, and the papers it cites):

* `random_choice`: a uniformly random arm.
* `greedy_choice`: the best posterior mean (RL²: "We use the same initialization as
  UCB1", one success and one failure per arm, i.e. a `Beta(1, 1)` prior).
* `epsilon_greedy_choice`: greedy with probability `1 - epsilon`, else random.
* `ucb1_choice` (Auer et al., 2002; RL²'s form): `mean_i + c * sqrt(2 ln t / n_i)`, the
  statistics initialised with one success and one failure (`prior=(1, 1)`); with
  `prior=(0, 0)` and `c=1` it is Auer's UCB1 (each arm once first).
* `thompson_choice` (Thompson, 1933): a draw from each arm's Beta posterior, the best.
* `gittins_choice` (Gittins, 1979): the largest Gittins index (`tfmeta.data.rl.gittins`)
  of the arms' Beta posteriors at a discount tuned for the trial length.

`run_bandit_baseline` plays a policy on a batch of tasks with `BernoulliBandit` (the
environment the learners use) and returns each trial's total reward.

Measured with `evaluate_bandit_baselines(n, k)` (1,000 test tasks of seed 0, mean ±
95% CI of the total reward per trial; the paper's Table 1 in brackets):

| n, k | Random | Gittins | TS | UCB1 | eps-greedy | Greedy |
| --- | --- | --- | --- | --- | --- | --- |
| 10, 5 | 4.97 ± 0.12 (5.0) | 6.67 ± 0.14 (6.6) | 5.78 ± 0.13 (5.7) | 6.67 ± 0.14 (6.7) | 6.66 ± 0.14 (6.6) | 6.63 ± 0.14 (6.6) |
| 10, 10 | 4.98 ± 0.11 (5.0) | 6.74 ± 0.13 (6.6) | 5.54 ± 0.11 (5.5) | 6.74 ± 0.13 (6.7) | 6.63 ± 0.13 (6.6) | 6.70 ± 0.13 (6.6) |
| 10, 50 | 5.00 ± 0.10 (5.1) | 6.68 ± 0.13 (6.5) | 5.13 ± 0.10 (5.2) | 6.68 ± 0.13 (6.6) | 6.73 ± 0.13 (6.5) | 6.65 ± 0.13 (6.5) |
| 100, 5 | 50.6 ± 0.9 (49.9) | 78.8 ± 1.0 (78.3) | 75.2 ± 1.0 (74.7) | 78.3 ± 1.0 (78.0) | 76.3 ± 1.0 (75.4) | 75.8 ± 1.0 (74.8) |
| 100, 10 | 50.0 ± 0.7 (49.9) | 83.6 ± 0.7 (82.8) | 76.9 ± 0.7 (76.7) | 83.6 ± 0.7 (82.4) | 79.3 ± 0.8 (77.4) | 80.0 ± 0.8 (77.1) |
| 100, 50 | 50.2 ± 0.4 (49.8) | 85.4 ± 0.6 (85.2) | 64.8 ± 0.4 (64.5) | 84.9 ± 0.6 (84.3) | 80.9 ± 0.8 (78.3) | 80.6 ± 0.8 (78.0) |
| 500, 5 | 252.4 ± 4.1 (249.8) | 408.8 ± 4.6 (405.8) | 403.2 ± 4.7 (402.0) | 406.2 ± 4.6 (405.8) | 392.8 ± 4.7 (388.2) | 385.9 ± 5.0 (380.6) |
| 500, 10 | 249.7 ± 2.9 (249.0) | 441.9 ± 3.0 (437.8) | 430.0 ± 3.1 (429.5) | 439.3 ± 2.9 (437.1) | 414.0 ± 3.2 (408.0) | 411.1 ± 3.8 (395.0) |
| 500, 50 | 250.5 ± 1.4 (249.6) | 464.4 ± 1.5 (463.7) | 425.8 ± 1.3 (427.2) | 457.9 ± 1.5 (457.6) | 423.5 ± 2.5 (413.6) | 414.0 ± 3.7 (402.8) |

The n = 500 Gittins tables take about 30 s each to compute (cached per process).
"""

import functools

import numpy as np
import tensorflow as tf

from tfmeta.data.rl.bandits import BernoulliBandit
from tfmeta.data.rl.gittins import gittins_indices

#: Where `RL2_BANDIT_RESULTS` comes from.
RL2_BANDIT_SOURCE = (
    "Duan, Schulman, Chen, Bartlett, Sutskever & Abbeel (2016), 'RL^2: Fast Reinforcement Learning via "
    "Slow Reinforcement Learning', arXiv:1611.02779, Table 1 (MAB results): total reward per trial, "
    "averaged over 1000 bandit instances; arms p_i ~ U[0, 1]."
)
#: The paper's Table 1: `{(n pulls, k arms): {method: total reward}}`.
RL2_BANDIT_RESULTS = {
    (10, 5): dict(Random=5.0, Gittins=6.6, TS=5.7, OTS=6.5, UCB1=6.7, EpsGreedy=6.6, Greedy=6.6, RL2=6.7),
    (10, 10): dict(Random=5.0, Gittins=6.6, TS=5.5, OTS=6.2, UCB1=6.7, EpsGreedy=6.6, Greedy=6.6, RL2=6.7),
    (10, 50): dict(Random=5.1, Gittins=6.5, TS=5.2, OTS=5.5, UCB1=6.6, EpsGreedy=6.5, Greedy=6.5, RL2=6.8),
    (100, 5): dict(Random=49.9, Gittins=78.3, TS=74.7, OTS=77.9, UCB1=78.0, EpsGreedy=75.4, Greedy=74.8, RL2=78.7),
    (100, 10): dict(Random=49.9, Gittins=82.8, TS=76.7, OTS=81.4, UCB1=82.4, EpsGreedy=77.4, Greedy=77.1, RL2=83.5),
    (100, 50): dict(Random=49.8, Gittins=85.2, TS=64.5, OTS=67.7, UCB1=84.3, EpsGreedy=78.3, Greedy=78.0, RL2=84.9),
    (500, 5): dict(
        Random=249.8, Gittins=405.8, TS=402.0, OTS=406.7, UCB1=405.8, EpsGreedy=388.2, Greedy=380.6, RL2=401.6
    ),
    (500, 10): dict(
        Random=249.0, Gittins=437.8, TS=429.5, OTS=438.9, UCB1=437.1, EpsGreedy=408.0, Greedy=395.0, RL2=432.5
    ),
    (500, 50): dict(
        Random=249.6, Gittins=463.7, TS=427.2, OTS=437.6, UCB1=457.6, EpsGreedy=413.6, Greedy=402.8, RL2=438.9
    ),
}


def _argmax_random_ties(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row-wise argmax of `(envs, arms)` values, ties broken uniformly at random."""
    ties = values == values.max(axis=-1, keepdims=True)
    return np.where(ties, rng.random(values.shape), -1.0).argmax(axis=-1)


def posterior_means(successes, failures, prior=(1.0, 1.0)) -> np.ndarray:
    """`(s + a0) / (s + f + a0 + b0)`; `inf` for an arm with no data and no prior (never pulled)."""
    successes, failures = np.asarray(successes, np.float64), np.asarray(failures, np.float64)
    total = successes + failures + prior[0] + prior[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (successes + prior[0]) / np.where(total > 0, total, 1.0), np.inf)


def random_choice(successes, failures, t, rng) -> np.ndarray:
    """A uniformly random arm per environment."""
    num_envs, num_arms = np.shape(successes)
    return rng.integers(num_arms, size=num_envs)


def greedy_choice(successes, failures, t, rng, prior=(1.0, 1.0)) -> np.ndarray:
    """The arm with the best posterior mean (the empirical mean with pseudo-counts `prior`)."""
    return _argmax_random_ties(posterior_means(successes, failures, prior), rng)


def epsilon_greedy_choice(successes, failures, t, rng, epsilon=0.1, prior=(1.0, 1.0)) -> np.ndarray:
    """`greedy_choice` with probability `1 - epsilon`, a uniformly random arm otherwise."""
    greedy = greedy_choice(successes, failures, t, rng, prior)
    explore = rng.random(greedy.shape) < epsilon
    return np.where(explore, random_choice(successes, failures, t, rng), greedy)


def ucb1_choice(successes, failures, t, rng, c=1.0, prior=(1.0, 1.0)) -> np.ndarray:
    """The arm with the largest `mean_i + c * sqrt(2 ln t / n_i)`.

    `mean_i = (s_i + a0) / n_i` and `n_i = s_i + f_i + a0 + b0` count the prior's
    pseudo-observations (RL²: "We initialize the statistics with exactly one success
    and one failure"); an arm with `n_i = 0` (no prior) comes first.
    """
    successes, failures = np.asarray(successes, np.float64), np.asarray(failures, np.float64)
    n = successes + failures + prior[0] + prior[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        score = (successes + prior[0]) / n + c * np.sqrt(2.0 * np.log(t) / n)
    return _argmax_random_ties(np.where(n > 0, score, np.inf), rng)


def thompson_posterior(successes, failures, prior=(1.0, 1.0)):
    """`(alpha, beta)` of each arm's Beta posterior: `(a0 + s, b0 + f)`."""
    return np.asarray(successes) + prior[0], np.asarray(failures) + prior[1]


def thompson_choice(successes, failures, t, rng, prior=(1.0, 1.0)) -> np.ndarray:
    """The arm whose draw from its Beta posterior is the largest."""
    alpha, beta = thompson_posterior(successes, failures, prior)
    return _argmax_random_ties(rng.beta(alpha, beta), rng)


def gittins_choice(successes, failures, t, rng, table) -> np.ndarray:
    """The arm with the largest Gittins index, `table[s, f]` (from `gittins_indices`)."""
    return _argmax_random_ties(table[np.asarray(successes), np.asarray(failures)], rng)


def gittins_policy(discount: float, num_pulls: int, prior=(1.0, 1.0)):
    """`gittins_choice` with the index table of `discount` for trials of `num_pulls` (cached)."""
    table = gittins_indices(float(discount), int(num_pulls), tuple(prior))
    return functools.partial(gittins_choice, table=table)


#: Hyper-parameters per setting `(n pulls, k arms)`, chosen as the RL² paper did ("we
#: maximize the score with a separate grid search for each of the experimental
#: settings"): `tune(n, k)` over `TUNING_GRIDS` on 1,000 tuning tasks of seed 1 (the
#: test tasks of `evaluate_bandit_baselines` use seed 0). At n = 500 the best discount
#: is the largest of the grid (0.998; 0.995 is within 0.5 of it).
TUNED = {
    (10, 5): dict(ucb1_c=0.1, epsilon=0.0, gittins_discount=0.7),
    (10, 10): dict(ucb1_c=0.1, epsilon=0.01, gittins_discount=0.7),
    (10, 50): dict(ucb1_c=0.15, epsilon=0.0, gittins_discount=0.8),
    (100, 5): dict(ucb1_c=0.2, epsilon=0.0, gittins_discount=0.98),
    (100, 10): dict(ucb1_c=0.2, epsilon=0.02, gittins_discount=0.95),
    (100, 50): dict(ucb1_c=0.2, epsilon=0.0, gittins_discount=0.98),
    (500, 5): dict(ucb1_c=0.2, epsilon=0.02, gittins_discount=0.995),
    (500, 10): dict(ucb1_c=0.2, epsilon=0.05, gittins_discount=0.998),
    (500, 50): dict(ucb1_c=0.2, epsilon=0.05, gittins_discount=0.998),
}


def bandit_baselines(num_pulls: int, num_arms: int) -> dict:
    """The baselines of RL²'s Table 1 as policies, with the setting's tuned hyper-parameters.

    Args:
        num_pulls: pulls per trial, `n`.
        num_arms: arms, `k`.

    Returns:
        `{name: choose}` for `Random`, `Gittins`, `TS`, `UCB1`, `EpsGreedy`, `Greedy`
        (the names of `RL2_BANDIT_RESULTS`). Settings outside `TUNED` use the
        hyper-parameters of the nearest tuned trial length.
    """
    tuned_n = min({n for n, _ in TUNED}, key=lambda n: abs(n - num_pulls))
    params = TUNED[(tuned_n, min({k for _, k in TUNED}, key=lambda k: abs(k - num_arms)))]
    return {
        "Random": random_choice,
        "Gittins": gittins_policy(params["gittins_discount"], num_pulls),
        "TS": thompson_choice,
        "UCB1": functools.partial(ucb1_choice, c=params["ucb1_c"]),
        "EpsGreedy": functools.partial(epsilon_greedy_choice, epsilon=params["epsilon"]),
        "Greedy": greedy_choice,
    }


def run_bandit_baseline(choose, means, num_pulls: int, seed=(0, 0), rng_seed: int = 0) -> np.ndarray:
    """Plays a policy for one trial on each task and returns the total rewards.

    Args:
        choose: a policy `choose(successes, failures, t, rng) -> actions`.
        means: `(envs, arms)` arm means (e.g. `BernoulliBandit.sample_tasks` or an
            element of `bandit_tasks`).
        num_pulls: pulls per trial, `n`.
        seed: `(2,)` seed of the environment's reward draws (`BernoulliBandit.reset`).
        rng_seed: seed of the policy's own randomness.

    Returns:
        `(envs,)` float64 total reward of each trial.

    Raises:
        ValueError: if `means` is not `(envs, arms)` or `num_pulls` is not positive.

    Example:

    ```python
    means = BernoulliBandit(10).sample_tasks([7, 0], 1000)
    totals = run_bandit_baseline(bandit_baselines(100, 10)["UCB1"], means, num_pulls=100)
    totals.mean()
    ```
    """
    means = np.asarray(means, np.float32)
    if means.ndim != 2:
        raise ValueError(f"`means` must have shape (envs, arms). Received: means.shape={means.shape}")
    if not isinstance(num_pulls, int) or num_pulls < 1:
        raise ValueError(f"`num_pulls` must be a positive integer. Received: num_pulls={num_pulls!r}")
    num_envs, num_arms = means.shape
    env = BernoulliBandit(num_arms)
    rng = np.random.default_rng(rng_seed)
    _, state = env.reset(means, seed)
    step = tf.function(env.step)
    successes = np.zeros((num_envs, num_arms), np.int64)
    failures = np.zeros((num_envs, num_arms), np.int64)
    total = np.zeros(num_envs)
    rows = np.arange(num_envs)
    for t in range(1, num_pulls + 1):
        action = choose(successes, failures, t, rng)
        _, reward, _, state = step(state, tf.constant(action, tf.int32))
        reward = reward.numpy().astype(np.int64)
        successes[rows, action] += reward
        failures[rows, action] += 1 - reward
        total += reward
    return total


def best_arm_total(means, num_pulls: int) -> np.ndarray:
    """`(envs,)` expected total reward of always pulling the best arm: an upper bound in expectation."""
    return num_pulls * np.max(np.asarray(means, np.float64), axis=-1)


def _gittins_grid(num_pulls):
    if num_pulls <= 20:
        return (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
    if num_pulls <= 200:
        return (0.8, 0.9, 0.95, 0.97, 0.98, 0.99)
    return (0.95, 0.98, 0.99, 0.995, 0.998)


#: The grids `tune` searches (the Gittins discounts depend on the trial length).
TUNING_GRIDS = {
    "ucb1_c": (0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0),
    "epsilon": (0.0, 0.01, 0.02, 0.05, 0.1),
    "gittins_discount": _gittins_grid,
}


def tune(num_pulls: int, num_arms: int, num_tasks: int = 1000, seed: int = 1) -> dict:
    """Grid-searches the hyper-parameters of `TUNED` for one setting on tuning tasks.

    The tuning tasks are `BernoulliBandit(num_arms).sample_tasks([seed, 0], num_tasks)`
    (seed 1; `evaluate_bandit_baselines` tests on seed 0), rewards seeded by `(seed, 1)`.

    Returns:
        `{parameter: (best value, {value: mean total reward})}` over `TUNING_GRIDS`.
    """
    means = BernoulliBandit(num_arms).sample_tasks(tf.constant([seed, 0], tf.int64), num_tasks).numpy()
    policies = {
        "ucb1_c": lambda v: functools.partial(ucb1_choice, c=v),
        "epsilon": lambda v: functools.partial(epsilon_greedy_choice, epsilon=v),
        "gittins_discount": lambda v: gittins_policy(v, num_pulls),
    }
    results = {}
    for name, grid in TUNING_GRIDS.items():
        grid = grid(num_pulls) if callable(grid) else grid
        scores = {v: float(run_bandit_baseline(policies[name](v), means, num_pulls, (seed, 1)).mean()) for v in grid}
        results[name] = (max(scores, key=scores.get), scores)
    return results


def mean_ci95(values) -> tuple[float, float]:
    """`(mean, 1.96 * std / sqrt(n))` of per-task values (as `tfmeta.evaluation`)."""
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(1.96 * values.std() / np.sqrt(values.size))


def evaluate_bandit_baselines(num_pulls: int, num_arms: int, num_tasks: int = 1000, seed: int = 0) -> dict:
    """Every baseline of `bandit_baselines` on the same test tasks.

    Args:
        num_pulls: pulls per trial, `n`.
        num_arms: arms, `k`.
        num_tasks: test tasks (RL²: 1,000).
        seed: the tasks are `BernoulliBandit(k).sample_tasks([seed, 0], num_tasks)`,
            rewards seeded by `(seed, 1)`.

    Returns:
        `{name: (mean, ci95)}` of the total reward per trial, plus `"BestArm"`, the
        expected total of always pulling the best arm.
    """
    means = BernoulliBandit(num_arms).sample_tasks(tf.constant([seed, 0], tf.int64), num_tasks).numpy()
    results = {
        name: mean_ci95(run_bandit_baseline(choose, means, num_pulls, (seed, 1)))
        for name, choose in bandit_baselines(num_pulls, num_arms).items()
    }
    results["BestArm"] = mean_ci95(best_arm_total(means, num_pulls))
    return results
