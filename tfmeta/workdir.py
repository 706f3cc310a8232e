"""A run directory after training: restore it, evaluate it, adapt it, export it.

`restore(workdir)` builds the learner a run trained (from its `config.json`:
the configuration and the data spec, input shape and preprocessing) and loads
a checkpoint into it, without reading the training data. The trainers
`evaluate` and `adapt` use it.
"""

import dataclasses
import pathlib

import numpy as np
import tensorflow as tf

from tfmeta.training import checkpoints, distribute
from tfmeta.training.config import MetaTrainConfig


@dataclasses.dataclass
class Restored:
    """A learner restored from a run directory.

    Attributes:
        config: the run's configuration (with `workdir` set to where it was read).
        data_spec: `{"input_shape": [...], "preprocessing": {...} or None}`.
        learner: the learner, holding the checkpoint's values.
        step: the checkpoint's step.
        checkpoint_path: the checkpoint read.
    """

    config: MetaTrainConfig
    data_spec: dict
    learner: object
    step: int
    checkpoint_path: str


def restore(workdir, data_dir=None, which: str | None = None) -> Restored:
    """Builds a run's learner and loads a checkpoint, without reading its data.

    Args:
        workdir: a run directory (`config.json`, `checkpoints/`).
        data_dir: for runs from before the data spec was recorded in
            `config.json`: where their data is, to read the input shape from it
            (None: the data_dir in `config.json`).
        which: the checkpoint, `"last"`, `"best"` (the best validation metric),
            or None: the run's `select` (what its final test and export used).

    Returns:
        A `Restored`.

    Raises:
        FileNotFoundError: if the workdir has no `config.json` or no checkpoint.

    Example:

    ```python
    run = restore("runs/maml_omniglot")
    state = run.learner.adapt(support_x, support_y)
    ```
    """
    from tfmeta.training import runner  # noqa: PLC0415

    config = dataclasses.replace(checkpoints.load_config(workdir), workdir=str(workdir))
    which = config.select if which is None else which
    if which not in ("last", "best"):
        raise ValueError(f"`which` must be 'last' or 'best'. Received: which={which!r}")
    if which == "best":
        path = tf.train.latest_checkpoint(str(pathlib.Path(workdir) / checkpoints.BEST_DIR))
    else:
        path = checkpoints.latest_checkpoint(workdir)
    if path is None:
        raise FileNotFoundError(f"No {which} checkpoint in the workdir. Received: workdir={str(workdir)!r}")
    spec = checkpoints.load_data_spec(workdir)
    if spec is None:  # A run from before config.json recorded its inputs: read them from the data.
        if data_dir is not None:
            config = dataclasses.replace(config, data_dir=data_dir)
        spec = runner.data_spec(config, runner.load_data(config))
    import keras  # noqa: PLC0415

    keras.utils.set_random_seed(config.seed)
    with distribute.mixed_precision_scope(config.mixed_precision):
        learner = runner.learner_fn(config, spec["input_shape"])()
    model_ids = {id(v) for v in learner.model.variables}
    checkpoint = tf.train.Checkpoint(model=learner.model,
                                     algorithm_variables=[v for v in learner.variables if id(v) not in model_ids],
                                     step=tf.Variable(0, dtype=tf.int64))
    checkpoint.restore(path).expect_partial().assert_existing_objects_matched()
    return Restored(config, spec, learner, int(checkpoint.step.numpy()), path)


