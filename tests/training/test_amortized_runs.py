"""run(config) for the amortized family: GP tasks and the exact-GP gap, metadata, plots, exact resume, config errors."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from tfmeta.export import read_model_card
from tfmeta.training import MetaTrainConfig, plots, run
from tfmeta.training.runner import build_trainer, plot_hooks


def quick(tmp_path, **kwargs):
    values = dict(variant="cnp", dataset="gp", meta_batch_size=8, num_iterations=20, eval_every=10, eval_episodes=16,
                  workdir=str(tmp_path / "run"), export_dir="")
    values.update(kwargs)
    return MetaTrainConfig(**values)


def test_gp_run_reports_the_exact_gp_gap_exports_stddev_and_plots(tmp_path, capsys):
    result = run(quick(tmp_path, meta_lr=1e-3, num_iterations=4, eval_every=2, export_dir=str(tmp_path / "exports")))
    assert result.trainer.trace_count == 1
    test = result.test_results[None]
    # The oracle scores the same 16 tasks: its log-likelihood is higher, the gap is the difference.
    assert test["gp_log_likelihood"][0] > test["log_likelihood"][0]
    np.testing.assert_allclose(test["log_likelihood_gap"][0], test["gp_log_likelihood"][0] - test["log_likelihood"][0],
                               rtol=1e-4)
    out = capsys.readouterr().out
    assert "test: log_likelihood" in out and "exact GP posterior (true kernel): log_likelihood" in out
    assert "nats per target point (16 episodes)" in out
    card = read_model_card(result.export_path)
    assert card["evaluation"]["results"]["log_likelihood_gap"]["mean"] == pytest.approx(test["log_likelihood_gap"][0])
    assert card["probabilistic"] and "stddev" in card["signature"]["outputs"]
    assert result.export_path.parent.name == "cnp_gp"
    assert [r["step"] for r in result.history] == [2, 4] and "val/log_likelihood" in result.history[-1]
    if not plots.available():
        return
    # Pictures of the fixed test tasks at each evaluation, in the workdir and in TensorBoard.
    pictures = sorted((tmp_path / "run" / "plots").glob("*.png"))
    assert [p.name for p in pictures] == ["predictions_00000002.png", "predictions_00000004.png"]
    height, width, _ = tf.image.decode_png(pictures[0].read_bytes()).shape
    assert height > 200 and width > 400
    tags = []
    for event_file in (tmp_path / "run" / "tensorboard").glob("events*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            tags += [(value.tag, value.metadata.plugin_data.plugin_name) for value in event.summary.value]
    assert tags.count(("images/predictions", "images")) == 2


@pytest.mark.parametrize("kwargs", [
    dict(variant="cnp", dataset="gp", task_metadata=True),
    dict(variant="hypernet", dataset="sinusoid", task_metadata=True, metadata_noise=0.1, min_shots=0),
    # FiLM MAML (slow: ~30 s; its resume is the MetaTrainer's, checked above and for MAML++ in test_runner).
    pytest.param(dict(variant="maml", dataset="sinusoid", task_metadata=True, metadata_noise=0.1, min_shots=0),
                 marks=pytest.mark.slow),
])
def test_resume_equals_uninterrupted(tmp_path, kwargs, monkeypatch, capsys):
    """A run stopped at step 2 and resumed ends with the uninterrupted run's variables; the sinusoid
    run goes through `run` (its test reports the MSE at 0, 1, 5 and 10 shots)."""
    monkeypatch.setattr(plots, "available", lambda: False)  # pictures are not what this checks
    config = quick(tmp_path / "full", meta_batch_size=4, num_iterations=4, eval_every=4, eval_episodes=4, **kwargs)
    values = lambda t: [v.numpy() for v in t.checkpoint.algorithm_variables + t.model.variables]
    split = dataclasses.replace(config, workdir=str(tmp_path / "split"))
    interrupted, _ = build_trainer(split, verbose=False)
    initial = values(interrupted)  # the same seed: the uninterrupted run's initial values too
    interrupted.train(until_step=2)
    resumed, _ = build_trainer(split, verbose=False)
    assert resumed.restore() == 2
    resumed.train()
    if config.dataset == "sinusoid":
        result = run(config)
        full = result.trainer
        test = result.test_results[full.learner.eval_steps]  # FiLM MAML: after its eval_inner_steps
        for shots in (0, 1, 5, 10):
            assert f"mse_{shots}shot" in test
        assert "test at  0 shots (metadata noise 0.1): mse" in capsys.readouterr().out
    else:
        full, _ = build_trainer(config, verbose=False)
        full.train()
    assert full.learner.extra_variables  # the encoders, attention, generator: meta-learned and checkpointed
    assert max(np.abs(a - b).max() for a, b in zip(initial, values(full))) > 0  # training moved them
    for a, b in zip(values(full), values(resumed)):
        np.testing.assert_array_equal(a, b)


def test_the_figure_draws_bands_only_for_probabilistic_learners():
    pytest.importorskip("matplotlib")
    from tfmeta.data import gp_test_tasks

    batch = next(iter(gp_test_tasks(2, seed=0))).task_episode()
    mean = np.zeros((2, 400, 1), np.float32)
    with_band = plots.regression_figure(batch, mean, np.ones_like(mean), title="t")
    without = plots.regression_figure(batch, mean, None, title="t")
    assert with_band[:4] == b"\x89PNG" and with_band != without
    with pytest.raises(ValueError, match=r"Received: query_x.shape=\(2, 400, 2\)"):
        plots.regression_figure(batch._replace(query_x=tf.zeros([2, 400, 2])), mean)


def test_without_matplotlib_runs_skip_plots_with_one_note(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(plots, "available", lambda: False)
    assert plot_hooks(quick(tmp_path)) == []
    assert capsys.readouterr().out.strip() == ('note: matplotlib is not installed, so no prediction plots '
                                               '(pip install "tfmeta[plots]")')
    assert plot_hooks(MetaTrainConfig(variant="protonet", dataset="omniglot", data_dir="x")) == []


@pytest.mark.parametrize("kwargs, match", [
    (dict(variant="maml", dataset="gp"), "only the amortized learners.*Received: variant='maml'"),
    (dict(variant="protonet", dataset="sinusoid"), "classifies images"),
    (dict(variant="hypernet", dataset="sinusoid", attention=True), "Received: variant='hypernet', attention=True"),
    (dict(variant="hypernet", dataset="sinusoid", generate="film"), "Received: generate='film', dataset='sinusoid'"),
    (dict(variant="cnp", dataset="sinusoid", generate="all"), "Received: variant='cnp', generate='all'"),
    (dict(variant="reptile", dataset="sinusoid", task_metadata=True),
     "Received: variant='reptile', dataset='sinusoid'"),
    (dict(variant="maml", dataset="gp", task_metadata=True), "only the amortized learners.*Received: variant='maml'"),
    (dict(variant="maml", dataset="sinusoid", min_shots=0),
     "Received: variant='maml', dataset='sinusoid', task_metadata=False"),
    (dict(variant="cnp", dataset="gp", metadata_noise=0.1), "Received: dataset='gp'"),
    (dict(variant="cnp", dataset="sinusoid", min_shots=6), r"in \[0, shots=5\]. Received: min_shots=6"),
    (dict(variant="cnp", dataset="sinusoid", metadata_noise=-1.0), "Received: metadata_noise=-1.0"),
])
def test_config_errors_name_the_fields(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MetaTrainConfig(**kwargs)


def test_names_and_regression_flags():
    assert MetaTrainConfig(variant="cnp", dataset="gp", attention=True).resolved().workdir == "runs/anp_gp"
    assert MetaTrainConfig(variant="cnp", dataset="gp_anp").is_regression
    assert MetaTrainConfig(variant="hypernet", task_metadata=True).metadata_dim == 2
    assert MetaTrainConfig(variant="fomaml", task_metadata=True, min_shots=0).metadata_dim == 2  # FiLM MAML


def test_gp_validation_and_test_tasks_do_not_depend_on_the_meta_batch_size():
    """CNP (64 tasks per step) and ANP (16) runs of one seed are validated and tested on the same
    tasks, so their gaps to the exact GP are compared on the same functions and contexts."""
    from tfmeta.training import runner

    first = lambda dataset: next(iter(dataset))
    cnp = MetaTrainConfig(dataset="gp", variant="cnp", meta_batch_size=64, eval_episodes=100)
    anp = dataclasses.replace(cnp, meta_batch_size=16, attention=True)
    for make in (runner.gp_test_dataset_fn, runner.eval_dataset_fn):
        a, b = first(make(cnp)()), first(make(anp)())
        np.testing.assert_array_equal(a.query_y, b.query_y)
        np.testing.assert_array_equal(a.support_x, b.support_x)
    # Another seed draws other tasks (the stream is not a constant).
    other = first(runner.gp_test_dataset_fn(dataclasses.replace(cnp, seed=1))())
    assert not np.allclose(other.query_y, first(runner.gp_test_dataset_fn(cnp)()).query_y)


# ------------------------------------------------------------ class metadata (classification)


def test_cnp_classifier_conditions_on_omniglot_alphabets(tmp_path, capsys, omniglot_tree):
    """A CNPClassifier run with `task_metadata` on an Omniglot tree: its episodes carry each class's
    one-hot alphabet, the learner is built with that size, and it trains, validates and tests."""
    from tfmeta import workdir

    root = omniglot_tree(tmp_path / "omniglot", {"Greek": 3, "Latin": 3, "Early_Aramaic": 3, "Sanskrit": 2,
                                                 "Tagalog": 2}, images_per_character=3, size=28)
    config = quick(tmp_path, dataset="omniglot", data_dir=str(root), ways=3, shots=1, queries=2, meta_batch_size=2,
                   num_iterations=2, eval_every=2, eval_episodes=4, task_metadata=True)
    result = run(config)
    trainer = result.trainer
    assert trainer.data_spec["metadata_dim"] == 5 and trainer.learner.metadata_dim == 5
    batch = next(iter(trainer.train_dataset_fn(0, None)))
    assert batch.metadata.shape == (2, 3, 5)
    np.testing.assert_array_equal(tf.reduce_sum(batch.metadata, -1), np.ones((2, 3)))  # one alphabet per class
    assert [r["step"] for r in result.history] == [2] and "val/accuracy" in result.history[-1]
    assert 0.0 <= result.test_results[None]["accuracy"][0] <= 1.0
    restored = workdir.restore(config.workdir)  # rebuilt from config.json's data spec, metadata size included
    assert restored.learner.metadata_dim == 5


def test_class_metadata_errors_name_what_was_received(tmp_path):
    from PIL import Image

    for name in ("a", "b", "c", "d"):
        (tmp_path / "f" / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "f" / name / f"{i}.png")
    config = quick(tmp_path, dataset="folder", data_dir=str(tmp_path / "f"), ways=2, shots=1, queries=1,
                   task_metadata=True)
    with pytest.raises(ValueError, match=r"`task_metadata` needs classes with metadata of one size .*"
                                         r"a folder: its metadata.json\). Received: dataset='folder', data_dir=.*"
                                         r"metadata_dim by part=\{'train': None, 'val': None, 'test': None\}"):
        build_trainer(config, verbose=False)
    with pytest.raises(ValueError, match=r"needs export_dir=''.*Received: export_dir='saved_models', "
                                         r"dataset='omniglot'"):
        MetaTrainConfig(variant="cnp", dataset="omniglot", data_dir="x", task_metadata=True)
    with pytest.raises(ValueError, match=r"Received: variant='protonet', dataset='omniglot'"):
        MetaTrainConfig(variant="protonet", dataset="omniglot", data_dir="x", task_metadata=True, export_dir="")
    with pytest.raises(ValueError, match=r"Received: variant='cnp', dataset='mini_imagenet'"):
        MetaTrainConfig(variant="cnp", dataset="mini_imagenet", data_dir="x", task_metadata=True, export_dir="")
    hypernet = MetaTrainConfig(variant="hypernet", dataset="omniglot", data_dir="x", task_metadata=True, export_dir="")
    assert hypernet.metadata_dim is None  # classification: the size comes from the data
