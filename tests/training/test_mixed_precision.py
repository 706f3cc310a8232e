"""Mixed precision: 16-bit compute, float32 variables, float32 losses, the loop's loss scaling for float16."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import tensorflow as tf

from tfmeta import models
from tfmeta.learners import MAML, task_loss_and_metrics
from tfmeta.data.episode import Episode
from tfmeta.data.regression import sinusoid_tasks
from tfmeta.training.config import MetaTrainConfig
from tfmeta.training import loop
from tfmeta.training.loop import MetaTrainer

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_losses_are_float32_for_16_bit_outputs():
    logits = tf.constant([[2.0, -1.0], [0.5, 0.25]], tf.bfloat16)
    loss, metrics = task_loss_and_metrics("classification", logits, tf.constant([0, 1]))
    assert loss.dtype == tf.float32 and metrics["accuracy"].dtype == tf.float32
    expected = np.mean([np.log1p(np.exp(-3.0)), np.log1p(np.exp(0.25))])
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-2)
    loss, _ = task_loss_and_metrics("regression", tf.constant([[1.0]], tf.float16), tf.constant([[3.0]]))
    assert loss.dtype == tf.float32 and float(loss) == 4.0


def shifted_sinusoids(start_step, input_context=None):
    """Sinusoids shifted up by 5: the initial learner is far off, so the loss clearly falls."""
    tasks = sinusoid_tasks(5, 10, 8, seed=1, start_step=start_step, input_context=input_context)
    return tasks.map(lambda e: Episode(e.support_x, e.support_y + 5.0, e.query_x, e.query_y + 5.0))


def _trainer(tmp_path, policy, **overrides):
    values = dict(mixed_precision=policy, meta_batch_size=8, num_iterations=30, eval_every=10, eval_episodes=8,
                  eval_inner_steps=1, meta_lr=1e-2, workdir=str(tmp_path / policy), seed=3)
    values.update(overrides)
    build = lambda: MAML(models.mlp(), task="regression", inner_lr=0.01)
    return MetaTrainer(MetaTrainConfig(**values), build, shifted_sinusoids, verbose=False)


def test_mixed_bfloat16_second_order_maml_follows_the_float32_run(tmp_path):
    reference = _trainer(tmp_path, "none")
    trainer = _trainer(tmp_path, "mixed_bfloat16")
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after building the learner
    assert {layer.dtype_policy.name for layer in trainer.model.layers} == {"mixed_bfloat16"}
    assert {v.dtype for v in trainer.model.variables + trainer.optimizer.variables[1:]} == {"float32"}
    for a, b in zip(reference.model.variables, trainer.model.variables):  # the same initialisation
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    batch = next(iter(shifted_sinusoids(0)))
    grads, metrics, _ = trainer.compute_gradients(batch)
    expected, expected_metrics, _ = reference.compute_gradients(batch)
    assert metrics["loss"].dtype == tf.float32 and all(g.dtype == tf.float32 for g in grads)
    # bfloat16 keeps 8 bits of mantissa. Measured: loss within 0.01%, gradients within 1.1% (norm of the difference).
    assert abs(float(metrics["loss"]) / float(expected_metrics["loss"]) - 1) < 0.005
    for g, e in zip(grads, expected):
        assert float(tf.norm(g - e) / tf.norm(e)) < 0.05

    # The same 30 steps: the losses stay close (measured: within 0.1%; a wrong cast or a lost update drifts).
    losses = [r["loss"] for r in trainer.train()]
    reference_losses = [r["loss"] for r in reference.train()]
    np.testing.assert_allclose(losses, reference_losses, rtol=0.01)
    assert reference_losses[-1] < 0.5 * reference_losses[0]  # they did train


def test_float16_loss_scaling_is_undone(tmp_path):
    trainer = _trainer(tmp_path, "mixed_float16")
    assert trainer.loss_scale is not None and float(trainer.loss_scale.scale.numpy()) == 2.0**15
    batch = next(iter(shifted_sinusoids(0)))
    trainer.loss_scale.scale.assign(256.0)  # small enough not to overflow float16 here
    scaled, _, _ = trainer.compute_gradients(batch)  # differentiated at loss * 256, divided back
    plain, _, _ = tf.function(lambda b: trainer.learner.meta_gradients(b, step=0))(batch)  # no scaling at all
    for g, e in zip(scaled, plain):
        assert float(tf.reduce_max(tf.abs(e))) > 0
        np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-2, atol=1e-4)


def test_float16_overflow_skips_the_update_and_halves_the_scale(tmp_path):
    trainer = _trainer(tmp_path, "mixed_float16")
    batch = next(iter(shifted_sinusoids(0)))
    before = [v.numpy() for v in trainer.model.trainable_variables]
    trainer.loss_scale.scale.assign(2.0**30)  # the scaled gradients overflow float16
    status, metrics = trainer.train_step(batch)
    assert int(status) == loop.SKIPPED and np.isfinite(float(metrics["loss"]))
    assert float(trainer.loss_scale.scale.numpy()) == 2.0**29
    assert int(trainer.step.numpy()) == 1  # the batch is consumed ...
    assert int(trainer.optimizer.iterations.numpy()) == 0  # ... but the learner's step does not move
    for a, v in zip(before, trainer.model.trainable_variables):
        np.testing.assert_array_equal(a, v.numpy())
    trainer.loss_scale.scale.assign(256.0)
    status, _ = trainer.train_step(batch)
    assert int(status) == loop.APPLIED and int(trainer.optimizer.iterations.numpy()) == 1


MIRRORED_FLOAT16 = textwrap.dedent("""
    from tfmeta.training import distribute
    distribute.configure_logical_devices(2)
    import json, sys, keras, numpy as np
    from tfmeta.training import runner
    from tfmeta.training.config import MetaTrainConfig
    config = MetaTrainConfig(mixed_precision="mixed_float16", strategy="mirrored",
                             meta_batch_size=4, num_iterations=6, eval_every=3, eval_episodes=4,
                             eval_inner_steps=1, meta_lr=1e-2, workdir=sys.argv[1])
    trainer, _ = runner.build_trainer(config, verbose=False)
    start = [v.numpy() for v in trainer.model.trainable_variables]
    history = trainer.train()
    print("RESULT " + json.dumps({
        "optimizer": type(trainer.optimizer).__name__,
        "replicas": trainer.strategy.num_replicas_in_sync,
        "policy": trainer.model.layers[0].dtype_policy.name,
        "scale": float(trainer.loss_scale.scale.numpy()),
        "losses": [r["loss"] for r in history],
        "step": int(trainer.step.numpy()),
        "moved": max(float(np.abs(a - v.numpy()).max()) for a, v in zip(start, trainer.model.trainable_variables)),
    }))
