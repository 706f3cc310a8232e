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
        learner = runner.learner_fn(config, spec["input_shape"], spec.get("num_classes"), spec.get("metadata_dim"))()
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
    config = _test_config(restored.config, restored.learner, eval_episodes, data_dir, ways, shots, queries)
    if verbose:
        print(f"Evaluating {config.variant} on {config.dataset} at step {restored.step} ({restored.checkpoint_path})",
              flush=True)
    return runner.evaluate_on_test(restored.learner, config, runner.load_data(config), verbose=verbose)


def _test_config(config: MetaTrainConfig, learner, eval_episodes, data_dir, ways, shots, queries) -> MetaTrainConfig:
    """A run's config with the test settings of `evaluate_workdir` / `evaluate_ensemble`.

    Raises:
        ValueError: if `ways` differs from a fixed-head learner's.
    """
    overrides = {"eval_episodes": eval_episodes}
    for name, value in (("data_dir", data_dir), ("shots", shots), ("queries", queries), ("ways", ways)):
        if value is not None:
            overrides[name] = value
    if ways is not None and ways != config.ways and not learner.any_ways:
        raise ValueError(f"{config.variant}'s head has {config.ways} outputs: it is tested on "
                         f"{config.ways}-way tasks only. Received: ways={ways}")
    if ways is not None and config.train_ways is None:
        overrides["train_ways"] = config.ways  # the run's training episodes are unchanged
    return dataclasses.replace(config, **overrides)


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


def evaluate_ensemble(workdirs, eval_episodes: int = 600, data_dir=None, verbose: bool = True, ways=None,
                      shots=None, queries=None) -> dict:
    """Tests several runs and their ensemble (`tfmeta.learners.Ensemble`) on the same unseen tasks.

    The test tasks are those `evaluate_workdir` draws for the first run (its
    dataset, class split, ways, shots, queries and seed, or the given episode
    shape). Each run is tested with
    its own adaptation (learners that adapt in steps take their
    `eval_inner_steps`), then the ensemble, the mean of their class
    probabilities; the ensemble's gain over its best member is measured on the
    same tasks (paired: the mean of the per-task differences, ± 95% CI).

    Args:
        workdirs: two or more run directories of classification runs on inputs
            of the same shape and preprocessing.
        eval_episodes: number of unseen test tasks.
        data_dir: overrides the first run's `data_dir` (and locates the data of
            runs from before the data spec was recorded).
        verbose: print one line per member, one for the ensemble, one for its gain.
        ways, shots, queries: test episodes of another shape than the first
            run's (None: the first run's); another number of classes needs members
            that serve any number.

    Returns:
        `{"members": [evaluate(...) dict per run], "ensemble": evaluate(...) dict,
        "best_member": index, "gain_over_best": {metric: (mean, ci95)}}`.

    Raises:
        FileNotFoundError: if a workdir has no config or checkpoint.
        ValueError: if a run is not a classification run, the runs' inputs differ,
            or a fixed-size member does not serve the test tasks' number of classes.

    Example:

    ```python
    results = evaluate_ensemble(["runs/protonet_s0", "runs/protonet_s1"], eval_episodes=600)
    results["ensemble"]["accuracy"], results["gain_over_best"]["accuracy"]
    ```
    """
    from tfmeta import evaluation  # noqa: PLC0415
    from tfmeta.learners import Ensemble  # noqa: PLC0415
    from tfmeta.training import runner  # noqa: PLC0415

    workdirs = [str(w) for w in workdirs]
    if len(workdirs) < 2:
        raise ValueError(f"An ensemble needs at least two workdirs. Received: workdirs={workdirs!r}")
    runs = [restore(workdir, data_dir=data_dir) for workdir in workdirs]
    for workdir, run in zip(workdirs, runs):
        if run.config.is_regression:
            raise ValueError(f"An ensemble averages class probabilities: every run must classify. "
                             f"Received: {workdir} with dataset={run.config.dataset!r}")
        inputs = (run.data_spec["input_shape"], run.data_spec["preprocessing"])
        first = (runs[0].data_spec["input_shape"], runs[0].data_spec["preprocessing"])
        if inputs != first:
            raise ValueError(
                f"The runs must read their inputs alike (input shape and preprocessing). Received: {workdirs[0]} "
                f"reads {first}, {workdir} reads {inputs}"
            )
    ensemble = Ensemble([run.learner for run in runs])
    config = _test_config(runs[0].config, ensemble, eval_episodes, data_dir, ways, shots, queries)
    if ensemble.ways is not None and ensemble.ways != config.ways:
        raise ValueError(f"The ensemble serves {ensemble.ways}-way tasks; the test tasks of {workdirs[0]} are "
                         f"{config.ways}-way. Received: ways={config.ways}")
    split = runner.load_data(config)
    dataset = runner.eval_dataset_fn(config, split, start_step=runner.TEST_START_STEP, classes=split.test)
    if verbose:
        print(f"Testing {len(runs)} runs and their ensemble on the same {eval_episodes} {config.ways}-way "
              f"{config.shots}-shot tasks of unseen classes ({config.dataset}, test tasks of {workdirs[0]})", flush=True)
    per_episode = [evaluation.Evaluator(learner).episode_metrics(dataset(), eval_episodes)
                   for learner in [run.learner for run in runs] + [ensemble]]

    def summary(values):
        results = {name: evaluation.confidence_interval(v) for name, v in values.items()}
        results[evaluation.NUM_EPISODES_KEY] = eval_episodes
        return results

    members, together = [summary(v) for v in per_episode[:-1]], summary(per_episode[-1])
    best = int(np.argmax([r["accuracy"][0] for r in members]))
    gain = {name: evaluation.confidence_interval(per_episode[-1][name] - per_episode[best][name])
            for name in per_episode[-1]}
    if verbose:
        width = max(len(w) for w in workdirs)
        for workdir, run, results in zip(workdirs, runs, members):
            print(f"member {workdir:<{width}} ({run.config.variant}, step {run.step}): "
                  f"{evaluation.format_results(results)}", flush=True)
        print(f"ensemble (mean probability of {len(runs)}): {evaluation.format_results(together)}", flush=True)
        print(f"ensemble - best member ({workdirs[best]}), same tasks: "
              + " | ".join(f"{name} {mean:+.4f} ± {ci:.4f}" for name, (mean, ci) in gain.items()), flush=True)
    return {"members": members, "ensemble": together, "best_member": best, "gain_over_best": gain}
