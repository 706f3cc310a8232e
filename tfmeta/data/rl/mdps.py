"""Random tabular MDP tasks (RL², Duan et al., 2016, Section 3.2), vectorised in TensorFlow.

The paper's distribution over MDPs: "|S| = 10, |A| = 5. The rewards follow a Gaussian
distribution with unit variance, and the mean parameters are sampled independently
from Normal(1,1). The transitions are sampled from a flat Dirichlet distribution. [...]
We set the horizon for each episode to be T = 10, and an episode always starts on the
first state." A trial is `n` episodes (`n in {10, 25, 50, 75, 100}` in its Table 2) on
the same MDP; the objective is the trial's total reward.

So per task: `P(. | s, a) ~ Dirichlet(1, ..., 1)` for every `(s, a)`, reward means
`R(s, a) ~ N(1, 1)`, and each step's reward `~ N(R(s, a), 1)`.

The environment is a set of pure functions of tensors over a batch of tasks, usable
eagerly, in a `tf.function` and in a `tf.while_loop`:

```python
env = TabularMDP()
params = env.sample_tasks(seed=[0, 1], num_tasks=1000)    # MDPParams
obs, state = env.reset(params, seed=[0, 2])               # obs: (1000,) int32, all 0
obs, reward, done, state = env.step(state, action)        # action: (1000,) int32
```
"""

from typing import NamedTuple

import tensorflow as tf

from tfmeta.data.rl.stream import task_stream


class MDPParams(NamedTuple):
    """The parameters of a batch of tabular MDPs.

    Attributes:
        transitions: `(tasks, S, A, S)` float32, `transitions[t, s, a, s']` =
            `P(s' | s, a)`; each row sums to 1.
        reward_means: `(tasks, S, A)` float32 mean reward of `(s, a)`.
    """

    transitions: tf.Tensor
    reward_means: tf.Tensor


class MDPState(NamedTuple):
    """The state of a batch of tabular MDP environments.

    Attributes:
        params: the `MDPParams` of the batch.
        state: `(tasks,)` int32 current state.
        time: `(tasks,)` int32 steps taken in the current episode.
        seed: `(2,)` int64 seed of the trial's draws.
        counter: `()` int64 step calls so far (folded into `seed` for each draw).
    """

    params: MDPParams
    state: tf.Tensor
    time: tf.Tensor
    seed: tf.Tensor
    counter: tf.Tensor


