"""Runs a Gymnasium environment family as an RL² task family (`--env=gym:<id>`).

`GymEnvFamily(id)` gives a registered Gymnasium environment the interface of the
TensorFlow task families (`sample_tasks`, `reset`, `step`, `task_stream`), so
`RL2Trainer` trains on it unchanged. The environments are Python objects: `reset` and
`step` call them through `tf.numpy_function` (inside the compiled rollout loop, one
call per step for the whole batch), so a Gymnasium family runs at Python speed and on
one replica only (no `tf.distribute`), and does not export its environment (the
policy step exports as for any family).

The task convention. A task is an integer seed. At the start of a trial each
environment is reset with `reset(seed=task_seed, options={"new_task": True})`, and
when one of its episodes ends during the trial with `reset(options={"new_task":
False})`. A family samples its task (arm means, goal, dynamics...) from its seeded
`np_random` when `new_task` is True and keeps it otherwise; an environment that
ignores `options` simply restarts (the "task" is then its seed). Observations: a
`Discrete` space (one-hot encoded by the policy) or a `Box` (flattened float vector);
actions: `Discrete`. Every step of a trial is a policy step; `done` is
`terminated or truncated`.

Gymnasium is an optional dependency (`pip install gymnasium`, in the `test` extra).

Example:

```python
env = GymEnvFamily("FrozenLake-v1", is_slippery=False)
env, steps = make_env("gym:FrozenLake-v1", gym_trial_steps=200)
```
"""

import numpy as np
import tensorflow as tf

from tfmeta.data.rl.stream import task_stream


def import_gymnasium():
    """`gymnasium`, or an ImportError saying how to install it."""
    try:
        import gymnasium  # noqa: PLC0415
    except ImportError as error:
        raise ImportError(
            "`--env=gym:<id>` needs Gymnasium: `pip install gymnasium` (or `pip install tfmeta[test]`). "
            f"Received: {error}"
        ) from None
    return gymnasium


class GymEnvFamily:
    """A batch of Gymnasium environments of one id, as an RL² task family.

    Args:
        env_id: a registered Gymnasium id.
        **make_kwargs: passed to `gymnasium.make`.

    Raises:
        ImportError: if Gymnasium is not installed.
        ValueError: if `env_id` is not registered, or its spaces are not supported.
    """

    def __init__(self, env_id: str, **make_kwargs):
        gym = import_gymnasium()
        try:
            gym.spec(env_id)
        except gym.error.Error as error:
            raise ValueError(f"Unknown Gymnasium environment ({error}). Received: env=gym:{env_id}") from None
        self.env_id, self.make_kwargs = env_id, make_kwargs
        probe = gym.make(env_id, **make_kwargs)
        spaces = gym.spaces
        if not isinstance(probe.action_space, spaces.Discrete):
            raise ValueError(f"RL² needs a Discrete action space. Received: {env_id} has {probe.action_space}")
        self.num_actions = int(probe.action_space.n)
        space = probe.observation_space
        if isinstance(space, spaces.Discrete):
            self.discrete_observations, self.num_states, self.observation_size = True, int(space.n), None
        elif isinstance(space, spaces.Box):
            self.discrete_observations, self.num_states = False, None
            self.observation_size = int(np.prod(space.shape))
        else:
            raise ValueError(f"Observations must be Discrete or Box. Received: {env_id} has {space}")
        probe.close()
        self._gym = gym
        self._envs = []

    # ------------------------------------------------------------ tasks

    def sample_tasks(self, seed, num_tasks: int) -> tf.Tensor:
        """`(num_tasks,)` int64 task seeds in `[0, 2**31)`."""
        return tf.random.stateless_uniform([num_tasks], seed=seed, minval=0, maxval=2**31 - 1, dtype=tf.int64)

    def task_stream(self, meta_batch_size: int, seed: int = 0, start_step: int = 0, input_context=None):
        return task_stream(self.sample_tasks, meta_batch_size, seed, start_step, input_context)

    # ------------------------------------------------------------ the Python side

    def _obs(self, obs):
        if self.discrete_observations:
            return np.int32(obs)
        return np.asarray(obs, np.float32).reshape(-1)

    def _stack(self, observations):
        if self.discrete_observations:
            return np.asarray(observations, np.int32)
        return np.stack(observations).astype(np.float32)

    def _reset(self, task_seeds):
        while len(self._envs) < len(task_seeds):
            self._envs.append(self._gym.make(self.env_id, **self.make_kwargs))
        observations = [self._obs(env.reset(seed=int(s), options={"new_task": True})[0])
                        for env, s in zip(self._envs, task_seeds)]
        return self._stack(observations)

    def _step(self, actions):
        observations, rewards, dones = [], [], []
        for env, action in zip(self._envs, actions):
            obs, reward, terminated, truncated, _ = env.step(int(action))
            done = bool(terminated or truncated)
            if done:
                obs, _ = env.reset(options={"new_task": False})
            observations.append(self._obs(obs))
            rewards.append(reward)
            dones.append(done)
        return self._stack(observations), np.asarray(rewards, np.float32), np.asarray(dones, bool)

    # ------------------------------------------------------------ the TF interface

    def _obs_shape(self, batch):
        return [batch] if self.discrete_observations else [batch, self.observation_size]

    def reset(self, params, seed):
        """Starts a trial on each task (`params`: `(B,)` task seeds; `seed` unused: the task seed seeds it all).

        Returns:
            `(obs, state)`; `state` is the `(B,)` task seeds (the environments live in Python).
        """
        params = tf.convert_to_tensor(params, tf.int64)
        obs_dtype = tf.int32 if self.discrete_observations else tf.float32
        obs = tf.numpy_function(self._reset, [params], obs_dtype, stateful=True, name="gym_reset")
        obs.set_shape(self._obs_shape(params.shape[0]))
        return obs, params

    def step(self, state, action):
        """One step of every environment; `(obs, reward, done, state)`."""
        obs_dtype = tf.int32 if self.discrete_observations else tf.float32
        obs, reward, done = tf.numpy_function(self._step, [tf.cast(action, tf.int32)],
                                              (obs_dtype, tf.float32, tf.bool), stateful=True, name="gym_step")
        batch = state.shape[0]
        obs.set_shape(self._obs_shape(batch))
        reward.set_shape([batch])
        done.set_shape([batch])
        return obs, reward, done, state
