"""Run in its own process by test_distribute.py: MirroredStrategy on 2 logical CPUs vs one device.

Prints one JSON line (prefixed `RESULT `) of measured differences; the test asserts on them.
Logical devices must be configured before TensorFlow initialises, hence a fresh process.
The gradients compared are the loop's own (`MetaTrainer.compute_gradients`: per-replica
meta-gradients, reduced across replicas), before any optimizer step: Adam would hide a
wrong gradient scale (it divides by the gradients' own size).

    python tests/training/mirrored_check.py <workdir> maml fomaml maml++ reptile cnp_gp hypernet hypernet_film

`cnp_gp` is a Conditional Neural Process on GP regression tasks (`TaskEpisode`s with
padded, masked context and target sets, no BatchNorm state); `hypernet` the HyperNetwork
head on Conv-4, `hypernet_film` the HyperNetwork generating Conv-4's FiLM parameters.
"""

import json
import pathlib
import sys

from tfmeta.training import distribute

distribute.configure_logical_devices(2)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfmeta import learners, models  # noqa: E402
from tfmeta.data.episode import as_episode  # noqa: E402
from tfmeta.data.pipeline import class_batch_dataset, episode_dataset  # noqa: E402
from tfmeta.data.sources import ClassDataset  # noqa: E402
from tfmeta.training.config import MetaTrainConfig  # noqa: E402
from tfmeta.training.loop import MetaTrainer  # noqa: E402

WAYS, SHOTS, QUERIES, META_BATCH, STEPS = 3, 1, 2, 4, 3


def source():
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(8 * 4, 16, 16, 1)).astype(np.float32)  # 8 classes x 4 images
    return ClassDataset.from_arrays(images, np.repeat(np.arange(8), 4))


def gp_trainer(strategy, workdir):
    """A CNP on GP tasks: padded context and target sets under masks, through the replicas."""
    from tfmeta.data.gp import gp_tasks

    config = MetaTrainConfig(dataset="gp", variant="cnp", meta_batch_size=META_BATCH, meta_lr=1e-3,
                             num_iterations=STEPS, eval_every=STEPS, eval_episodes=4, workdir=str(workdir))
    build = lambda: learners.build("cnp", None, task="regression", encoder_sizes=(32, 32), decoder_sizes=(32,))
    stream = lambda start, ctx: gp_tasks(META_BATCH, seed=3, start_step=start, input_context=ctx,
                                         per_task_counts=True).map(lambda b: b.task_episode())
    return MetaTrainer(config, build, stream, strategy=strategy, verbose=False), stream


def trainer(variant, strategy, workdir):
    if variant == "cnp_gp":
        return gp_trainer(strategy, workdir)
    config = MetaTrainConfig(dataset="folder", data_dir="unused", ways=WAYS, shots=SHOTS, queries=QUERIES,
                             meta_batch_size=META_BATCH, inner_lr=0.1, meta_lr=1e-3, num_iterations=STEPS,
                             eval_every=STEPS, eval_episodes=4, workdir=str(workdir),
                             variant="hypernet" if variant.startswith("hypernet") else variant)
    data = source()
    name = "hypernet" if variant.startswith("hypernet") else variant
    gradient = learners.entry(name).family == "gradient"
    kwargs = dict(inner_steps=2 if variant in ("maml++", "reptile") else 1, inner_lr=0.1) if gradient else {}
    if variant == "hypernet_film":  # FiLM scales and shifts of every BatchNorm layer, generated per task
        kwargs = dict(generate="film")
    head = WAYS if gradient else None  # metric and amortized learners: an embedding
    network = lambda: models.conv4(head, input_shape=(16, 16, 1), filters=8)
    if variant == "relation":  # feature maps (2x2x8) and a small relation module, both with BatchNorm
        network, kwargs = lambda: models.conv4_relation(input_shape=(16, 16, 1), filters=8), dict(filters=8)
    build = lambda: learners.build(name, network(), **kwargs)
    if learners.entry(name).training_data == learners.registry.CLASS_BATCHES:  # pre-trained on all 8 classes
        kwargs["num_classes"] = data.num_classes
        stream = lambda start, ctx: class_batch_dataset(data, WAYS * QUERIES, META_BATCH, seed=3, start_step=start,
                                                        input_context=ctx)
    else:
        stream = lambda start, ctx: episode_dataset(data, WAYS, SHOTS, QUERIES, META_BATCH, seed=3,
                                                    start_step=start, input_context=ctx)
    return MetaTrainer(config, build, stream, strategy=strategy, verbose=False), stream


