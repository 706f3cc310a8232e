"""Meta-training the recurrent classifiers (MANN, LSTM) on label-offset sequences of Omniglot.

`run_sequences(config)` is `tfmeta.training.run` for the sequence task: the same
`MetaTrainer` (compiled step, checkpoints, resume, model selection on validation
classes, `tf.distribute`), fed by `tfmeta.data.sequence_dataset` instead of
few-shot episodes, then the test by instance (accuracy on the 1st, 2nd, ... 10th
presentation of a class, mean ± 95% CI over `config.eval_episodes` test sequences)
next to Santoro et al.'s published figures, and the export of one step of the
recurrence (`tfmeta.export.export_recurrent_classifier`).

Adam on the meta-gradients clipped to a global norm of `GRADIENT_CLIPNORM`.

Config fields as this task reads them: `ways` = classes per sequence, `shots` =
instances of each class in a sequence (the sequence has `ways * shots` steps),
`queries` unused, `image_size` the side of the images (Santoro et al.: 20),
`crop_padding` random translations of the training images (`tfmeta.data.augment`).
"""

import dataclasses
import math

import keras
import tensorflow as tf

from tfmeta import evaluation
from tfmeta.data.augment import augment_episode
from tfmeta.data.sequences import sequence_dataset
from tfmeta.data.sharding import TaskShard
from tfmeta.data.splits import ClassSplit, load_class_split
from tfmeta.learners import registry
from tfmeta.learners.recurrent.mann import memory_network
from tfmeta.training.config import MetaTrainConfig
from tfmeta.training.loop import MetaTrainer
from tfmeta.training.preemption import PreemptedError
from tfmeta.training.runner import TEST_START_STEP, VALIDATION_START_STEP, data_spec

SEQUENCE_VARIANTS = ("mann", "lstm_seq")
# The meta-gradients' global norm is clipped to this before Adam (recurrent nets: the NTM paper clips too).
GRADIENT_CLIPNORM = 10.0
# Presentations reported by the test (Santoro et al. 2016, Table 1).
REPORTED_INSTANCES = (1, 2, 3, 4, 5, 10)
# Santoro et al. 2016, Table 1, Omniglot, 5 classes: accuracy (%) on the 1st, 2nd, 3rd, 4th, 5th, 10th instance.
PUBLISHED_5WAY = {
    "mann": (36.4, 82.8, 91.0, 92.6, 94.9, 98.1),
    "lstm_seq": (24.4, 49.5, 55.3, 61.0, 63.6, 62.5),
    "human": (34.5, 57.3, 70.1, 71.8, 81.4, 92.4),
}


@dataclasses.dataclass
class SequenceRunResult:
    """What `run_sequences` returns.

    Attributes:
        trainer: the `MetaTrainer` (its learner holds the tested weights).
        history: one dict per evaluation.
        test_results: `{metric: (mean, ci95)}` on the test sequences.
        export_path: the SavedModel's version directory, or None.
        split: the classes.
    """

    trainer: MetaTrainer
    history: list
    test_results: dict
    export_path: str | None
    split: ClassSplit


def check_sequence_config(config: MetaTrainConfig) -> None:
    """Raises ValueError on a config the sequence runner cannot run (named)."""
    if config.variant not in SEQUENCE_VARIANTS:
        raise ValueError(f"Sequence runs train one of {SEQUENCE_VARIANTS}. Received: variant={config.variant!r}")
    if config.dataset not in ("omniglot", "folder") or not config.data_dir:
        raise ValueError(f"Sequence runs read image classes from `data_dir` (dataset 'omniglot' or 'folder'). "
                         f"Received: dataset={config.dataset!r}, data_dir={config.data_dir!r}")


def build_sequence_learner(config: MetaTrainConfig, input_shape, **network_kwargs):
    """The learner of a sequence config: `"mann"` or `"lstm_seq"` on a `MemoryNetwork`."""
    network = memory_network(config.ways, tuple(input_shape), use_memory=config.variant == "mann",
                             **network_kwargs)
    return registry.build(config.variant, network, instances=config.shots)


def sequence_dataset_fns(config: MetaTrainConfig, split: ClassSplit):
    """`(train_fn, val_fn, test_fn)`: the loop's `(start_step, input_context) -> Dataset` of
    training sequences (augmented with `config.augmentation`), and `() -> Dataset` of
    `config.eval_episodes` validation and test sequences (disjoint task ranges)."""
    augmentation = config.augmentation

    def train(start_step, input_context=None):
        sequences = sequence_dataset(split.train, config.ways, config.shots, config.meta_batch_size, seed=config.seed,
                                     start_step=start_step, input_context=input_context)
        if augmentation.is_identity:
            return sequences
        shard = TaskShard.from_context(config.meta_batch_size, input_context)

        def augment(element, episode):
            steps, first_task = shard.locate(element)
            return augment_episode(episode, augmentation, config.seed, start_step + steps, first_task)

        return sequences.enumerate().map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    num_steps = math.ceil(config.eval_episodes / config.meta_batch_size)

    def finite(classes, start):
        return lambda: sequence_dataset(classes, config.ways, config.shots, config.meta_batch_size, seed=config.seed,
                                        start_step=start, num_steps=num_steps)

    return train, finite(split.val, VALIDATION_START_STEP), finite(split.test, TEST_START_STEP)


