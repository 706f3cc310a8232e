"""Bernoulli multi-armed bandit tasks (RL², Duan et al., 2016, Section 3.1), vectorised in TensorFlow.

A task is `k` arms with success probabilities `p_i ~ U[0, 1]`, drawn independently
("We randomly generated bandit problems by sampling each parameter p_i from the
uniform distribution on [0, 1]"); pulling arm `i` gives reward 1 with probability
`p_i`, else 0. A trial is `n` pulls of the same task; as in RL², each pull is one
episode (horizon 1, `done` after every step) and the objective is the total reward of
the trial. The paper's settings are `k in {5, 10, 50}` and `n in {10, 100, 500}`.

The environment is a set of pure functions of tensors over a batch of tasks, usable
eagerly, in a `tf.function` and in a `tf.while_loop`:

```python
env = BernoulliBandit(num_arms=10)
means = env.sample_tasks(seed=[0, 1], num_tasks=1000)     # (1000, 10)
obs, state = env.reset(means, seed=[0, 2])
obs, reward, done, state = env.step(state, action)        # action: (1000,) int32
```
"""

from typing import NamedTuple

import tensorflow as tf

from tfmeta.data.rl.stream import task_stream


class BanditState(NamedTuple):
    """The state of a batch of bandit environments.

    Attributes:
        means: `(tasks, arms)` float32 success probabilities (the task parameters).
        pulls: `(tasks,)` int32 pulls so far in the trial.
        seed: `(2,)` int64 seed of the reward draws.
        counter: `()` int64 step calls so far (folded into `seed` for each draw).
    """

    means: tf.Tensor
    pulls: tf.Tensor
    seed: tf.Tensor
    counter: tf.Tensor


def _check_positive(**values):
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")


class BernoulliBandit:
    """A batch of `k`-armed Bernoulli bandits: task sampler, `reset` and `step`.

    Observations are the constant state index 0 (`num_states = 1`), so that bandits
    and tabular MDPs share one interface; every pull ends an episode (`horizon = 1`).

    Args:
        num_arms: arms per task, `k`.

    Raises:
        ValueError: if `num_arms` is not a positive integer.

    Example:

    ```python
    env = BernoulliBandit(5)
    obs, state = env.reset(env.sample_tasks([0, 0], 3), seed=[0, 1])
    obs, reward, done, state = env.step(state, tf.constant([0, 1, 2]))
    ```
    """

    num_states = 1
    horizon = 1

    def __init__(self, num_arms: int):
        _check_positive(num_arms=num_arms)
        self.num_arms = num_arms

    @property
    def num_actions(self) -> int:
        return self.num_arms

    def sample_tasks(self, seed, num_tasks: int) -> tf.Tensor:
        """`(num_tasks, arms)` float32 arm means `~ U[0, 1)`; row `t` does not depend on `num_tasks`.

        Args:
            seed: `(2,)` integer seed of a stateless draw.
            num_tasks: tasks to draw.
        """
        return tf.random.stateless_uniform([num_tasks, self.num_arms], seed=seed, dtype=tf.float32)

    def reset(self, means, seed):
        """Starts a trial on each task.

        Args:
            means: `(tasks, arms)` arm means.
            seed: `(2,)` integer seed of the trial's reward draws.

        Returns:
            `(obs, state)`: `obs` `(tasks,)` int32 zeros and the `BanditState`.
        """
        means = tf.convert_to_tensor(means, tf.float32)
        num_tasks = tf.shape(means)[0]
        state = BanditState(
            means=means,
            pulls=tf.zeros([num_tasks], tf.int32),
            seed=tf.cast(tf.convert_to_tensor(seed), tf.int64),
            counter=tf.constant(0, tf.int64),
        )
        return tf.zeros([num_tasks], tf.int32), state

    def step(self, state: BanditState, action):
        """Pulls one arm per task.

        Args:
            state: a `BanditState`.
            action: `(tasks,)` integer arm indices in `[0, arms)`.

        Returns:
            `(obs, reward, done, new_state)`: `obs` `(tasks,)` int32 zeros, `reward`
            `(tasks,)` float32 in {0, 1} (1 with probability `means[t, action[t]]`),
            `done` `(tasks,)` bool, all True (each pull is an episode).
        """
        action = tf.cast(action, tf.int32)
        p = tf.gather(state.means, action, batch_dims=1)  # (tasks,)
        key = tf.random.experimental.stateless_fold_in(state.seed, state.counter)
        u = tf.random.stateless_uniform(tf.shape(p), seed=key, dtype=tf.float32)
        reward = tf.cast(u < p, tf.float32)
        new_state = state._replace(pulls=state.pulls + 1, counter=state.counter + 1)
        return tf.zeros_like(action), reward, tf.ones_like(action, tf.bool), new_state


def bandit_tasks(
    num_arms: int,
    meta_batch_size: int,
    seed: int = 0,
    start_step: int = 0,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """An infinite stream of meta-batches of Bernoulli bandit tasks.

    Args:
        num_arms: arms per task, `k`.
        meta_batch_size: tasks per step, `B` (global across replicas).
        seed: integer seed; the same seed gives the same stream.
        start_step: step number of the first element (to resume a run).
        input_context: a `tf.distribute.InputContext`, or None.

    Returns:
        A `tf.data.Dataset` of `RLTasks(params, seed)`: `params` the `(B, k)` float32
        arm means, `seed` the `(2,)` int64 seed of the trial's rewards
        (`BernoulliBandit(k).reset(params, seed)`).

    Raises:
        ValueError: if an argument is not a positive integer (`start_step`: negative).

    Example:

    ```python
    tasks = bandit_tasks(num_arms=10, meta_batch_size=250, seed=0)
    means, rollout_seed = next(iter(tasks))      # (250, 10), (2,)
    ```
    """
    _check_positive(num_arms=num_arms, meta_batch_size=meta_batch_size)
    env = BernoulliBandit(num_arms)
    return task_stream(env.sample_tasks, meta_batch_size, seed, start_step, input_context)
