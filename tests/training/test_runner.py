"""run(config) with the real MAML on sinusoids: learns, compiles once, resumes exactly."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from tfmeta.data.regression import sinusoid_tasks
from tfmeta.export.model_card import read_model_card

from tfmeta.training import MetaTrainConfig, run
from tfmeta.training.runner import build_trainer, learner_fn, report_steps


def quick(tmp_path, **kwargs):
    values = dict(num_iterations=200, eval_every=100, eval_episodes=100, workdir=str(tmp_path), export_dir="")
    values.update(kwargs)
    return MetaTrainConfig(**values)


def test_the_step_compiles_once(tmp_path):
    trainer, _ = build_trainer(quick(tmp_path, num_iterations=30, eval_every=30, eval_episodes=25), verbose=False)
    trainer.train()
    assert trainer.trace_count == 1 and int(trainer.step.numpy()) == 30
    assert int(trainer.optimizer.iterations.numpy()) == 30  # the learner's step: meta-updates applied


def test_run_reports_test_mse_after_0_1_5_10_steps_and_exports(tmp_path):
    exports = tmp_path / "exports"
    result = run(quick(tmp_path / "run", num_iterations=20, eval_every=20, eval_episodes=30,
                       export_dir=str(exports)), verbose=False)
    assert set(result.test_results) == {0, 1, 5, 10}
    for results in result.test_results.values():
        assert results["num_episodes"] == 30
        mean, ci = results["mse"]
        assert 0 < mean < 20 and 0 < ci < mean
    assert len({r["mse"][0] for r in result.test_results.values()}) == 4  # steps change the error

    # The trained model is exported (TF Serving layout) with its results in the model card.
    assert result.export_path == exports / "maml_sinusoid" / "1"
    card = read_model_card(result.export_path)
    assert card["kind"] == "few_shot_regressor" and card["checkpoint_step"] == 20
    assert card["training"] == result.config.to_dict()
    assert card["evaluation"]["episodes"] == 30
    mean, ci = result.test_results[10]["mse"]
    assert card["evaluation"]["after_inner_steps"]["10"]["mse"] == {"mean": pytest.approx(mean), "ci95": pytest.approx(ci)}
    # It adapts inside the graph with the run's eval_inner_steps: same numbers as the trained algorithm.
    tasks = next(iter(sinusoid_tasks(5, 10, 1, seed=7)))
    sx, sy, qx = tasks.support_x[0], tasks.support_y[0], tasks.query_x[0]
    served = tf.saved_model.load(str(result.export_path)).signatures["serving_default"]
    got = served(support_x=sx, support_y=sy, query_x=qx)["predictions"].numpy()
    learner = result.trainer.learner
    fast = learner.adapt(sx, sy, steps=10)
    np.testing.assert_allclose(got, learner.predict(fast, qx).numpy(), rtol=1e-4, atol=1e-5)
    # A second run of the same name takes the next version; version 1 is untouched.
    again = run(dataclasses.replace(result.config, workdir=str(tmp_path / "run2"), num_iterations=1, eval_episodes=2),
                verbose=False)
    assert again.export_path == exports / "maml_sinusoid" / "2" and read_model_card(result.export_path) == card


def test_learner_options_from_the_config():
    msl = learner_fn(MetaTrainConfig(inner_steps=2, multi_step_loss=True, msl_anneal_steps=70), (1,))().config()
    assert msl["learner"] == "maml++" and msl["multi_step_loss"] and msl["msl_anneal_steps"] == 70
    assert msl["learned_inner_lr"] == "fixed" and msl["first_order_steps"] == 0
    plus = learner_fn(MetaTrainConfig(variant="maml++", inner_steps=2, num_iterations=900), (1,))().config()
    assert plus["learned_inner_lr"] == "per_layer_per_step" and plus["multi_step_loss"] and plus["per_step_bn_stats"]
    assert plus["first_order_steps"] == 300  # derivative-order annealing: the first third
    assert not plus["per_step_bn_weights"]  # the sinusoid MLP has no BatchNorm
    assert not learner_fn(MetaTrainConfig(), (1,))().config()["multi_step_loss"]


def test_report_steps():
    maml = learner_fn(MetaTrainConfig(), (1,))()
    assert report_steps(MetaTrainConfig(), maml) == [0, 1, 5, 10]
    assert report_steps(MetaTrainConfig(eval_inner_steps=3), maml) == [0, 1, 3]


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
    assert full.learner.extra_variables  # LSLR rates are meta-learned and checkpointed
    for a, b in zip(full.checkpoint.algorithm_variables + full.model.variables,
                    resumed.checkpoint.algorithm_variables + resumed.model.variables):
        np.testing.assert_allclose(np.asarray(a.numpy()), np.asarray(b.numpy()), rtol=0, atol=1e-6)
    # The schedules' step (the optimizer's count of applied updates) resumes with the rest.
    assert int(resumed.optimizer.iterations.numpy()) == int(full.optimizer.iterations.numpy()) == 16
    # MAML++'s cosine schedule spans num_iterations: changing it on resume is refused.
    with pytest.raises(ValueError, match=r"num_iterations=32 \(workdir has 16\)"):
        build_trainer(dataclasses.replace(split, num_iterations=32), verbose=False)[0].train()


@pytest.mark.data
def test_omniglot_smoke_and_restore_without_the_data(omniglot_data_dir, tmp_path, monkeypatch):
    from tfmeta import models, workdir
    from tfmeta.training import checkpoints

    config = MetaTrainConfig(dataset="omniglot", data_dir=str(omniglot_data_dir), ways=5, shots=1, queries=2,
                             meta_batch_size=2, inner_lr=0.4, eval_inner_steps=1, num_iterations=4, eval_every=2,
                             eval_episodes=4, workdir=str(tmp_path / "run"), export_dir=str(tmp_path / "exports"))
    result = run(config, verbose=False)
    assert [r["step"] for r in result.history] == [2, 4]
    assert set(result.test_results) == {0, 1}
    assert result.export_path == tmp_path / "exports" / "maml_omniglot_5way_1shot" / "1"
    card = read_model_card(result.export_path)
    assert card["kind"] == "few_shot_classifier" and card["ways"] == 5 and card["shots"] == 1
    assert card["input"]["preprocessing"]["invert"] is True  # Omniglot strokes are stored as 1
    # A plain `tf.train.Checkpoint(model=...)` restores the learner (e.g. for export).
    model = models.conv4(5, input_shape=(28, 28, 1))
    tf.train.Checkpoint(model=model).restore(checkpoints.latest_checkpoint(tmp_path / "run")).expect_partial()
    for a, b in zip(model.variables, result.trainer.model.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # tfmeta.workdir.restore rebuilds the learner from config.json alone: no data source is read.
    import json

    from tfmeta.data.sources import ClassDataset

    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["input_shape"] == [28, 28, 1]

    def no_reading(*args, **kwargs):
        raise AssertionError("restore read the training data")

    monkeypatch.setattr(ClassDataset, "from_omniglot", no_reading)
    restored = workdir.restore(tmp_path / "run")
    with pytest.raises(ValueError, match="tested on 5-way tasks only. Received: ways=7"):
        workdir.evaluate_workdir(tmp_path / "run", eval_episodes=2, ways=7)
    assert restored.step == 4 and restored.data_spec["preprocessing"]["invert"] is True
    for a, b in zip(restored.learner.variables, result.trainer.learner.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_selection_needs_validation_classes_of_the_splits_own(tmp_path):
    from PIL import Image

    for k in range(10):
        (tmp_path / "data" / f"c{k}").mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((16, 16), 20 * k + i, np.uint8)).save(tmp_path / "data" / f"c{k}" / f"{i}.png")
    config = MetaTrainConfig(dataset="folder", data_dir=str(tmp_path / "data"), ways=2, shots=1, queries=1,
                             workdir=str(tmp_path / "run"), select="best")
    with pytest.raises(ValueError, match="validates on its test classes.*Received: select='best', patience=0"):
        build_trainer(config, verbose=False)
    with pytest.raises(ValueError, match="Received: select='last', patience=3"):
        build_trainer(dataclasses.replace(config, select="last", patience=3), verbose=False)


def test_augmentation_touches_the_training_stream_only_and_any_replica_count_draws_the_same(tmp_path):
    from PIL import Image

    from tfmeta.training import runner

    rng = np.random.default_rng(0)
    for k in range(10):
        (tmp_path / "data" / f"c{k}").mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (20, 20), np.uint8)).save(tmp_path / "data" / f"c{k}" / f"{i}.png")
    plain = MetaTrainConfig(dataset="folder", data_dir=str(tmp_path / "data"), ways=2, shots=1, queries=2,
                            meta_batch_size=4, workdir=str(tmp_path / "run"))
    augmented = dataclasses.replace(plain, crop_padding=3, flip=True)
    split = runner.load_data(plain)
    first = lambda config, ctx=None: next(iter(runner.train_dataset_fn(config, split)(7, ctx)))
    a, b, c = first(plain), first(augmented), first(augmented)
    assert not np.allclose(a.support_x, b.support_x)  # augmented...
    np.testing.assert_array_equal(a.support_y, b.support_y)  # ... with the same labels
    np.testing.assert_array_equal(b.query_x, c.query_x)  # deterministic: a pure function of (seed, step, task)
    # Two replicas draw the same augmentations as one device: their slices concatenate to it.
    iterator = iter(runner.train_dataset_fn(augmented, split)(7, tf.distribute.InputContext(1, 0, 2)))
    slices = [next(iterator), next(iterator)]  # replica 0's and replica 1's tasks of step 7
    np.testing.assert_array_equal(np.concatenate([s.query_x for s in slices]), b.query_x)
    # Validation and test streams are never augmented.
    validation = lambda config: next(iter(runner.eval_dataset_fn(config, split)()))
    np.testing.assert_array_equal(validation(plain).support_x, validation(augmented).support_x)


def test_select_best_tests_and_exports_the_best_checkpoint_and_restore_follows(tmp_path):
    import json

    from tfmeta import workdir

    result = run(quick(tmp_path / "run", num_iterations=30, eval_every=10, eval_episodes=25, select="best",
                       export_dir=str(tmp_path / "exports")), verbose=False)
    best = json.loads((tmp_path / "run" / "checkpoints" / "best" / "best.json").read_text())
    assert best["metric"] == "val/mse_after" and best["step"] in (10, 20, 30)
    assert [r["val/mse_after"] for r in result.history if r["step"] == best["step"]] == [best["value"]]
    assert read_model_card(result.export_path)["checkpoint_step"] == best["step"]
    assert workdir.restore(tmp_path / "run").step == best["step"]  # the run's selection
    assert workdir.restore(tmp_path / "run", which="last").step == 30
