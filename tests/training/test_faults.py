"""Training under faults: damaged checkpoints, a failing writer, SIGTERM (preemption), kill -9.

Each damaged-checkpoint case corrupts the newest checkpoint of a real run the way a
crash or a bad disk does, then resumes: the run must name the damaged checkpoint, fall
back to the newest intact one and finish on the same trajectory as an uninterrupted run.
The process-level cases (SIGTERM, kill -9 at random moments) run the training in
subprocesses and compare the final checkpoints bitwise with an uninterrupted run's.
"""

import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tfmeta.training import checkpoints
from tfmeta.training.config import MetaTrainConfig
from tfmeta.training.loop import MetaTrainer
from tfmeta.training.preemption import PREEMPTED_EXIT_CODE, SigtermWatcher

ROOT = pathlib.Path(__file__).resolve().parents[2]
PREEMPT_RUN = pathlib.Path(__file__).with_name("preempt_run.py")


def make_trainer(tiny, workdir, num_iterations=20, stream=None, verbose=False):
    config = MetaTrainConfig(num_iterations=num_iterations, eval_every=5, eval_episodes=8, eval_inner_steps=1,
                             workdir=str(workdir), meta_lr=1e-2)
    return MetaTrainer(config, tiny.learner, stream or tiny.stream, verbose=verbose)


def values(trainer):
    return [v.numpy() for v in trainer.checkpoint.model.variables] + [v.numpy() for v in trainer.optimizer.variables]


def assert_same(a, b):
    for x, y in zip(values(a), values(b), strict=True):
        np.testing.assert_array_equal(x, y)


def _ckpt(workdir, step):
    return pathlib.Path(workdir) / checkpoints.CHECKPOINT_DIR / f"ckpt-{step}"


def _truncate_data(prefix):
    data = next(pathlib.Path(prefix).parent.glob(pathlib.Path(prefix).name + ".data-*"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])


def _flip_a_byte(prefix):
    data = next(pathlib.Path(prefix).parent.glob(pathlib.Path(prefix).name + ".data-*"))
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 3] ^= 0xFF
    data.write_bytes(bytes(raw))


def _remove_index(prefix):
    pathlib.Path(str(prefix) + ".index").unlink()


def _garble_index(prefix):
    pathlib.Path(str(prefix) + ".index").write_bytes(b"\x00garbage")


DAMAGE = {"truncated data": _truncate_data, "corrupted byte": _flip_a_byte, "missing index": _remove_index,
          "garbled index": _garble_index}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_latest_checkpoint_falls_back_to_the_newest_intact_one(tiny, tmp_path, damage, capsys):
    full = make_trainer(tiny, tmp_path / "full")
    full.train()
    run = make_trainer(tiny, tmp_path / "run", num_iterations=15, verbose=True)
    run.train()  # checkpoints at steps 5, 10, 15
    DAMAGE[damage](_ckpt(tmp_path / "run", 15))
    capsys.readouterr()

    resumed = make_trainer(tiny, tmp_path / "run", verbose=True)
    assert resumed.restore() == 10
    out = capsys.readouterr().out
    assert f"Checkpoint {_ckpt(tmp_path / 'run', 15)} is damaged" in out, out
    assert "falling back" in out
    assert list((tmp_path / "run" / "checkpoints" / "damaged").glob("ckpt-15.*")), "damaged files kept aside"
    resumed.train()
    assert int(resumed.step.numpy()) == 20
    assert_same(full, resumed)  # bitwise: the same trajectory as the uninterrupted run


def test_a_lost_state_file_still_finds_the_checkpoints(tiny, tmp_path):
    run = make_trainer(tiny, tmp_path, num_iterations=10)
    run.train()
    (tmp_path / "checkpoints" / "checkpoint").unlink()  # the `checkpoint` state file
    resumed = make_trainer(tiny, tmp_path)
    assert resumed.restore() == 10  # never a silent start from scratch


def test_every_checkpoint_damaged_is_an_error_not_a_fresh_start(tiny, tmp_path):
    run = make_trainer(tiny, tmp_path, num_iterations=10)
    run.train()
    for step in (5, 10):
        _truncate_data(_ckpt(tmp_path, step))
    resumed = make_trainer(tiny, tmp_path)
    with pytest.raises(checkpoints.DamagedCheckpointError, match=r"Every checkpoint .* is damaged.*ckpt-10 \("):
        resumed.train()
    assert int(resumed.step.numpy()) == 0  # nothing trained over the damaged run


def test_a_failing_checkpoint_writer_leaves_no_partial_checkpoint(tiny, tmp_path, monkeypatch):
    full = make_trainer(tiny, tmp_path / "full")
    full.train()

    run = make_trainer(tiny, tmp_path / "run")
    original = run.checkpoint._write  # what CheckpointManager.save calls; it records the state file last

    def disk_full(file_prefix, options=None):
        if not file_prefix.endswith("ckpt-15"):
            return original(file_prefix, options=options)
        # The shards land, the disk fills up before the checkpoint is complete and recorded.
        _truncate_data(original(file_prefix, options=tf.train.CheckpointOptions()))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run.checkpoint, "_write", disk_full)
    with pytest.raises(OSError, match="No space left"):
        run.train()
    directory = tmp_path / "run" / "checkpoints"
    assert not list(directory.glob("ckpt-15*")), sorted(p.name for p in directory.iterdir())
    assert checkpoints.latest_checkpoint(tmp_path / "run").endswith("ckpt-10")
    monkeypatch.undo()

    resumed = make_trainer(tiny, tmp_path / "run")
    assert resumed.restore() == 10
    resumed.train()
    assert_same(full, resumed)


