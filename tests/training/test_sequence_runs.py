"""`run_sequences` (MANN / LSTM on label-offset sequences): resume, test by instance, export, bad configs."""

import json

import numpy as np
import pytest

from tfmeta.data.sources import ClassDataset
from tfmeta.data.splits import ClassSplit
from tfmeta.training.config import MetaTrainConfig
from tfmeta.training.sequences import format_by_instance, run_sequences

NETWORK = dict(controller_units=8, memory_slots=6, memory_width=3, read_heads=2)


@pytest.fixture(scope="module")
def split():
    rng = np.random.default_rng(0)
    make = lambda n: ClassDataset.from_arrays(rng.uniform(size=(n * 4, 4, 4, 1)).astype(np.float32),
                                              np.repeat(np.arange(n), 4))
    return ClassSplit(make(6), make(3), make(3))


def config(workdir, **changes):
    values = dict(variant="mann", dataset="folder", data_dir="unused", ways=3, shots=2, queries=1, meta_batch_size=4,
                  meta_lr=1e-2, num_iterations=4, eval_every=2, eval_episodes=4, workdir=str(workdir), export_dir="")
    return MetaTrainConfig(**{**values, **changes})


def _weights(result):
    return [v.numpy() for v in result.trainer.learner.meta_variables]


def _loop(workdir, split, num_iterations=4):
    """`run_sequences`'s trainer (the same learner, stream and optimizer), without its validation and test."""
    from tfmeta.training.loop import MetaTrainer
    from tfmeta.training.sequences import build_sequence_learner, sequence_dataset_fns

    cfg = config(workdir, num_iterations=num_iterations)
    train, _, _ = sequence_dataset_fns(cfg, split)
    return MetaTrainer(cfg, lambda: build_sequence_learner(cfg, split.train.image_shape, **NETWORK), train,
                       verbose=False)


def test_interrupted_and_resumed_training_equals_an_uninterrupted_one(split, tmp_path):
    first = _loop(tmp_path / "b", split)
    first.train(until_step=2)  # as if interrupted after step 2 (a checkpoint is saved)
    at_step_2 = [v.numpy() for v in first.learner.meta_variables]
    resumed = _loop(tmp_path / "b", split)
    resumed.train()
    straight = _loop(tmp_path / "a", split)
    straight.train()
    assert int(resumed.step.numpy()) == 4
    for a, b in zip(straight.learner.meta_variables, resumed.learner.meta_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)
    assert max(np.abs(a - b.numpy()).max() for a, b in zip(at_step_2, resumed.learner.meta_variables)) > 1e-4


@pytest.mark.slow  # ~1 min: three full runs; the default suite resumes through the loop above
def test_resumed_run_equals_an_uninterrupted_one_and_exports(split, tmp_path, capsys):
    interrupted = run_sequences(config(tmp_path / "b", num_iterations=2), split=split, network_kwargs=NETWORK,
                                verbose=False)
    at_step_2 = _weights(interrupted)
    resumed = run_sequences(config(tmp_path / "b", export_dir=str(tmp_path / "exports")), split=split,
                            network_kwargs=NETWORK)
    straight = run_sequences(config(tmp_path / "a"), split=split, network_kwargs=NETWORK, verbose=False)
    assert int(resumed.trainer.step.numpy()) == 4
    for a, b in zip(_weights(straight), _weights(resumed)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert max(np.abs(a - b).max() for a, b in zip(at_step_2, _weights(resumed))) > 1e-4  # steps 3-4 did train
    printed = capsys.readouterr().out
    assert "Resuming from step 2" in printed and "instance" in printed and "Exported to" in printed
    assert set(resumed.test_results) >= {"accuracy", "instance_1", "instance_2", "loss"}
    card = json.loads((next((tmp_path / "exports" / "mann_folder_3way_2shot").iterdir()) / "assets" /
                       "tfmeta.json").read_text())
    assert card["kind"] == "recurrent_classifier" and card["evaluation"]["episodes"] == 4


def test_format_by_instance_puts_the_paper_beside_ours():
    results = {f"instance_{k}": (0.5, 0.01) for k in range(1, 11)}
    results.update(accuracy=(0.6, 0.02), num_episodes=600)
    text = format_by_instance(results, "mann", ways=5)
    assert "50.0 ±  1.0" in text and "82.8" in text and "49.5" in text and "57.3" in text


@pytest.mark.parametrize("changes, message", [
    (dict(variant="maml"), "Sequence runs train one of"),
    (dict(dataset="sinusoid"), "Sequence runs read image classes"),
])
def test_bad_configs_are_named(split, tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        run_sequences(config(tmp_path, **changes), split=split)


def test_the_episodic_runner_refuses_sequence_learners(tmp_path):
    from tfmeta.training import run

    with pytest.raises(ValueError, match="mann trains on label-offset sequences: use python -m trainers.mann"):
        run(config(tmp_path), verbose=False)
