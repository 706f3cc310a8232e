"""`tf.distribute` strategies and mixed precision for meta-training.

Semantics (the same at any replica count):

* The global meta-batch of step `s` (tasks `0..meta_batch_size-1`) is cut into
  one contiguous slice of `meta_batch_size / num_replicas` distinct tasks per
  replica (an error if it does not divide). Concatenating the slices gives
  exactly the single-device meta-batch of step `s`.
* Each replica computes the mean meta-gradient over its own tasks; the loop
  averages these across replicas (`ReduceOp.MEAN`), which equals the mean over
  the global meta-batch. One optimizer step with the unchanged learning rate
  (`meta_lr` is *not* scaled with the replica count), one step counter, one
  checkpoint (written by the chief).
* BatchNorm moving statistics (non-trainable state) are averaged across
  replicas the same way and assigned in cross-replica context, so every
  replica holds the same values.

Strategies (`make_strategy(name)`):

| name | what |
| --- | --- |
| `default` | one device (TensorFlow's default strategy) |
| `mirrored` | `MirroredStrategy` over all local GPUs (or the `devices` given) |
| `multi_worker` | `MultiWorkerMirroredStrategy`, cluster from `TF_CONFIG` |
| `tpu` | `TPUStrategy` with `TPUClusterResolver` (untested here: no TPU) |
"""

import contextlib
import json
import os
import pathlib
import shutil
import tempfile

import keras
import tensorflow as tf

from tfmeta.training.config import MIXED_PRECISION_POLICIES, STRATEGIES