def evaluate_workdir(workdir, eval_episodes: int = 600, data_dir=None, verbose: bool = True, ways=None,
                     shots=None, queries=None) -> dict:
    """Tests a run directory's checkpoint (the one its `select` chose) on unseen tasks.

    Args:
        workdir: a run directory (`config.json`, `checkpoints/`).
        eval_episodes: number of unseen test tasks.
        data_dir: overrides the `data_dir` saved in `config.json` (None: keep).
        verbose: print one line per inner-step count.
        ways, shots, queries: test episodes of another shape than the run's
            (None: the run's). Another number of classes needs a learner that
            serves any number (`any_ways`: metric learners).

    Returns:
        `{steps: evaluate(...) dict}` as in `RunResult.test_results`.

    Raises:
        FileNotFoundError: if the workdir has no `config.json` or no checkpoint.
        ValueError: if `ways` differs from a fixed-head learner's.

    Example:

    ```python
    results = evaluate_workdir("runs/maml_sinusoid", eval_episodes=600)
    ```
    """
    from tfmeta.training import runner  # noqa: PLC0415

    restored = restore(workdir, data_dir=data_dir)
    overrides = {"eval_episodes": eval_episodes}
    for name, value in (("data_dir", data_dir), ("shots", shots), ("queries", queries), ("ways", ways)):
        if value is not None:
            overrides[name] = value
    if ways is not None and ways != restored.config.ways and not restored.learner.any_ways:
        raise ValueError(f"{restored.config.variant}'s head has {restored.config.ways} outputs: it is tested on "
                         f"{restored.config.ways}-way tasks only. Received: ways={ways}")
    if ways is not None and restored.config.train_ways is None:
        overrides["train_ways"] = restored.config.ways  # the run's training episodes are unchanged
    config = dataclasses.replace(restored.config, **overrides)
    if verbose:
        print(f"Evaluating {config.variant} on {config.dataset} at step {restored.step} ({restored.checkpoint_path})",
              flush=True)
    return runner.evaluate_on_test(restored.learner, config, runner.load_data(config), verbose=verbose)


def adapt_workdir(workdir, support_dir, export_root="saved_models", name="adapted_classifier", model_card=None,
                  data_dir=None) -> pathlib.Path:
    """Restores a run, adapts it to a support folder, exports a plain classifier.

    Args:
        workdir: a run directory holding `config.json` and `checkpoints/`.
        support_dir: one sub-folder of images per class (sorted names: labels 0..N-1).
        export_root, name, model_card: as in `tfmeta.export.export_adapted_classifier`.
        data_dir: for runs from before the data spec was recorded (see `restore`).

    Returns:
        The new export's version directory.

    Raises:
        FileNotFoundError: if the workdir has no config or checkpoint.
        ValueError: if the run is not classification or the support folder
            holds a number of classes the learner does not serve.

    Example:

    ```python
    path = adapt_workdir("runs/maml_omniglot", "my_classes/", name="my_classes")
    ```
    """
    from tfmeta.data.sources import ClassDataset, Preprocessing  # noqa: PLC0415
    from tfmeta.export import export_adapted_classifier  # noqa: PLC0415

    restored = restore(workdir, data_dir=data_dir)
    config, learner = restored.config, restored.learner
    if config.is_regression:
        raise ValueError(f"`workdir` must hold a classification run. Received: dataset={config.dataset!r}")
    preprocessing = Preprocessing.from_dict(restored.data_spec["preprocessing"])
    support = ClassDataset.from_folder(support_dir, image_size=preprocessing.image_size,
                                       invert=preprocessing.invert, channels=preprocessing.channels)
    if learner.ways is not None and support.num_classes != learner.ways:
        raise ValueError(
            f"`support_dir` must hold {learner.ways} class folders for this {learner.ways}-way model. "
            f"Received: {support.num_classes} classes {support.class_names}"
        )
    labels = np.concatenate([np.full(support.num_images(c), c, np.int32) for c in range(support.num_classes)])
    steps = None if learner.eval_steps is None else config.eval_inner_steps
    task_state = learner.adapt(tf.constant(support.images), tf.constant(labels), steps=steps)
    card = {
        "training": config.to_dict(),
        "checkpoint_step": restored.step,
        "adapted_from": {"workdir": str(workdir), "support_dir": str(support_dir)},
        **(model_card or {}),
    }
    return export_adapted_classifier(learner, task_state, support.class_names, export_root, name, model_card=card,
                                     preprocessing=restored.data_spec["preprocessing"])
