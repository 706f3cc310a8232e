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

Damage after the fact (a truncated or corrupted file, a missing index, a lost or
garbled state file) is caught at resume: `intact_checkpoint` reads every tensor
of each candidate, newest first (TensorFlow checks each tensor's CRC32C), moves
a damaged one aside into `checkpoints/damaged/` naming what was wrong, and
falls back to the newest intact one. A workdir whose checkpoints are all
damaged is an error (`DamagedCheckpointError`), never a silent fresh start.
"""

import json
import os
import pathlib
import re
import shutil
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


DAMAGED_DIR = "checkpoints/damaged"  # damaged checkpoints, moved aside at resume (kept for inspection)
_CHECKPOINT_INDEX = re.compile(r"^(.+)-(\d+)\.index$")


class WorkdirConfigMismatchError(ValueError):
    """The workdir belongs to a run with a different configuration."""


class DamagedCheckpointError(RuntimeError):
    """Every checkpoint of a workdir is damaged: resuming would silently start from scratch."""


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
    """Path prefix of the latest complete checkpoint in `workdir` (as the `checkpoint` state file names it), or None.

    Not checked for damage; `intact_checkpoint` is.
    """
    try:
        return tf.train.latest_checkpoint(str(pathlib.Path(workdir) / CHECKPOINT_DIR))
    except (tf.errors.OpError, ValueError):  # a garbled state file: no answer from it
        return None


def checkpoint_candidates(directory) -> list:
    """Every checkpoint in `directory`, newest (highest number) first, as path prefixes.

    The union of what the `checkpoint` state file lists and the `<prefix>-<n>.index`
    files present, so that a lost or garbled state file, or a checkpoint whose
    index is gone, still shows up (to be checked by `checkpoint_problem`).

    Args:
        directory: a checkpoint directory (e.g. `<workdir>/checkpoints`).

    Returns:
        A list of path prefixes (`.../ckpt-<n>`), highest `n` first.
    """
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        return []
    prefixes = set()
    try:
        state = tf.train.get_checkpoint_state(str(directory))
    except (tf.errors.OpError, ValueError):
        state = None
    if state is not None:
        for path in list(state.all_model_checkpoint_paths) + [state.model_checkpoint_path]:
            if path:
                path = pathlib.Path(path)
                prefixes.add(str(path if path.is_absolute() else directory / path))
    for child in directory.iterdir():
        if _CHECKPOINT_INDEX.match(child.name):
            prefixes.add(str(child)[: -len(".index")])

    def number(prefix):
        tail = prefix.rsplit("-", 1)[-1]
        return int(tail) if tail.isdigit() else -1

    return sorted(prefixes, key=number, reverse=True)


def checkpoint_problem(prefix) -> str | None:
    """What is wrong with the checkpoint at `prefix`, or None if it is intact.

    Reads every tensor (TensorFlow checks each one's CRC32C), so a truncated or
    corrupted data file, a missing or garbled index are all found.

    Args:
        prefix: a checkpoint path prefix (`.../ckpt-<n>`).

    Returns:
        None, or one line naming the problem.
    """
    try:
        reader = tf.train.load_checkpoint(str(prefix))
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except Exception as error:  # noqa: BLE001 - OpError, IndexError, ValueError: any failure to read is damage
        lines = str(error).strip().splitlines()
        return f"{type(error).__name__}: {lines[0] if lines else ''}"
    return None


def intact_checkpoint(directory, log=print, move_damaged: bool = True):
    """The newest intact checkpoint of `directory`; damaged newer ones are moved aside.

    Each damaged checkpoint's files go to `<directory>/damaged/` (kept for
    inspection, never picked up again) and `log` gets a line naming it and
    what was wrong.

    Args:
        directory: a checkpoint directory (e.g. `<workdir>/checkpoints`).
        log: `(line) -> None` for the damage reports.
        move_damaged: move damaged checkpoints aside (the chief of a
            multi-worker run does; the other workers only skip them).

    Returns:
        The path prefix of the newest intact checkpoint, or None if the
        directory holds no checkpoint at all.

    Raises:
        DamagedCheckpointError: if it holds checkpoints and every one is damaged.
    """
    directory = pathlib.Path(directory)
    damaged = []
    for prefix in checkpoint_candidates(directory):
        problem = checkpoint_problem(prefix)
        if problem is None:
            if damaged:
                log(f"Resuming from {prefix}, the newest intact checkpoint.")
                if move_damaged:  # the state file names the intact checkpoints only
                    intact = [c for c in checkpoint_candidates(directory) if pathlib.Path(c + ".index").exists()]
                    tf.compat.v1.train.update_checkpoint_state(str(directory), prefix,
                                                               all_model_checkpoint_paths=intact[::-1])
            return prefix
        damaged.append(f"{prefix} ({problem})")
        moved = f"moved its files to {_move_aside(prefix, directory / 'damaged')} and " if move_damaged else ""
        log(f"Checkpoint {prefix} is damaged ({problem}); {moved}falling back to an older checkpoint.")
    if damaged:
        raise DamagedCheckpointError(
            f"Every checkpoint in {str(directory)!r} is damaged; refusing to start from scratch over them (their "
            f"files are in {str(directory / 'damaged')!r}). Choose another --workdir to start afresh. Received: "
            + "; ".join(damaged)
        )
    return None


def _move_aside(prefix, destination) -> pathlib.Path:
    destination = pathlib.Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    prefix = pathlib.Path(prefix)
    for path in prefix.parent.glob(prefix.name + ".*"):
        os.replace(path, destination / path.name)
    return destination


def remove_checkpoint_files(prefix) -> None:
    """Deletes a checkpoint's files (`<prefix>.index`, `.data-*`) and its writer's temporary ones (`<prefix>_temp*`).

    What a failed save leaves behind is removed so that no later resume can pick up a partial checkpoint.
    """
    prefix = pathlib.Path(prefix)
    for path in list(prefix.parent.glob(prefix.name + ".*")) + list(prefix.parent.glob(prefix.name + "_temp*")):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


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
    if checkpoint_candidates(workdir / CHECKPOINT_DIR) and not config.resume:
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
