"""RL²: PPO's clipped objective and GAE by hand, the policy's inputs and recurrent state, learning that needs
memory, exact resume, bad inputs. (MirroredStrategy: test_rl2_mirrored.py; export: tests/export/test_rl2_export.py;
Gymnasium: test_gym_adapter.py. The environments and baselines: tests/data/rl/.)"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfmeta import learners
from tfmeta.data.rl import BernoulliBandit, TabularMDP
from tfmeta.learners import registry
from tfmeta.learners.recurrent import rl2
from tfmeta.learners.recurrent.rl2 import (
    RL2Config,
    RL2Trainer,
    Rollout,
    build_rl2,
    encode_inputs,
    gae,
    make_env,
    ppo_clipped_objective,
)

ROOT = pathlib.Path(__file__).resolve().parents[3]

# ------------------------------------------------------------------ PPO and GAE by hand


def test_ppo_clipped_objective_on_a_hand_computed_case():
    # ratio r = exp(logp - old): e^0.5 = 1.6487, e^-0.5 = 0.6065; clip 0.2 -> [0.8, 1.2].
    logp = tf.constant([0.5, -0.5, 0.5, -0.5, 0.1])
    old = tf.zeros(5)
    adv = tf.constant([1.0, 1.0, -1.0, -1.0, 2.0])
    got = ppo_clipped_objective(logp, old, adv, clip=0.2).numpy()
    expected = [
        1.2,  # r > 1 + eps, A > 0: clipped, min(1.6487, 1.2)
        np.exp(-0.5),  # r < 1 - eps, A > 0: the unclipped (smaller) term, 0.6065
        -np.exp(0.5),  # r > 1 + eps, A < 0: unclipped, min(-1.6487, -1.2)
        -0.8,  # r < 1 - eps, A < 0: clipped, min(-0.6065, -0.8)
        2.0 * np.exp(0.1),  # inside the range: r A
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # The clipped terms carry no gradient; the others d(rA)/dlogp = rA.
    with tf.GradientTape() as tape:
        tape.watch(logp)
        objective = tf.reduce_sum(ppo_clipped_objective(logp, old, adv, clip=0.2))
    np.testing.assert_allclose(tape.gradient(objective, logp).numpy(),
                               [0.0, np.exp(-0.5), -np.exp(0.5), 0.0, 2.0 * np.exp(0.1)], rtol=1e-6)


def test_gae_on_a_hand_computed_case():
    # T = 3, one trial: r = [1, 0, 2], V = [0.5, 1, 0], gamma 0.9, lambda 0.5, V_3 = 0 (the trial ends).
    # deltas: 1 + 0.9 * 1 - 0.5 = 1.4; 0 + 0 - 1 = -1; 2 + 0 - 0 = 2.
    # A_2 = 2; A_1 = -1 + 0.45 * 2 = -0.1; A_0 = 1.4 + 0.45 * -0.1 = 1.355.
    rewards = tf.constant([[1.0], [0.0], [2.0]])
    values = tf.constant([[0.5], [1.0], [0.0]])
    advantages, returns = gae(rewards, values, gamma=0.9, lam=0.5)
    np.testing.assert_allclose(advantages.numpy()[:, 0], [1.355, -0.1, 2.0], rtol=1e-6)
    np.testing.assert_allclose(returns.numpy()[:, 0], [1.855, 0.9, 2.0], rtol=1e-6)
    # lambda = 1: the discounted return minus the value (Monte Carlo), per column independently.
    rewards = tf.constant([[1.0, 0.0], [0.0, 3.0], [2.0, 1.0]])
    values = tf.constant([[0.3, 0.1], [0.2, 0.4], [0.5, 0.6]])
    advantages, returns = gae(rewards, values, gamma=0.9, lam=1.0)
    np.testing.assert_allclose(returns.numpy(), [[1 + 0.81 * 2, 0.9 * 3 + 0.81], [0.9 * 2, 3 + 0.9], [2, 1]],
                               rtol=1e-6)


# ------------------------------------------------------------------ the policy's inputs and state


def test_input_encoding_by_hand():
    x = encode_inputs(tf.constant([2, 0]), tf.constant([-1, 1]), tf.constant([0.0, 0.5]), tf.constant([0.0, 1.0]),
                      num_states=3, num_actions=2).numpy()
    np.testing.assert_array_equal(x, [[0, 0, 1, 0, 0, 0, 0], [1, 0, 0, 0, 1, 0.5, 1]])


def _mdp_rollout(units=8, tasks=3, episodes=2):
    env = TabularMDP(horizon=3)
    learner = build_rl2(env=env, units=units)
    params = env.sample_tasks(tf.constant([5, 0], tf.int64), tasks)
    rollout = tf.function(lambda: learner.rollout(env, params, tf.constant([5, 1], tf.int64),
                                                  tf.constant([5, 2], tf.int64), episodes * env.horizon))()
    return env, learner, params, rollout


def test_rollout_feeds_the_previous_action_reward_and_done_and_the_current_state():
    env, learner, params, rollout = _mdp_rollout()
    s, a = env.num_states, env.num_actions
    x = rollout.inputs.numpy()  # (T, B, S + A + 2)
    actions, rewards = rollout.actions.numpy(), rollout.rewards.numpy()
    np.testing.assert_array_equal(x[0], np.eye(s + a + 2)[[0] * 3] * 1.0)  # state 0, no action, reward 0, done 0
    np.testing.assert_array_equal(x[1:, :, s:s + a], np.eye(a)[actions[:-1]])  # previous action
    np.testing.assert_allclose(x[1:, :, s + a], rewards[:-1])  # previous reward
    done = (np.arange(1, 6) % env.horizon == 0).astype(np.float32)  # the previous step ended an episode
    np.testing.assert_array_equal(x[1:, :, -1], np.repeat(done[:, None], 3, 1))
    # The observation is the environment's state: replay the same trial with the recorded actions.
    _, state = env.reset(params, tf.constant([5, 1], tf.int64))
    for t in range(5):
        obs, _, _, state = env.step(state, tf.constant(actions[t]))
        np.testing.assert_array_equal(x[t + 1, :, :s], np.eye(s)[obs.numpy()])
    assert x[3, :, :s].argmax(-1).tolist() == [0, 0, 0]  # a new episode starts in state 0


def test_hidden_state_is_carried_across_episodes_and_reset_across_trials():
    env, learner, params, rollout = _mdp_rollout()
    # The acting policy's log-probabilities equal a re-run over the whole trial from ONE zero state
    # (the state goes on through the episode boundary at t = 3) ...
    logits, values = learner.unroll(rollout.inputs)
    logp = -tf.nn.sparse_softmax_cross_entropy_with_logits(labels=rollout.actions, logits=logits)
    np.testing.assert_allclose(logp.numpy(), rollout.log_probs.numpy(), atol=1e-5)
    np.testing.assert_allclose(values.numpy(), rollout.values.numpy(), atol=1e-5)
    # ... and differ from a state reset at the episode boundary (so the check above can fail).
    restarted, _ = learner.unroll(rollout.inputs[3:])
    assert np.abs(restarted.numpy()[0] - logits.numpy()[3]).max() > 1e-3
    # Every trial starts from zeros: the first step is the zero-state step, also on a second call.
    first, _, _ = learner.policy_step(rollout.inputs[0], learner.initial_state(3))
    again = tf.function(lambda: learner.rollout(env, params, tf.constant([6, 1], tf.int64),
                                                tf.constant([6, 2], tf.int64), 6))()
    for r in (rollout, again):
        logp0 = -tf.nn.sparse_softmax_cross_entropy_with_logits(labels=r.actions[0], logits=first)
        np.testing.assert_allclose(logp0.numpy(), r.log_probs.numpy()[0], atol=1e-6)


# ------------------------------------------------------------------ learning that needs memory


class CueThenChoose:
    """A task family only a policy with memory solves (a test environment with the families' interface).

    A task is a good arm `g` in {0, 1}. A trial is 3 one-step episodes (`done` after each).
    Step 0: the observation is the cue `1 + g`, any action, reward 0. Step 1: the
    observation is 0; action 1 costs -1, action 0 is free. Step 2: observation 0; reward 1
    for action `g`, else 0. With memory (the GRU state, carried across the episodes): 1 per
    trial. Without (any policy of the current input only, which holds the previous action
    and reward): at step 2 the cue is gone, and the previous action can carry `g = 1` only
    by paying 1 at step 1; with `q` the chance of action 1 at step 1 given the cue `g = 1`
    and `x` the chance of action 1 at step 2 after action 0, the expected total is
    `0.5 * ((1 - q) * x + (1 - x)) <= 0.5`.
    """

    num_states, num_actions, horizon = 3, 2, 1
    WAIT = 1  # waiting steps between the cue and the choice

    def sample_tasks(self, seed, num_tasks):
        return tf.random.stateless_uniform([num_tasks], seed=seed, maxval=2, dtype=tf.int32)

    def reset(self, params, seed):
        params = tf.convert_to_tensor(params, tf.int32)
        return 1 + params, (params, tf.zeros_like(params))

    def step(self, state, action):
        good, t = state
        action = tf.cast(action, tf.int32)
        reward = tf.where(t == self.WAIT + 1, tf.cast(action == good, tf.float32),
                          tf.where((t >= 1) & (action == 1), -1.0, 0.0))
        return tf.zeros_like(good), reward, tf.ones_like(good, tf.bool), (good, t + 1)

    def task_stream(self, meta_batch_size, seed, start_step=0, input_context=None):
        from tfmeta.data.rl.stream import task_stream

        return task_stream(self.sample_tasks, meta_batch_size, seed, start_step, input_context)


class _Memoryless(rl2.RL2):
    """A broken RL²: the hidden state is zeroed before every step (it ignores its recurrent state)."""

    def policy_step(self, x, h):
        return super().policy_step(x, tf.zeros_like(h))


def _train_cue(learner_class, iterations=30):
    tf.keras.utils.set_random_seed(0)
    env = CueThenChoose()
    model = rl2.GRUPolicy(3 + 2 + 2, 2, units=16)
    learner = learner_class(model, 3, 2, gamma=1.0, lam=0.95, entropy_coef=0.01, epochs=4)
    trainer = RL2Trainer(learner, env, env.WAIT + 2, meta_batch_size=128, learning_rate=1e-2, seed=3)
    trainer.train(iterations, log=lambda _: None)
    params, seed = rl2.fixed_tasks(env, 0, 1000)
    return trainer.evaluate(params, seed).mean()


def test_rl2_learns_a_task_that_needs_its_recurrent_state():
    # Measured: 0.998 per trial after 30 steps; the memoryless variant cannot exceed 0.5 in expectation.
    assert _train_cue(rl2.RL2) > 0.9


@pytest.mark.slow
def test_a_memoryless_policy_cannot_learn_it():
    # Measured: 0.508 after 80 steps (the bound is 0.5; 1,000 test trials: CI ~0.03).
    assert _train_cue(_Memoryless, iterations=80) < 0.6


# ------------------------------------------------------------------ resume and the workdir


def _tiny_trainer(workdir, config=None, **kwargs):
    tf.keras.utils.set_random_seed(1)
    env = BernoulliBandit(3)
    learner = build_rl2(env=env, units=8, epochs=2, minibatches=2)
    return RL2Trainer(learner, env, 5, meta_batch_size=8, learning_rate=1e-2, seed=7, workdir=workdir,
                      config=config, **kwargs)


def test_resume_equals_an_uninterrupted_run_and_other_runs_are_refused(tmp_path):
    config = RL2Config(units=8, num_arms=3, num_pulls=5, meta_batch_size=8)
    straight = _tiny_trainer(tmp_path / "a", config)
    straight.train(4, eval_every=2, log=lambda _: None)
    first = _tiny_trainer(tmp_path / "b", config)
    first.train(2, eval_every=2, log=lambda _: None)
    resumed = _tiny_trainer(tmp_path / "b", config)  # a new process would build it the same way
    assert int(resumed.step.numpy()) == 2
    # The restored state is the checkpoint's, not the fresh initialisation's.
    for a, b in zip(resumed.learner.variables, first.learner.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    resumed.train(4, eval_every=2, log=lambda _: None)
    for a, b in zip(resumed.learner.variables, straight.learner.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-6)
    assert any(not np.allclose(a.numpy(), b.numpy()) for a, b in zip(first.learner.variables,
                                                                      straight.learner.variables))
    assert json.loads((tmp_path / "b" / "config.json").read_text())["units"] == 8
    # A workdir of another configuration, or with checkpoints and resume off, is refused.
    with pytest.raises(ValueError, match=r"different configuration.*units=16 \(workdir has 8\)"):
        _tiny_trainer(tmp_path / "b", RL2Config(units=16, num_arms=3, num_pulls=5, meta_batch_size=8))
    with pytest.raises(FileExistsError, match="already holds checkpoints"):
        _tiny_trainer(tmp_path / "b", config, resume=False)


def test_sigterm_saves_at_the_current_step_and_a_damaged_checkpoint_falls_back(tmp_path):
    """The faults of tests/training/test_faults.py, through RL²'s own trainer."""
    import os
    import signal

    config = RL2Config(units=8, num_arms=3, num_pulls=5, meta_batch_size=8)
    straight = _tiny_trainer(tmp_path / "a", config)
    straight.train(6, eval_every=2, log=lambda _: None)
    run = _tiny_trainer(tmp_path / "b", config)
    compiled, calls = run.train_step, []

    def step_then_sigterm(tasks):  # SIGTERM arrives during the 3rd step
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return compiled(tasks)

    run.train_step = step_then_sigterm
    run.train(6, eval_every=2, log=lambda _: None)
    assert run.preempted and int(run.step.numpy()) == 3
    assert tf.train.latest_checkpoint(str(tmp_path / "b" / "checkpoints")).endswith("ckpt-3")
    # The newest checkpoint damaged (a truncated data file): the next run falls back to step 2 and finishes
    # on the same trajectory.
    data = next((tmp_path / "b" / "checkpoints").glob("ckpt-3.data-*"))
    data.write_bytes(data.read_bytes()[:10])
    resumed = _tiny_trainer(tmp_path / "b", config)
    assert int(resumed.step.numpy()) == 2
    assert list((tmp_path / "b" / "checkpoints" / "damaged").glob("ckpt-3.*"))
    resumed.train(6, eval_every=2, log=lambda _: None)
    assert not resumed.preempted
    for a, b in zip(resumed.learner.variables, straight.learner.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-6)




# ------------------------------------------------------------------ the contract and bad inputs


def test_registry_and_the_parts_of_the_contract_that_do_not_fit():
    assert learners.entry("rl2").family == "recurrent"
    assert learners.entry("rl2").training_data == registry.ENVIRONMENTS
    learner = learners.build("rl2", None, env=BernoulliBandit(4), units=16)
    assert [v.shape for v in learner.meta_variables] == [v.shape for v in learner.model.trainable_variables]
    x = learner.encode(tf.zeros([2], tf.int32), tf.constant([-1, 2]), tf.zeros([2]), tf.zeros([2]))
    h = tf.random.normal([2, 16])
    np.testing.assert_allclose(learner.predict(h, x).numpy(), learner.policy_step(x, h)[0].numpy())
    with pytest.raises(NotImplementedError, match="adapts by acting"):
        learner.adapt(tf.zeros([1, 1]), tf.zeros([1], tf.int32))
    with pytest.raises(NotImplementedError, match="PPO"):
        learner.task_loss(None)
    from tfmeta.training.config import MetaTrainConfig

    with pytest.raises(ValueError, match="trainers.rl2"):
        MetaTrainConfig(variant="rl2")


@pytest.mark.parametrize("kwargs, match", [
    (dict(env="cartpole"), r"`env` must be one of .*Received: env='cartpole'"),
    (dict(env="gym:"), r"Received: env='gym:'"),
    (dict(env="bandit", num_arms=1), "at least 2 arms. Received: num_arms=1"),
    (dict(env="bandit", num_pulls=0), "num_pulls=0"),
    (dict(env="mdp", num_episodes=-3), "num_episodes=-3"),
    (dict(env="bandit", num_arms=2.5), "num_arms=2.5"),
])
def test_bad_environments_are_refused_clearly(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_env(**kwargs)


def test_bad_trainer_settings_are_refused_clearly():
    env = BernoulliBandit(3)
    with pytest.raises(ValueError, match="minibatches. Received: minibatches=3"):
        RL2Trainer(build_rl2(env=env, units=4, minibatches=3), env, 5, meta_batch_size=8)
    with pytest.raises(ValueError, match="meta_batch_size=0"):
        RL2Trainer(build_rl2(env=env, units=4), env, 5, meta_batch_size=0)
    with pytest.raises(ValueError, match="`lam` must be in"):
        build_rl2(env=env, lam=1.5)


def _run_trainer(*args):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "trainers.rl2", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow  # ~20 s unloaded: TensorFlow's start, two compilations, the baselines, an export
def test_trainer_prints_one_line_per_policy_on_the_same_test_tasks_and_exports(tmp_path):
    done = _run_trainer("--env=bandit", "--num_arms=3", "--num_pulls=4", "--units=8", "--meta_batch_size=16",
                        "--num_iterations=2", "--eval_every=1", "--val_tasks=20", "--test_tasks=50",
                        f"--workdir={tmp_path / 'run'}", f"--export_dir={tmp_path / 'exports'}")
    assert done.returncode == 0, done.stderr[-3000:]
    test = done.stdout.split("the same for every policy)\n")[1]
    lines = {line.split()[0]: line for line in test.splitlines() if "±" in line}
    assert set(lines) == {"rl2", "random", "greedy", "epsilon_greedy", "ucb1", "thompson", "gittins"}, done.stdout
    # The baselines' figures are those of evaluate_bandit_baselines on the same 50 test tasks (seed 0).
    from tfmeta.data.rl.bandit_baselines import evaluate_bandit_baselines

    ucb1 = evaluate_bandit_baselines(4, 3, 50, seed=0)["UCB1"]
    assert f"{ucb1[0]:9.2f} ± {ucb1[1]:.2f}" in lines["ucb1"]
    assert (tmp_path / "run" / "checkpoints" / "best" / "best.json").is_file()
    card = json.loads((tmp_path / "exports" / "run" / "1" / "assets" / "tfmeta.json").read_text())
    assert card["kind"] == "rl2_policy_step" and set(card["evaluation"]) == set(lines)


def test_rollout_shapes_of_a_bandit_trial():
    env = BernoulliBandit(3)
    learner = build_rl2(env=env, units=4)
    r = learner.rollout(env, env.sample_tasks([0, 0], 5), [0, 1], [0, 2], 7)
    assert isinstance(r, Rollout)
    assert r.inputs.shape == (7, 5, 1 + 3 + 2) and r.actions.shape == (7, 5)
    assert set(np.unique(r.rewards.numpy())) <= {0.0, 1.0}
