"""MetaTrainer: compiled once, resumes exactly, stops on NaN keeping a good checkpoint."""

import json

import numpy as np
import pytest
import tensorflow as tf

from tfmeta.training import checkpoints
from tfmeta.training.config import MetaTrainConfig
from tfmeta.training.loop import MetaTrainer, NonFiniteLossError


def make_trainer(tiny, workdir, num_iterations, eval_every=5, stream=None, eval_dataset=None, verbose=False,
                 progress_seconds=10.0, **config):
    config = MetaTrainConfig(num_iterations=num_iterations, eval_every=eval_every, eval_episodes=8,
                             eval_inner_steps=1, workdir=str(workdir), meta_lr=1e-2, **config)
    return MetaTrainer(config, tiny.learner, stream or tiny.stream, eval_dataset=eval_dataset, verbose=verbose,
                       progress_seconds=progress_seconds)


def values(trainer):
    return [v.numpy() for v in trainer.checkpoint.model.variables] + [
        v.numpy() for v in trainer.optimizer.variables
    ]


def test_step_is_traced_once_for_same_shaped_batches(tiny, tmp_path):
    trainer = make_trainer(tiny, tmp_path, num_iterations=12)
    trainer.train()
    assert trainer.trace_count == 1
    assert int(trainer.step.numpy()) == 12


def test_training_reduces_the_loss(tiny, tmp_path):
    # Sinusoids shifted up by 5: the initial learner (outputs near 0) has a loss near
    # 25 + E[A^2]/2; meta-learning the offset brings it down to the sinusoid variance.
    shifted = lambda start, ctx: tiny.stream(start, ctx).map(lambda e: type(e)(e[0], e[1] + 5.0, e[2], e[3] + 5.0))
    trainer = make_trainer(tiny, tmp_path, num_iterations=100, eval_every=10, stream=shifted)
    history = trainer.train()
    assert [r["step"] for r in history] == list(range(10, 101, 10))
    assert history[0]["loss"] > 15.0, history[0]
    assert history[-1]["loss"] < 6.0, history[-1]