def first_gradients(t, stream):
    """The loop's meta-gradients and state of step 0 (reduced across replicas), nothing applied."""
    batch = next(iter(t.strategy.distribute_datasets_from_function(lambda ctx: stream(0, ctx))))
    grads, metrics, state = t.compute_gradients(as_episode(batch))
    return [x.numpy() for x in grads], [x.numpy() for x in state], float(metrics["loss"])


def check(variant, workdir, mirrored):
    workdir = pathlib.Path(workdir) / variant
    single, single_stream = trainer(variant, tf.distribute.get_strategy(), workdir / "single")
    multi, multi_stream = trainer(variant, mirrored, workdir / "mirrored")
    initial = [v.numpy() for v in single.model.variables]
    model_ids = {id(v) for v in single.model.variables}
    initial_extra = [v.numpy() for v in single.learner.variables if id(v) not in model_ids]
    initial_state = [v.numpy() for v in multi.learner.state_variables]
    result = {"replicas": mirrored.num_replicas_in_sync}
    (g1, s1, l1), (g2, s2, l2) = first_gradients(single, single_stream), first_gradients(multi, multi_stream)
    result["grad_max_abs"] = max(float(np.abs(g).max()) for g in g1)
    result["grad_max_diff"] = max(float(np.abs(a - b).max()) for a, b in zip(g1, g2))
    # Relative to each tensor's size: a gradient scaled by the replica count (sum instead of mean) fails.
    result["grad_max_rel_diff"] = max(float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-3)) for a, b in zip(g1, g2))
    result["state_max_diff"] = max([0.0] + [float(np.abs(a - b).max()) for a, b in zip(s1, s2)])
    result["state_shapes"] = [list(a.shape) for a in s1]
    result["first_loss_diff"] = abs(l1 - l2)
    h1, h2 = single.train(), multi.train()
    result["loss_diff"] = abs(h1[-1]["loss"] - h2[-1]["loss"])
    # A convolution's bias before BatchNorm has an exact meta-gradient of 0 (the
    # normalisation cancels it): Adam divides float noise by its own size there,
    # so those biases are compared apart (to Adam's bound of meta_lr per step).
    diffs = {a.path: float(np.abs(a.numpy() - b.numpy()).max())
             for a, b in zip(single.model.variables, multi.model.variables)}
    cancelled = [path for path in diffs if path.split("/")[-2].startswith("conv") and path.endswith("/bias")]
    result["param_max_diff"] = max([0.0] + [d for path, d in diffs.items() if path not in cancelled])
    result["cancelled_bias_max_diff"] = max([0.0] + [diffs[path] for path in cancelled])
    result["cancelled_bias_max_grad"] = max(
        [0.0] + [float(np.abs(g).max()) for g, v in zip(g1, single.learner.meta_variables) if v.path in cancelled]
    )
    # The learner's own variables (encoders, decoders, generators) besides its network's.
    extra = [(a, b) for a, b in zip(single.learner.variables, multi.learner.variables) if id(a) not in model_ids]
    result["extra_max_diff"] = max([0.0] + [float(np.abs(a.numpy() - b.numpy()).max()) for a, b in extra])
    result["extra_max_change"] = max([0.0] + [float(np.abs(a.numpy() - start).max())
                                              for (a, _), start in zip(extra, initial_extra)])
    result["param_max_change"] = max(
        [0.0] + [float(np.abs(a - b.numpy()).max()) for a, b in zip(initial, single.model.variables)]
    )
    replica_diff = 0.0
    for variable in multi.learner.variables:
        copies = [c.numpy() for c in multi.strategy.experimental_local_results(variable.value)]
        replica_diff = max([replica_diff] + [float(np.abs(c - copies[0]).max()) for c in copies])
    # The learner's state (BatchNorm moving statistics, or MAML++'s per-step copies of them).
    moving_changes = [float(np.abs(v.numpy() - start).max())
                      for v, start in zip(multi.learner.state_variables, initial_state)]
    result["replica_max_diff"] = replica_diff
    result["moving_min_change"] = min(moving_changes) if moving_changes else None
    result["num_copies"] = len(multi.strategy.experimental_local_results(multi.learner.variables[0].value))
    result["step"] = int(multi.step.numpy())
    result["checkpoint"] = (workdir / "mirrored" / "checkpoints" / f"ckpt-{STEPS}.index").is_file()
    return result


if __name__ == "__main__":
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    results = {variant: check(variant, sys.argv[1], strategy) for variant in sys.argv[2:]}
    print("RESULT " + json.dumps(results), flush=True)
