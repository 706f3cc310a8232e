"""The run directory: `config.json` (written atomically) and checkpoints.

Layout of a workdir::

    <workdir>/config.json          the resolved MetaTrainConfig, and under "data" the
                                   data spec (input shape, preprocessing) of the run
    <workdir>/checkpoints/         tf.train.CheckpointManager (ckpt-<step>.*, `checkpoint`)
    <workdir>/checkpoints/best/    the checkpoint with the best validation metric, and
                                   best.json (its step, the metric, its value)
    <workdir>/tensorboard/         tf.summary scalars

Checkpoints are safe against a crash while saving: TensorFlow writes a
checkpoint's shards into a temporary directory, then merges them into
`ckpt-<step>.index` / `.data-*`, and only then rewrites the small `checkpoint`
state file (write to a temporary file + rename). `latest_checkpoint` reads that
state file, so a half-written `ckpt-<step>` is never picked up: resuming uses
the previous complete checkpoint (tests/training/test_checkpoints.py shows it).
"""

import json
import os
import pathlib
import tempfile

import tensorflow as tf

from tfmeta.training.config import MetaTrainConfig

CONFIG_FILE = "config.json"
DATA_KEY = "data"  # config.json's entry for the data spec (not a config field)
PAPER_KEY = "paper"  # config.json's entry for the preset's published figure (not a config field)
CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "checkpoints/best"  # the checkpoint with the best validation metric, and BEST_FILE
BEST_FILE = "best.json"
TENSORBOARD_DIR = "tensorboard"


class WorkdirConfigMismatchError(ValueError):
    """The workdir belongs to a run with a different configuration."""


def write_json_atomic(path, value) -> None:
    """Writes `value` as JSON to `path` atomically (temporary file + `os.replace`).

    A crash leaves either the old file or the new one, never half of one.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(value, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _read_config_file(workdir) -> dict:
    path = pathlib.Path(workdir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"No {CONFIG_FILE} in the workdir (not a tfmeta run?). Received: workdir={str(workdir)!r}")
    return json.loads(path.read_text())


def load_config(workdir) -> MetaTrainConfig:
    """Reads the `MetaTrainConfig` of `<workdir>/config.json`.

    Raises:
        FileNotFoundError: if the workdir holds no `config.json`.
    """
    values = _read_config_file(workdir)
    values.pop(DATA_KEY, None)
    values.pop(PAPER_KEY, None)
    return MetaTrainConfig.from_dict(values)


def load_data_spec(workdir) -> dict | None:
    """The data spec recorded in `<workdir>/config.json` (None for runs from before it was recorded).

    Raises:
        FileNotFoundError: if the workdir holds no `config.json`.
    """
    return _read_config_file(workdir).get(DATA_KEY)


def load_selection(workdir) -> dict:
    """The best validation result so far (`best.json`: step, metric, value, evaluations_since); `{}` if none."""
    path = pathlib.Path(workdir) / BEST_DIR / BEST_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def latest_checkpoint(workdir):
    """Path prefix of the latest complete checkpoint in `workdir`, or None."""
    return tf.train.latest_checkpoint(str(pathlib.Path(workdir) / CHECKPOINT_DIR))


def prepare_workdir(config: MetaTrainConfig, data_spec: dict | None = None) -> None:
    """Checks that `config` may use its workdir, then writes `config.json`
    (the config's fields, and `data_spec` under `"data"`).

    * A fresh (or empty) workdir: writes `config.json`.
    * A workdir with checkpoints and `config.resume=False`: error (never
      overwrites a run).
    * A workdir whose `config.json` differs from `config` in a field that
      changes the training trajectory (anything but
      `config.RESUMABLE_FIELDS`): error naming the fields.

    Raises:
        WorkdirConfigMismatchError: on a different configuration.
        FileExistsError: if the workdir holds checkpoints and `resume` is False.
    """
    workdir = pathlib.Path(config.workdir)
    existing = workdir / CONFIG_FILE
    if existing.is_file():
        previous = load_config(workdir)
        differences = config.differences(previous)
        if differences:
            detail = ", ".join(f"{k}={new!r} (workdir has {old!r})" for k, (new, old) in sorted(differences.items()))
            raise WorkdirConfigMismatchError(
                f"The workdir {str(workdir)!r} holds a run with a different configuration; "
                f"refusing to overwrite it. Choose another --workdir or the same settings. Received: {detail}"
            )
    if latest_checkpoint(workdir) is not None and not config.resume:
        raise FileExistsError(
            f"The workdir {str(workdir)!r} already holds checkpoints and resume is off; refusing to overwrite "
            f"them. Pass --resume to continue that run or choose another --workdir. Received: resume=False"
        )
    values = config.to_dict()
    if data_spec is not None:
        values[DATA_KEY] = data_spec
    if config.preset is not None:
        from tfmeta.training.presets import PRESETS  # noqa: PLC0415 - presets import the config

        values[PAPER_KEY] = PRESETS[config.preset].paper
    write_json_atomic(existing, values)