def test_sigterm_saves_at_the_current_step_and_resumes_on_the_same_trajectory(tiny, tmp_path, capsys):
    full = make_trainer(tiny, tmp_path / "full")
    full.train()

    run = make_trainer(tiny, tmp_path / "run", verbose=True)
    compiled, calls = run.train_step, []

    def step_then_sigterm(batch):  # the scheduler's SIGTERM arrives during the 7th step
        calls.append(1)
        if len(calls) == 7:
            os.kill(os.getpid(), signal.SIGTERM)
        return compiled(batch)

    run.train_step = step_then_sigterm
    previous = signal.getsignal(signal.SIGTERM)
    run.train()
    assert signal.getsignal(signal.SIGTERM) is previous  # the default handler is back after the run
    assert run.preempted and int(run.step.numpy()) == 7 and len(calls) == 7
    assert checkpoints.latest_checkpoint(tmp_path / "run").endswith("ckpt-7")  # saved at the current step
    assert "Preempted (SIGTERM) after step 7" in capsys.readouterr().out

    resumed = make_trainer(tiny, tmp_path / "run")
    assert resumed.restore() == 7
    resumed.train()
    assert not resumed.preempted
    assert_same(full, resumed)


def test_the_watcher_turns_sigterm_into_a_flag_only_while_active():
    previous = signal.getsignal(signal.SIGTERM)
    with SigtermWatcher() as watcher:
        assert watcher.installed and not watcher.received
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert watcher.received
    assert signal.getsignal(signal.SIGTERM) is previous


def _final_checkpoint(workdir):
    """Every tensor of a run's final checkpoint but the save counter (which counts saves, not steps)."""
    reader = tf.train.load_checkpoint(checkpoints.latest_checkpoint(workdir))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if "save_counter" not in name}


def _assert_same_checkpoints(a, b):
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")


MAML_RUN = ["-m", "trainers.maml", "--num_iterations=60", "--eval_every=3", "--meta_batch_size=4",
            "--eval_episodes=2", "--eval_inner_steps=1", "--export_dir="]


@pytest.mark.slow
def test_kill_9_ten_times_then_finish_equals_an_uninterrupted_run(tmp_path):
    """`kill -9` (no chance to save) at ten random moments of `trainers.maml`, then a run to the end."""
    subprocess.run([sys.executable, *MAML_RUN, f"--workdir={tmp_path / 'full'}"], check=True, cwd=ROOT,
                   env=_env(), capture_output=True)
    rng, killed_at = random.Random(0), []
    for _ in range(10):
        process = subprocess.Popen([sys.executable, *MAML_RUN, f"--workdir={tmp_path / 'run'}"], cwd=ROOT, env=_env(),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(3.0, 15.0))  # import and tracing take a few seconds, the training ~10 s
        process.kill()  # SIGKILL
        process.wait()
        latest = checkpoints.latest_checkpoint(tmp_path / "run")
        killed_at.append(latest and pathlib.Path(latest).name)
    assert any(killed_at), f"no kill landed after a checkpoint: {killed_at}"
    subprocess.run([sys.executable, *MAML_RUN, f"--workdir={tmp_path / 'run'}"], check=True, cwd=ROOT, env=_env(),
                   capture_output=True)
    _assert_same_checkpoints(_final_checkpoint(tmp_path / "full"), _final_checkpoint(tmp_path / "run"))


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["default", "mirrored"])
def test_sigterm_in_a_subprocess_exits_42_and_resumes_bitwise(tmp_path, strategy):
    """SIGTERM from outside (as a scheduler sends it), on one device and under MirroredStrategy on 2 logical CPUs."""
    command = [sys.executable, str(PREEMPT_RUN)]
    subprocess.run([*command, str(tmp_path / "full"), strategy, "60"], check=True, cwd=ROOT, env=_env(),
                   capture_output=True)
    process = subprocess.Popen([*command, str(tmp_path / "run"), strategy, "60"], cwd=ROOT, env=_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:  # wait until it trains, then preempt it
        if line.startswith("step 10/"):
            process.send_signal(signal.SIGTERM)
            break
    output = process.stdout.read()
    assert process.wait() == PREEMPTED_EXIT_CODE, output
    assert "Preempted (SIGTERM) after step" in output, output
    stopped = int(output.split("Preempted (SIGTERM) after step ")[1].split(":")[0])
    assert 10 <= stopped < 60
    assert checkpoints.latest_checkpoint(tmp_path / "run").endswith(f"ckpt-{stopped}")
    subprocess.run([*command, str(tmp_path / "run"), strategy, "60"], check=True, cwd=ROOT, env=_env(),
                   capture_output=True)
    _assert_same_checkpoints(_final_checkpoint(tmp_path / "full"), _final_checkpoint(tmp_path / "run"))