def format_by_instance(results: dict, variant: str, ways: int) -> str:
    """The test's table: accuracy by instance, ours ± 95% CI beside Santoro et al.'s (5 classes)."""
    lines = [f"{'instance':>9} | {'ours (%)':>15} | " + " | ".join(f"{name} (paper)" for name in PUBLISHED_5WAY)]
    for i, k in enumerate(REPORTED_INSTANCES):
        key = f"instance_{k}"
        if key not in results:
            continue
        mean, ci = results[key]
        paper = " | ".join(f"{values[i]:>11.1f}" if ways == 5 else f"{'-':>11}" for values in PUBLISHED_5WAY.values())
        lines.append(f"{k:>9} | {100 * mean:>6.1f} ± {100 * ci:>4.1f}   | {paper}")
    mean, ci = results["accuracy"]
    lines.append(f"all steps: {100 * mean:.1f} ± {100 * ci:.1f}%  ({results[evaluation.NUM_EPISODES_KEY]} test "
                 f"sequences of unseen classes; paper figures: Santoro et al. 2016, Table 1, 5 classes; "
                 f"{variant})")
    return "\n".join(lines)


def run_sequences(config: MetaTrainConfig, strategy=None, verbose: bool = True, split: ClassSplit | None = None,
                  network_kwargs: dict | None = None) -> SequenceRunResult:
    """Meta-trains (or resumes) a MANN / LSTM on label-offset sequences, tests by instance, exports.

    Args:
        config: the run (see the module docstring for the fields' meaning).
        strategy: a `tf.distribute.Strategy` (default: the current one).
        verbose: print progress and the test table.
        split: the classes (default: `load_class_split` of the config: on the
            Omniglot sample, train on 5 alphabets with rotations, validate on
            Early_Aramaic, test on Sanskrit and Tagalog).
        network_kwargs: passed to `memory_network` (controller_units, memory_slots, ...).

    Returns:
        A `SequenceRunResult`.

    Raises:
        ValueError: on a config it cannot run, or bad data.
        PreemptedError: if the run got SIGTERM (it saved a checkpoint at the
            current step; the same call resumes it).

    Example:

    ```python
    config = MetaTrainConfig(variant="mann", dataset="omniglot", data_dir="../shared/data/omniglot",
                             ways=5, shots=10, image_size=20, meta_batch_size=16)
    result = run_sequences(config)
    result.test_results["instance_2"]    # (mean, ci95)
    ```
    """
    check_sequence_config(config)
    config = config.resolved()
    if split is None:
        split = load_class_split(config.dataset, config.data_dir, config.ways, config.seed, split=config.split,
                                 image_size=config.image_size, channels=config.channels)
    spec = data_spec(config, split)
    train, val, test = sequence_dataset_fns(config, split)
    trainer = MetaTrainer(config, lambda: build_sequence_learner(config, split.train.image_shape,
                                                                 **(network_kwargs or {})),
                          train, val, strategy=strategy, verbose=verbose, data_spec=spec,
                          build_optimizer=lambda: keras.optimizers.Adam(config.meta_lr,
                                                                        global_clipnorm=GRADIENT_CLIPNORM))
    history = trainer.train()
    if trainer.preempted:
        raise PreemptedError(f"Preempted (SIGTERM) at step {int(trainer.step.numpy())}; the checkpoint is saved: run "
                             f"the same command again to resume. Received: workdir={config.workdir!r}")
    if trainer.selects:
        step = trainer.restore_best()
        if verbose:
            print(f"Selected the checkpoint of step {step} (best validation accuracy)", flush=True)
    results = evaluation.Evaluator(trainer.learner).evaluate(test(), config.eval_episodes)
    if verbose:
        print(format_by_instance(results, config.variant, config.ways), flush=True)
    export_path = None
    if config.export_dir:
        from tfmeta.export.recurrent import export_recurrent_classifier  # noqa: PLC0415

        card = {"training": config.to_dict(), "checkpoint_step": int(trainer.step.numpy()),
                "evaluation": {"split": "test (classes never seen in training)",
                               "episodes": int(results[evaluation.NUM_EPISODES_KEY]),
                               "results": {k: {"mean": float(v[0]), "ci95": float(v[1])} for k, v in results.items()
                                           if k != evaluation.NUM_EPISODES_KEY}}}
        export_path = str(export_recurrent_classifier(trainer.learner, config.export_dir, config.export_name,
                                                      model_card=card, preprocessing=spec["preprocessing"]))
        if verbose:
            print(f"Exported to {export_path}", flush=True)
    return SequenceRunResult(trainer, history, results, export_path, split)
