"""Run in its own process by test_rl2_mirrored.py: RL²'s PPO gradients on 2 logical CPUs vs one device.

Logical devices must be configured before TensorFlow initialises, hence a fresh process.
One rollout of 8 trials is collected on one device; its PPO gradients (`RL2Trainer.
compute_gradients`: advantages normalised over the global batch, each replica's loss its
share of the global mean, replicas averaged) are computed on one device and with the
trials split over 2 replicas (4 each), before any optimizer step. With `--step`, one whole
training step (rollout + PPO) also runs under the MirroredStrategy. Prints one JSON line
prefixed `RESULT `.
"""

import json
import sys

from tfmeta.training import distribute

distribute.configure_logical_devices(2)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfmeta.data.rl import BernoulliBandit  # noqa: E402
from tfmeta.learners.recurrent.rl2 import RL2Trainer, Rollout, build_rl2  # noqa: E402

ENV, TASKS, STEPS = BernoulliBandit(3), 8, 6


def make(strategy):
    with strategy.scope():
        tf.keras.utils.set_random_seed(0)
        learner = build_rl2(env=ENV, units=8, entropy_coef=0.05)
        for v in learner.model.trainable_variables:  # larger policy weights: non-trivial ratios and gradients
            v.assign(tf.random.stateless_normal(v.shape, seed=[v.shape.num_elements() or 1, 3], stddev=0.5))
    return learner, RL2Trainer(learner, ENV, STEPS, meta_batch_size=TASKS, strategy=strategy)


one_learner, one = make(tf.distribute.get_strategy())
rollout = one_learner.rollout(ENV, ENV.sample_tasks([0, 0], TASKS), [0, 1], [0, 2], STEPS)
grads_one, metrics_one = one.compute_gradients(rollout)

mirrored = distribute.make_strategy("mirrored", "CPU:0,CPU:1")
two_learner, two = make(mirrored)
same_start = max(float(np.abs(a.numpy() - b.numpy()).max()) for a, b in
                 zip(two_learner.model.trainable_variables, one_learner.model.trainable_variables))
half = TASKS // 2
split = mirrored.experimental_distribute_values_from_function(
    lambda ctx: Rollout(*(t[:, ctx.replica_id_in_sync_group * half:(ctx.replica_id_in_sync_group + 1) * half]
                          for t in rollout)))
grads_two, metrics_two = two.compute_gradients(split)
difference = max(float(np.abs(a.numpy() - b.numpy()).max()) for a, b in zip(grads_one, grads_two))
scale = max(float(np.abs(a.numpy()).max()) for a in grads_one)
loss_difference = abs(float(metrics_one["loss"]) - float(metrics_two["loss"]))

result = dict(replicas=mirrored.num_replicas_in_sync, same_start=same_start, grad_difference=difference,
              grad_scale=scale, loss_difference=loss_difference, loss=float(metrics_one["loss"]))
if "--step" in sys.argv:
    before = [v.numpy().copy() for v in two_learner.model.trainable_variables]
    step_metrics = two.train_step(next(iter(two.tasks(0))))
    result.update(step_moved=max(float(np.abs(v.numpy() - b).max())
                                 for v, b in zip(two_learner.model.trainable_variables, before)),
                  step=int(two.step.numpy()), step_finite=bool(np.isfinite(step_metrics["loss"])))
print("RESULT " + json.dumps(result))