def test_resume_after_stop_equals_uninterrupted_run(tiny, tmp_path):
    full = make_trainer(tiny, tmp_path / "full", num_iterations=20)
    full_history = full.train()

    first = make_trainer(tiny, tmp_path / "split", num_iterations=10)
    first.train()
    second = make_trainer(tiny, tmp_path / "split", num_iterations=20)
    second_history = second.train()

    assert int(second.step.numpy()) == 20
    for a, b in zip(values(full), values(second)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    np.testing.assert_allclose(full_history[-1]["loss"], second_history[-1]["loss"], atol=1e-6)


def test_resume_after_crash_restarts_from_last_checkpoint(tiny, tmp_path):
    full = make_trainer(tiny, tmp_path / "full", num_iterations=20)
    full.train()

    crashing = make_trainer(tiny, tmp_path / "crash", num_iterations=20,
                            stream=lambda start, ctx: tiny.stream(start, ctx, stop_at_step=13))
    with pytest.raises(RuntimeError, match="stream ended at step 13"):
        crashing.train()
    assert checkpoints.latest_checkpoint(tmp_path / "crash").endswith("ckpt-10")

    resumed = make_trainer(tiny, tmp_path / "crash", num_iterations=20)
    assert resumed.restore() == 10
    resumed.train()
    for a, b in zip(values(full), values(resumed)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tiny, tmp_path):
    trainer = make_trainer(tiny, tmp_path, num_iterations=20,
                           stream=lambda start, ctx: tiny.stream(start, ctx, nan_at_step=7))
    with pytest.raises(NonFiniteLossError, match=r"meta-loss became nan at step 7; kept the last good checkpoint at .*ckpt-5"):
        trainer.train()
    assert int(trainer.step.numpy()) == 7  # the bad step was not applied
    assert all(np.isfinite(v).all() for v in values(trainer))
    assert checkpoints.latest_checkpoint(tmp_path).endswith("ckpt-5")  # nothing saved after the NaN

    reloaded = make_trainer(tiny, tmp_path, num_iterations=20)
    assert reloaded.restore() == 5
    assert all(np.isfinite(v).all() for v in values(reloaded))


def test_nan_before_any_checkpoint_says_so(tiny, tmp_path):
    trainer = make_trainer(tiny, tmp_path, num_iterations=20,
                           stream=lambda start, ctx: tiny.stream(start, ctx, nan_at_step=2))
    with pytest.raises(NonFiniteLossError, match="at step 2; no checkpoint had been saved yet"):
        trainer.train()


def test_config_json_is_written_and_a_different_config_is_refused(tiny, tmp_path):
    make_trainer(tiny, tmp_path, num_iterations=5).train()
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["num_iterations"] == 5 and saved["workdir"] == str(tmp_path) and saved["meta_lr"] == 1e-2
    assert not list(tmp_path.glob(".config.json.*"))  # no temporary file left

    with pytest.raises(checkpoints.WorkdirConfigMismatchError, match=r"inner_lr=0\.5 \(workdir has 0\.01\)"):
        make_trainer(tiny, tmp_path, num_iterations=5, inner_lr=0.5).train()
    with pytest.raises(FileExistsError, match="resume=False"):
        make_trainer(tiny, tmp_path, num_iterations=10, resume=False).train()
    # Longer runs of the same configuration resume.
    trainer = make_trainer(tiny, tmp_path, num_iterations=10)
    trainer.train()
    assert int(trainer.step.numpy()) == 10
    assert json.loads((tmp_path / "config.json").read_text())["num_iterations"] == 10


def test_validation_and_tensorboard_scalars(tiny, tmp_path):
    eval_dataset = lambda: tiny.stream(10**9, stop_at_step=10**9 + 2)
    history = make_trainer(tiny, tmp_path, num_iterations=10, eval_dataset=eval_dataset).train()
    assert {"val/mse_before", "val/mse_after", "val/loss_before", "loss", "mse"} <= set(history[-1])
    assert history[-1]["val/mse_before"] != history[-1]["val/mse_after"]
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    tags = set()
    for record in tf.compat.v1.train.summary_iterator(str(events[0])):
        tags |= {v.tag for v in record.summary.value}
    assert {"train/loss", "val/mse_before", "val/mse_after"} <= tags


def test_progress_lines_between_evaluations(tiny, tmp_path, capsys):
    # progress_seconds=0: a progress line after every step (the trainers use 10 s).
    make_trainer(tiny, tmp_path, num_iterations=6, eval_every=3, verbose=True, progress_seconds=0.0).train()
    lines = capsys.readouterr().out.splitlines()
    progress = [line for line in lines if "steps/s" in line]
    assert len(progress) == 6, lines
    assert progress[0].startswith("step 1/6 | ") and " | loss " in progress[0] and " | ETA " in progress[0]
    assert sum(line.startswith("step 3/6 | loss") for line in lines) == 1  # the evaluation line


def test_a_built_learner_is_checked(tmp_path):
    with pytest.raises(TypeError, match="must return a tfmeta Learner. Received: str"):
        MetaTrainer(MetaTrainConfig(workdir=str(tmp_path)), lambda: "maml", None)


def _scripted_validation(trainer, values):
    """Validation returns `values` in turn (a known curve), as `val/mse_after` (lower is better)."""
    curve = iter(values)
    trainer.validate = lambda: {"val/mse_after": next(curve)}


def test_select_best_keeps_the_checkpoint_of_the_best_validation(tiny, tmp_path):
    trainer = make_trainer(tiny, tmp_path, num_iterations=25, eval_every=5, select="best")
    _scripted_validation(trainer, [5.0, 3.0, 4.0, 2.5, 6.0])  # best at the 4th evaluation: step 20
    trainer.train()
    assert int(trainer.step.numpy()) == 25
    best = json.loads((tmp_path / "checkpoints" / "best" / "best.json").read_text())
    assert best == {"step": 20, "value": 2.5, "metric": "val/mse_after", "evaluations_since": 1}
    last = values(trainer)
    assert trainer.restore_best() == 20
    restored = values(trainer)
    assert any(not np.array_equal(a, b) for a, b in zip(last, restored))  # not the last parameters
    replay = make_trainer(tiny, tmp_path / "replay", num_iterations=20, eval_every=5)
    replay.train()
    for a, b in zip(values(replay), restored):  # the parameters of step 20, exactly
        np.testing.assert_array_equal(a, b)


def test_patience_stops_early_and_resume_keeps_the_count(tiny, tmp_path):
    trainer = make_trainer(tiny, tmp_path, num_iterations=50, eval_every=5, patience=2)
    _scripted_validation(trainer, [5.0, 3.0, 4.0, 3.5])
    trainer.train()
    assert int(trainer.step.numpy()) == 20  # evaluations at 15 and 20 did not beat step 10's: stop
    best = json.loads((tmp_path / "checkpoints" / "best" / "best.json").read_text())
    assert (best["step"], best["evaluations_since"]) == (10, 2)
    assert checkpoints.latest_checkpoint(tmp_path).endswith("ckpt-20")