def configure_logical_devices(count: int, device_type: str = "CPU") -> list:
    """Splits the first physical `device_type` device into `count` logical ones.

    Lets a single-CPU machine run `MirroredStrategy` over several replicas
    (tests, benchmarks). Must run before TensorFlow initialises its devices
    (before the first op or `tf.config.list_logical_devices`).

    Args:
        count: number of logical devices, >= 1.
        device_type: `"CPU"` or `"GPU"`.

    Returns:
        The names of the logical devices, e.g. `["/device:CPU:0", "/device:CPU:1"]`.

    Raises:
        ValueError: if `count` is not a positive integer or there is no such device.
        RuntimeError: if TensorFlow has already initialised its devices.

    Example:

    ```python
    configure_logical_devices(2)
    strategy = make_strategy("mirrored")   # 2 replicas on one CPU
    ```
    """
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"`count` must be a positive integer. Received: count={count!r}")
    physical = tf.config.list_physical_devices(device_type)
    if not physical:
        raise ValueError(f"No physical {device_type} device to split. Received: device_type={device_type!r}")
    if device_type == "GPU":
        config = [tf.config.LogicalDeviceConfiguration(memory_limit=1024) for _ in range(count)]
    else:
        config = [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
    try:
        tf.config.set_logical_device_configuration(physical[0], config)
    except RuntimeError as error:
        raise RuntimeError(
            "configure_logical_devices must run before TensorFlow initialises its devices (call it first, "
            f"before any op). Received: count={count}"
        ) from error
    return [d.name for d in tf.config.list_logical_devices(device_type)]


def make_strategy(name: str = "default", devices=None) -> tf.distribute.Strategy:
    """Builds the `tf.distribute.Strategy` called `name`.

    Args:
        name: one of `STRATEGIES`: `"default"` (one device), `"mirrored"`
            (all local GPUs, else every logical CPU device; or `devices`),
            `"multi_worker"` (`MultiWorkerMirroredStrategy`, cluster from the
            `TF_CONFIG` environment variable), `"tpu"` (`TPUStrategy` on the
            TPU that `TPUClusterResolver` finds; untested here).
        devices: for `"mirrored"` only: device names (a list or a
            comma-separated string such as `"GPU:0,GPU:1"` or
            `"CPU:0,CPU:1"` after `configure_logical_devices(2)`).

    Returns:
        The strategy (for `"default"`, `tf.distribute.get_strategy()`).

    Raises:
        ValueError: on an unknown `name`, `devices` with another strategy,
            or `"tpu"` without a TPU.

    Example:

    ```python
    strategy = make_strategy("mirrored", devices="GPU:0,GPU:1")
    strategy.num_replicas_in_sync   # 2
    ```
    """
    if name not in STRATEGIES:
        raise ValueError(f"`strategy` must be one of {', '.join(STRATEGIES)}. Received: strategy={name!r}")
    devices = parse_devices(devices)
    if devices and name != "mirrored":
        raise ValueError(f"`devices` applies to the 'mirrored' strategy only. Received: strategy={name!r}, "
                         f"devices={devices!r}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if not devices and not tf.config.list_logical_devices("GPU"):
            # No GPU: every logical CPU (one, unless `configure_logical_devices` split it).
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices or None)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    try:  # Untested here (no TPU): the standard TPUStrategy set-up.
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    except (ValueError, RuntimeError) as error:
        raise ValueError(f"No TPU found for strategy='tpu' ({error}). Received: strategy={name!r}") from error
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def parse_devices(devices) -> list:
    """`"GPU:0,GPU:1"` or a list -> list of device names (empty for None or "")."""
    if devices is None:
        return []
    if isinstance(devices, str):
        devices = devices.split(",")
    return [d.strip() for d in devices if d.strip()]


def check_meta_batch_size(meta_batch_size: int, strategy: tf.distribute.Strategy) -> int:
    """The per-replica share of the global meta-batch.

    Returns:
        `meta_batch_size // strategy.num_replicas_in_sync`.

    Raises:
        ValueError: if the meta-batch does not divide evenly among the replicas.
    """
    replicas = strategy.num_replicas_in_sync
    if meta_batch_size % replicas:
        raise ValueError(
            f"`meta_batch_size` must be divisible by the number of replicas ({replicas}) so that every replica "
            f"gets the same number of distinct tasks. Received: meta_batch_size={meta_batch_size}"
        )
    return meta_batch_size // replicas


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes checkpoints, summaries and exports.

    True except on the non-chief workers of a multi-worker cluster (the chief
    is `task_type` `"chief"`, or worker 0 when the cluster has no chief).
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type is None:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "chief" or (task_type == "worker" and task_id == 0 and not has_chief)


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """Whether `strategy` spans several processes (`MultiWorkerMirroredStrategy` over a cluster)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    resolver = getattr(strategy, "cluster_resolver", None)
    return bool(resolver is not None and resolver.cluster_spec().jobs)


def write_dir(workdir, strategy: tf.distribute.Strategy) -> pathlib.Path:
    """Where this process writes: `workdir` on the chief; on the other workers
    a directory of their own under the system's temporary directory, not yet
    created (they must save too: checkpointing mirrored variables is a
    collective step; create it before writing and delete it with
    `remove_write_dir` at the end)."""
    if is_chief(strategy):
        return pathlib.Path(workdir)
    resolver = strategy.cluster_resolver
    name = f"tfmeta_{resolver.task_type}{resolver.task_id}_{os.getpid()}"
    return pathlib.Path(tempfile.gettempdir()) / name


def remove_write_dir(path, workdir) -> None:
    """Deletes a non-chief worker's temporary directory (never `workdir`)."""
    if pathlib.Path(path).resolve() != pathlib.Path(workdir).resolve():
        shutil.rmtree(path, ignore_errors=True)


def set_mixed_precision(policy: str) -> None:
    """Sets Keras's global dtype policy before the learner is built.

    With `"mixed_float16"` / `"mixed_bfloat16"` the layers compute in 16 bits
    while their variables (and the optimizer's) stay float32; tfmeta's losses
    are computed in float32 (`task_loss_and_metrics` casts the outputs).
    `"none"` restores float32.

    Raises:
        ValueError: on an unknown policy.
    """
    if policy not in MIXED_PRECISION_POLICIES:
        raise ValueError(
            f"`mixed_precision` must be one of {', '.join(MIXED_PRECISION_POLICIES)}. "
            f"Received: mixed_precision={policy!r}"
        )
    keras.mixed_precision.set_dtype_policy("float32" if policy == "none" else policy)


def tf_config_for(cluster: dict, task_type: str, task_index: int) -> str:
    """The `TF_CONFIG` JSON of one task (for launch scripts and tests).

    Example:

    ```python
    os.environ["TF_CONFIG"] = tf_config_for(
        {"worker": ["host1:12345", "host2:12345"]}, "worker", 0)
    ```
    """
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": task_index}})



@contextlib.contextmanager
def mixed_precision_scope(policy: str):
    """Sets Keras's global dtype policy (`set_mixed_precision`) inside the
    block and restores the previous one after it: build the learner inside.

    Example:

    ```python
    with mixed_precision_scope("mixed_bfloat16"):
        model = tfmeta.models.conv4(ways=5)   # bfloat16 compute, float32 variables
    ```
    """
    previous = keras.mixed_precision.global_policy()
    set_mixed_precision(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