""")


def test_mixed_float16_loss_scaling_under_mirrored_strategy(tmp_path):
    # No GPU, no --devices: "mirrored" spans the 2 logical CPUs.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", MIRRORED_FLOAT16, str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT ")[-1])
    assert result["optimizer"] == "Adam" and result["replicas"] == 2  # the loop scales the loss itself
    assert result["policy"] == "mixed_float16" and result["step"] == 6
    assert np.all(np.isfinite(result["losses"])) and result["moved"] > 1e-3
    assert 1.0 <= result["scale"] <= 2.0**15  # a sane dynamic scale (initial 2**15)


def test_batchnorm_statistics_stay_float32_under_mixed_bfloat16():
    from tfmeta.training.distribute import mixed_precision_scope

    with mixed_precision_scope("mixed_bfloat16"):
        model = models.conv4(3, input_shape=(16, 16, 1), filters=4, seed=0)
    start = [tf.fill(v.shape, 0.123456789) for v in model.non_trainable_variables]
    trainable = [v.value for v in model.trainable_variables]
    x = tf.random.stateless_uniform([6, 16, 16, 1], seed=(1, 2))
    outputs, state = model.stateless_call(trainable, start, x, training=True)
    assert outputs.dtype == tf.bfloat16 and {s.dtype for s in state} == {tf.float32}
    # Updated in float32: momentum * 0.123456789 + (1 - momentum) * batch mean is not
    # rounded to bfloat16's 8 bits.
    moving_mean = state[0].numpy()
    assert np.any(moving_mean != tf.cast(tf.cast(moving_mean, tf.bfloat16), tf.float32).numpy())
    conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    norm = next(layer for layer in model.layers if isinstance(layer, models.BatchNorm))
    features = conv.convolution_op(x, tf.cast(conv.kernel, tf.float32)) + tf.cast(conv.bias, tf.float32)
    expected = norm.momentum * 0.123456789 + (1 - norm.momentum) * tf.reduce_mean(features, axis=[0, 1, 2])
    np.testing.assert_allclose(moving_mean, expected.numpy(), atol=2e-3)