class TabularMDP:
    """A batch of random tabular MDPs: task sampler, `reset` and `step`.

    Args:
        num_states: `|S|` (10 in RL²).
        num_actions: `|A|` (5 in RL²).
        horizon: steps per episode, `T` (10 in RL²).
        dirichlet_concentration: the symmetric Dirichlet's parameter (1: flat).
        reward_prior: `(mean, std)` of the normal prior of the reward means (`(1, 1)`).
        reward_std: standard deviation of the rewards around their mean (1).

    Raises:
        ValueError: if a size is not a positive integer or a scale is not positive.

    Example:

    ```python
    env = TabularMDP()
    obs, state = env.reset(env.sample_tasks([0, 0], 4), seed=[0, 1])
    obs, reward, done, state = env.step(state, tf.constant([0, 1, 2, 3]))
    ```
    """

    def __init__(
        self,
        num_states: int = 10,
        num_actions: int = 5,
        horizon: int = 10,
        dirichlet_concentration: float = 1.0,
        reward_prior: tuple[float, float] = (1.0, 1.0),
        reward_std: float = 1.0,
    ):
        for name, value in dict(num_states=num_states, num_actions=num_actions, horizon=horizon).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
        if not dirichlet_concentration > 0:
            raise ValueError(
                "`dirichlet_concentration` must be positive. "
                f"Received: dirichlet_concentration={dirichlet_concentration!r}"
            )
        if len(reward_prior) != 2 or not reward_prior[1] >= 0:
            raise ValueError(f"`reward_prior` must be a pair (mean, std >= 0). Received: reward_prior={reward_prior!r}")
        if not reward_std >= 0:
            raise ValueError(f"`reward_std` must be non-negative. Received: reward_std={reward_std!r}")
        self.num_states = num_states
        self.num_actions = num_actions
        self.horizon = horizon
        self.dirichlet_concentration = float(dirichlet_concentration)
        self.reward_prior = (float(reward_prior[0]), float(reward_prior[1]))
        self.reward_std = float(reward_std)

    def sample_tasks(self, seed, num_tasks: int) -> MDPParams:
        """Draws `num_tasks` MDPs; row `t` does not depend on `num_tasks`.

        Args:
            seed: `(2,)` integer seed of a stateless draw.
            num_tasks: tasks to draw.

        Returns:
            `MDPParams` with `(num_tasks, S, A, S)` transitions and `(num_tasks, S, A)`
            reward means.
        """
        keys = tf.random.experimental.stateless_split(tf.cast(tf.convert_to_tensor(seed), tf.int64), 2)
        s, a = self.num_states, self.num_actions
        # Dirichlet(c, ..., c) = independent Gamma(c) draws, normalised.
        gamma = tf.random.stateless_gamma([num_tasks, s, a, s], seed=keys[0], alpha=self.dirichlet_concentration)
        transitions = gamma / tf.reduce_sum(gamma, axis=-1, keepdims=True)  # (tasks, S, A, S)
        normal = tf.random.stateless_normal([num_tasks, s, a], seed=keys[1])
        reward_means = self.reward_prior[0] + self.reward_prior[1] * normal  # (tasks, S, A)
        return MDPParams(transitions, reward_means)

    def reset(self, params: MDPParams, seed):
        """Starts a trial on each task, in state 0.

        Args:
            params: the tasks' `MDPParams`.
            seed: `(2,)` integer seed of the trial's draws.

        Returns:
            `(obs, state)`: `obs` `(tasks,)` int32 zeros (the first state) and the
            `MDPState`.
        """
        params = MDPParams(*(tf.convert_to_tensor(t, tf.float32) for t in params))
        num_tasks = tf.shape(params.reward_means)[0]
        zeros = tf.zeros([num_tasks], tf.int32)
        state = MDPState(params, zeros, zeros, tf.cast(tf.convert_to_tensor(seed), tf.int64), tf.constant(0, tf.int64))
        return zeros, state

    def step(self, state: MDPState, action):
        """Takes one action per task.

        Args:
            state: an `MDPState`.
            action: `(tasks,)` integer actions in `[0, A)`.

        Returns:
            `(obs, reward, done, new_state)`: `reward` `(tasks,)` float32
            `~ N(R(s, a), reward_std**2)`; `done` `(tasks,)` bool, True when the step
            ends an episode (every `horizon` steps); `obs` `(tasks,)` int32 the state
            the next action is taken in: `s' ~ P(. | s, a)`, or the first state 0 when
            the episode ended.
        """
        action = tf.cast(action, tf.int32)
        params = state.params
        rows = tf.stack([tf.range(tf.shape(action)[0]), state.state, action], axis=-1)  # (tasks, 3)
        p = tf.gather_nd(params.transitions, rows)  # (tasks, S)
        mean = tf.gather_nd(params.reward_means, rows)  # (tasks,)
        key = tf.random.experimental.stateless_fold_in(state.seed, state.counter)
        keys = tf.random.experimental.stateless_split(tf.cast(key, tf.int64), 2)
        u = tf.random.stateless_uniform(tf.shape(mean), seed=keys[0], dtype=tf.float32)
        cdf = tf.cumsum(p, axis=-1)
        cdf = cdf / cdf[:, -1:]  # exact 1 at the end despite rounding
        next_state = tf.reduce_sum(tf.cast(cdf < u[:, None], tf.int32), axis=-1)  # first s' with cdf >= u
        next_state = tf.minimum(next_state, self.num_states - 1)
        reward = mean + self.reward_std * tf.random.stateless_normal(tf.shape(mean), seed=keys[1])
        time = state.time + 1
        done = time >= self.horizon
        obs = tf.where(done, 0, next_state)
        new_state = state._replace(state=obs, time=tf.where(done, 0, time), counter=state.counter + 1)
        return obs, reward, done, new_state


def mdp_tasks(
    meta_batch_size: int,
    seed: int = 0,
    start_step: int = 0,
    env: TabularMDP | None = None,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """An infinite stream of meta-batches of random tabular MDPs.

    Args:
        meta_batch_size: tasks per step, `B` (global across replicas).
        seed: integer seed; the same seed gives the same stream.
        start_step: step number of the first element (to resume a run).
        env: the `TabularMDP` family (default: RL²'s, `TabularMDP()`).
        input_context: a `tf.distribute.InputContext`, or None.

    Returns:
        A `tf.data.Dataset` of `RLTasks(params, seed)`: `params` the `MDPParams` of the
        `B` tasks, `seed` the `(2,)` int64 seed of the trial (`env.reset(params, seed)`).

    Raises:
        ValueError: if `meta_batch_size` is not a positive integer or `start_step` is
            negative.

    Example:

    ```python
    tasks = mdp_tasks(meta_batch_size=100, seed=0)
    params, rollout_seed = next(iter(tasks))
    params.transitions.shape        # (100, 10, 5, 10)
    ```
    """
    env = env or TabularMDP()
    return task_stream(env.sample_tasks, meta_batch_size, seed, start_step, input_context)
