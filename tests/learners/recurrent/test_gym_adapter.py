"""RL²'s Gymnasium adapter on tiny environments registered here (no download): the task kept for a trial's
episodes and resampled per trial, done flags, Discrete and Box observations, a compiled training step, errors."""

import sys

import numpy as np
import pytest
import tensorflow as tf

gym = pytest.importorskip("gymnasium", reason="gymnasium (the test extra) is needed for the Gymnasium adapter")

from tfmeta.learners.recurrent.gym_adapter import GymEnvFamily  # noqa: E402
from tfmeta.learners.recurrent.rl2 import RL2Trainer, build_rl2, make_env  # noqa: E402

EPISODE = 2


class TinyArms(gym.Env):
    """A 3-armed family: the good arm is drawn on `new_task`, kept otherwise; reward 1 for it; 2-step episodes."""

    def __init__(self, box=False):
        self.action_space = gym.spaces.Discrete(3)
        self.box = box
        self.observation_space = (gym.spaces.Box(0.0, 1.0, (2,), np.float32) if box
                                  else gym.spaces.Discrete(EPISODE))
        self.good, self.t = 0, 0

    def _obs(self):
        return np.array([self.t / EPISODE, 1.0], np.float32) if self.box else self.t

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        if (options or {}).get("new_task", True):
            self.good = int(self.np_random.integers(3))
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        reward = float(action == self.good)
        self.t += 1
        return self._obs(), reward, self.t >= EPISODE, False, {}


for _id, _kwargs in (("TfmetaTinyArms-v0", {}), ("TfmetaTinyArmsBox-v0", {"box": True})):
    if _id not in gym.registry:
        gym.register(_id, entry_point=TinyArms, kwargs=_kwargs)


@pytest.mark.parametrize("env_id", ["TfmetaTinyArms-v0", "TfmetaTinyArmsBox-v0"])
def test_rollout_keeps_the_task_within_a_trial_and_flags_episode_ends(env_id):
    env, steps = make_env(f"gym:{env_id}", gym_trial_steps=6)
    assert env.num_actions == 3 and steps == 6
    assert (env.num_states, env.discrete_observations) == ((2, True) if "Box" not in env_id else (None, False))
    learner = build_rl2(env=env, units=8)
    params = env.sample_tasks(tf.constant([0, 0], tf.int64), 16)
    rollout = tf.function(lambda: learner.rollout(env, params, [0, 1], [0, 2], steps))()
    actions, rewards = rollout.actions.numpy(), rollout.rewards.numpy()
    # Rewarded actions: only ever one arm per trial (the task is kept across its 3 episodes) ...
    good = [set(actions[rewards[:, b] == 1, b]) for b in range(16)]
    assert all(len(g) <= 1 for g in good)
    # ... and the arms differ between trials (tasks resampled per trial).
    assert len(set().union(*good)) >= 2
    np.testing.assert_array_equal(rollout.inputs.numpy()[1:, :, -1],  # done of the previous step
                                  np.repeat((np.arange(1, 6) % EPISODE == 0)[:, None], 16, 1))
    # The same task seeds replay the same tasks.
    again = tf.function(lambda: learner.rollout(env, params, [0, 1], [0, 2], steps))()
    np.testing.assert_array_equal(again.rewards.numpy(), rewards)


def test_a_compiled_training_step_on_a_gymnasium_family():
    env, steps = make_env("gym:TfmetaTinyArms-v0", gym_trial_steps=4)
    trainer = RL2Trainer(build_rl2(env=env, units=8, epochs=1), env, steps, meta_batch_size=8)
    before = [v.numpy().copy() for v in trainer.learner.meta_variables]
    metrics = trainer.train_step(next(iter(trainer.tasks(0))))
    assert np.isfinite(metrics["loss"]) and 0 <= metrics["reward_per_trial"] <= steps
    assert any(not np.array_equal(v.numpy(), b) for v, b in zip(trainer.learner.meta_variables, before))


def test_unknown_ids_and_a_missing_gymnasium_are_clear_errors(monkeypatch):
    with pytest.raises(ValueError, match="Unknown Gymnasium environment.*Received: env=gym:NoSuchEnv-v0"):
        GymEnvFamily("NoSuchEnv-v0")
    monkeypatch.setitem(sys.modules, "gymnasium", None)
    with pytest.raises(ImportError, match="pip install gymnasium"):
        make_env("gym:TfmetaTinyArms-v0")
