"""Run in its own process by test_mann.py: the MANN under MirroredStrategy on 2 logical CPUs vs one device.

Prints one JSON line (prefixed `RESULT `) of measured differences; the test asserts on them.
Logical devices must be configured before TensorFlow initialises, hence a fresh process.
Compared: the parameters after one compiled step of the loop (SGD: the update is the
reduced meta-gradient times the learning rate; Adam would hide a wrong gradient scale).

    python tests/learners/recurrent/mirrored_mann_check.py <workdir>
"""

import json
import pathlib
import sys

from tfmeta.training import distribute

distribute.configure_logical_devices(2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfmeta.data.episode import as_episode  # noqa: E402
from tfmeta.data.sequences import sequence_dataset  # noqa: E402
from tfmeta.data.sources import ClassDataset  # noqa: E402
from tfmeta.learners import registry  # noqa: E402
from tfmeta.learners.recurrent import memory_network  # noqa: E402
from tfmeta.training.config import MetaTrainConfig  # noqa: E402
from tfmeta.training.loop import MetaTrainer  # noqa: E402

WAYS, INSTANCES, META_BATCH, STEPS = 3, 2, 4, 1


def trainer(strategy, workdir):
    rng = np.random.default_rng(0)
    data = ClassDataset.from_arrays(rng.uniform(size=(8 * 3, 4, 4, 1)).astype(np.float32), np.repeat(np.arange(8), 3))
    config = MetaTrainConfig(dataset="folder", data_dir="unused", variant="mann", ways=WAYS, shots=INSTANCES,
                             queries=1, meta_batch_size=META_BATCH, meta_lr=0.1, num_iterations=STEPS,
                             eval_every=STEPS, eval_episodes=4, workdir=str(workdir))
    build = lambda: registry.build("mann", memory_network(WAYS, (4, 4, 1), controller_units=8, memory_slots=6,
                                                          memory_width=3, read_heads=2), instances=INSTANCES)
    stream = lambda start, ctx: sequence_dataset(data, WAYS, INSTANCES, META_BATCH, seed=3, start_step=start,
                                                 input_context=ctx)
    return MetaTrainer(config, build, stream, strategy=strategy, verbose=False,
                       build_optimizer=lambda: keras.optimizers.SGD(0.1)), stream


def one_step(t, stream):
    """The loop's compiled step on the step-0 meta-batch (SGD: the update is -lr * the reduced meta-gradient)."""
    batch = next(iter(t.strategy.distribute_datasets_from_function(lambda ctx: stream(0, ctx))))
    _, metrics = t.train_step(as_episode(batch))
    return float(metrics["loss"])


if __name__ == "__main__":
    workdir = pathlib.Path(sys.argv[1])
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    single, single_stream = trainer(tf.distribute.get_strategy(), workdir / "single")
    multi, multi_stream = trainer(mirrored, workdir / "mirrored")
    initial = [v.numpy() for v in single.learner.meta_variables]
    l1, l2 = one_step(single, single_stream), one_step(multi, multi_stream)
    changes = [a.numpy() - b for a, b in zip(single.learner.meta_variables, initial)]
    diffs = [a.numpy() - b.numpy() for a, b in zip(single.learner.meta_variables, multi.learner.meta_variables)]
    result = {
        "replicas": mirrored.num_replicas_in_sync,
        "loss_diff": abs(l1 - l2),
        "param_max_change": max(float(np.abs(c).max()) for c in changes),
        # Relative to each variable's update: an update scaled by the replica count (sum, not mean) fails.
        "update_max_rel_diff": max(float(np.abs(d).max() / max(np.abs(c).max(), 1e-6)) for d, c in zip(diffs, changes)),
        "step": int(multi.step.numpy()),
    }
    print("RESULT " + json.dumps(result), flush=True)
