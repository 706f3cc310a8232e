"""Workdir handling: atomic config.json, and what a half-written checkpoint does."""

import json

import pytest
import tensorflow as tf

from tfmeta.training import checkpoints
from tfmeta.training.config import MetaTrainConfig


def test_write_json_atomic_replaces_whole_file(tmp_path):
    path = tmp_path / "sub" / "config.json"
    checkpoints.write_json_atomic(path, {"a": 1})
    checkpoints.write_json_atomic(path, {"b": [1, 2]})
    assert json.loads(path.read_text()) == {"b": [1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]


def test_write_json_atomic_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "config.json"
    checkpoints.write_json_atomic(path, {"a": 1})
    with pytest.raises(TypeError):
        checkpoints.write_json_atomic(path, {"a": object()})  # not serialisable: fails mid-write
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_prepare_workdir_round_trips_config(tmp_path):
    config = MetaTrainConfig(workdir=str(tmp_path), ways=7, inner_lr=0.3)
    checkpoints.prepare_workdir(config)
    assert checkpoints.load_config(tmp_path) == config


def test_load_config_of_a_non_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="No config.json"):
        checkpoints.load_config(tmp_path)


def test_half_written_checkpoint_is_ignored(tmp_path):
    """A crash while saving leaves the `checkpoint` state file pointing to the last complete one.

    TensorFlow writes `ckpt-N.data-*` and `ckpt-N.index` first and updates the
    `checkpoint` state file last (temporary file + rename). We simulate a crash
    after the data was written but before the state file update: the manager's
    and `latest_checkpoint`'s answer is still the previous checkpoint, which
    restores fine. A truncated latest checkpoint (disk corruption) is an error
    on restore, not silently-wrong values.
    """
    variable = tf.Variable(1.0)
    checkpoint = tf.train.Checkpoint(v=variable)
    manager = tf.train.CheckpointManager(checkpoint, str(tmp_path / "checkpoints"), max_to_keep=3)
    good = manager.save(checkpoint_number=5)
    variable.assign(2.0)
    # The crash: shards of step 10 on disk, the state file not yet updated.
    checkpoint.write(str(tmp_path / "checkpoints" / "ckpt-10"))
    (tmp_path / "checkpoints" / "ckpt-10.index").write_bytes(b"garbage: half written")
    assert checkpoints.latest_checkpoint(tmp_path) == good
    fresh = tf.train.CheckpointManager(tf.train.Checkpoint(v=variable), str(tmp_path / "checkpoints"), max_to_keep=3)
    assert fresh.latest_checkpoint == good
    variable.assign(0.0)
    tf.train.Checkpoint(v=variable).restore(fresh.latest_checkpoint).assert_consumed()
    assert float(variable.numpy()) == 1.0
    with pytest.raises(Exception):  # DataLossError or similar: never a silent bad restore
        tf.train.Checkpoint(v=variable).restore(str(tmp_path / "checkpoints" / "ckpt-10"))
