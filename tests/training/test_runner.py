"""run(config) with the real MAML on sinusoids: learns, compiles once, resumes exactly."""

import dataclasses

import numpy as np
import pytest

from tfmeta.training import MetaTrainConfig, run
from tfmeta.training.runner import build_trainer, report_steps


def quick(tmp_path, **kwargs):
    values = dict(num_iterations=200, eval_every=100, eval_episodes=100, workdir=str(tmp_path))
    values.update(kwargs)
    return MetaTrainConfig(**values)


def test_meta_training_reduces_the_sinusoid_loss(tmp_path):
    # Finn et al.'s settings (meta-batch 25, Adam 1e-3, one step of 0.01) for 200 steps.
    config = quick(tmp_path, eval_inner_steps=1)
    trainer, _ = build_trainer(config, verbose=False)
    before = trainer.validate()["val/mse_after"]  # the same 100 validation tasks each time
    history = trainer.train()
    assert trainer.trace_count == 1
    assert history[-1]["loss"] < 0.95 * history[0]["loss"], history  # steps 101-200 vs 1-100
    assert history[-1]["val/mse_after"] < 0.9 * before, (before, history)


def test_run_reports_test_mse_after_0_1_5_10_steps(tmp_path):
    result = run(quick(tmp_path, num_iterations=20, eval_every=20, eval_episodes=30), verbose=False)
    assert set(result.test_results) == {0, 1, 5, 10}
    for results in result.test_results.values():
        assert results["num_episodes"] == 30
        mean, ci = results["mse"]
        assert 0 < mean < 20 and 0 < ci < mean
    assert len({r["mse"][0] for r in result.test_results.values()}) == 4  # steps change the error


def test_report_steps():
    assert report_steps(MetaTrainConfig()) == [0, 1, 5, 10]
    assert report_steps(MetaTrainConfig(eval_inner_steps=3)) == [0, 1, 3]


@pytest.mark.parametrize("variant", ["maml++"])
def test_resume_equals_uninterrupted_with_learned_rates(tmp_path, variant):
    config = quick(tmp_path / "full", num_iterations=16, eval_every=8, variant=variant, inner_steps=2,
                   eval_inner_steps=2, eval_episodes=10)
    full, _ = build_trainer(config, verbose=False)
    full.train()
    split = dataclasses.replace(config, workdir=str(tmp_path / "split"))
    interrupted, _ = build_trainer(split, verbose=False)
    interrupted.train(until_step=5)  # as if killed after step 5 (checkpoint at 5)
    resumed, _ = build_trainer(split, verbose=False)
    assert resumed.restore() == 5
    resumed.train()
    assert full.algorithm.extra_variables  # LSLR rates are meta-learned and checkpointed
    for a, b in zip(full.checkpoint.algorithm_variables + full.model.variables,
                    resumed.checkpoint.algorithm_variables + resumed.model.variables):
        np.testing.assert_allclose(np.asarray(a.numpy()), np.asarray(b.numpy()), rtol=0, atol=1e-6)
    assert int(resumed.algorithm.meta_step.numpy()) == int(full.algorithm.meta_step.numpy()) == 16
    # MAML++'s cosine schedule spans num_iterations: changing it on resume is refused.
    with pytest.raises(ValueError, match=r"num_iterations=32 \(workdir has 16\)"):
        build_trainer(dataclasses.replace(split, num_iterations=32), verbose=False)[0].train()


@pytest.mark.data
def test_omniglot_smoke_and_model_only_restore(omniglot_data_dir, tmp_path):
    import tensorflow as tf

    from tfmeta import models
    from tfmeta.training import checkpoints

    config = MetaTrainConfig(dataset="omniglot", data_dir=str(omniglot_data_dir), ways=5, shots=1, queries=2,
                             meta_batch_size=2, inner_lr=0.4, eval_inner_steps=1, num_iterations=4, eval_every=2,
                             eval_episodes=4, workdir=str(tmp_path))
    result = run(config, verbose=False)
    assert [r["step"] for r in result.history] == [2, 4]
    assert set(result.test_results) == {0, 1}
    mean, ci = result.test_results[1]["accuracy"]
    assert 0.0 <= mean <= 1.0 and ci >= 0.0
    # A plain `tf.train.Checkpoint(model=...)` restores the learner (e.g. for export).
    model = models.conv4(5, input_shape=(28, 28, 1))
    tf.train.Checkpoint(model=model).restore(checkpoints.latest_checkpoint(tmp_path)).expect_partial()
    for a, b in zip(model.variables, result.trainer.model.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
