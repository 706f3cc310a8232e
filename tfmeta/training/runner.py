"""`run(config)`: builds data, learner and algorithm from a config, meta-trains, tests.

The trainers in `trainers/` are flags -> `MetaTrainConfig` -> `run(config)`.
"""

import dataclasses
import math
import pathlib

import keras
import tensorflow as tf

from tfmeta import evaluation
from tfmeta.data.splits import load_class_split
from tfmeta.training import distribute
from tfmeta.training.config import MetaTrainConfig
from tfmeta.training.loop import MetaTrainer

# Validation and test tasks are drawn at steps far beyond any training step, so
# with the same seed they never coincide with training tasks (sinusoids).
VALIDATION_START_STEP = 10**9
TEST_START_STEP = 2 * 10**9
# The final test reports these inner-step counts (those <= eval_inner_steps),
# plus eval_inner_steps itself.
REPORT_STEPS = (0, 1, 5, 10)


@dataclasses.dataclass
class RunResult:
    """What `run` returns.

    Attributes:
        config: the resolved configuration.
        trainer: the `MetaTrainer` (its `.algorithm` holds the trained state).
        history: per-evaluation training records.
        test_results: `{inner_steps: evaluate(...) dict}` on the test tasks.
        export_path: the SavedModel version directory written at the end of
            the run (None: `config.export_dir` is empty, or not the chief).
    """

    config: MetaTrainConfig
    trainer: MetaTrainer
    history: list
    test_results: dict
    export_path: pathlib.Path | None = None


def train_dataset_fn(config: MetaTrainConfig, sources=None):
    """`(start_step, input_context) -> Dataset` of training meta-batches for `config`.

    With an `input_context` each element is one replica's share of the global
    meta-batch (`meta_batch_size / num_replicas` distinct tasks); the shares
    of step `s` together are exactly the single-device meta-batch of step `s`.
    """
    if config.is_regression:
        from tfmeta.data.regression import sinusoid_tasks

        def make(start_step, input_context=None):
            return sinusoid_tasks(config.shots, config.queries, config.meta_batch_size,
                                  seed=config.seed, start_step=start_step, input_context=input_context)

        return make
    from tfmeta.data.pipeline import episode_dataset

    def make(start_step, input_context=None):
        return episode_dataset(sources.train, config.ways, config.shots, config.queries, config.meta_batch_size,
                               seed=config.seed, start_step=start_step, input_context=input_context)

    return make


def eval_dataset_fn(config: MetaTrainConfig, sources=None, start_step=VALIDATION_START_STEP, num_episodes=None):
    """`() -> Dataset` of finite meta-batches of unseen tasks (test classes)."""
    num_episodes = num_episodes or config.eval_episodes
    num_steps = math.ceil(num_episodes / config.meta_batch_size)
    if config.is_regression:
        from tfmeta.data.regression import sinusoid_tasks

        return lambda: sinusoid_tasks(config.shots, config.queries, config.meta_batch_size, seed=config.seed,
                                      start_step=start_step).take(num_steps)
    from tfmeta.data.pipeline import episode_dataset

    return lambda: episode_dataset(sources.test, config.ways, config.shots, config.queries, config.meta_batch_size,
                                   seed=config.seed, start_step=start_step, num_steps=num_steps)


def algorithm_fn(config: MetaTrainConfig, sources=None):
    """`() -> Algorithm`: the learner (MLP 40-40 or Conv-4) wrapped by the variant.

    `maml++` is every MAML++ option of Antoniou et al. (2019): LSLR, the
    multi-step loss, per-step BatchNorm statistics, weights and biases,
    derivative-order annealing over the first third of `num_iterations`, and
    (in `optimizer_fn`) the cosine-annealed meta learning rate.
    """
    from tfmeta import algorithms, models

    def make():
        if config.is_regression:
            model = models.mlp(input_dim=1, hidden=(40, 40), outputs=1)
            task = "regression"
        else:
            model = models.conv4(config.ways, input_shape=tuple(sources.train.image_shape))
            task = "classification"
        kwargs = dict(task=task, inner_steps=config.inner_steps, inner_lr=config.inner_lr,
                      eval_inner_steps=config.eval_inner_steps)
        if config.variant not in ("fomaml", "reptile"):  # Those two are first order by definition.
            kwargs["first_order"] = config.first_order
        if config.variant != "reptile":
            kwargs["msl_anneal_steps"] = config.msl_anneal_steps
            if config.multi_step_loss:
                kwargs["multi_step_loss"] = True
        if config.variant == "maml++":  # Derivative-order annealing: first order for the first third (50/150 epochs).
            kwargs["first_order_steps"] = config.num_iterations // 3
        return algorithms.build(config.variant, model, **kwargs)

    return make


def optimizer_fn(config: MetaTrainConfig):
    """`() -> keras optimizer`: Adam(meta_lr) for every variant (Reptile's displacement
    is its "gradient"); MAML++ anneals it with a cosine schedule over num_iterations."""

    def make():
        learning_rate = config.meta_lr
        if config.variant == "maml++":  # Antoniou et al. 2019: cosine annealing down to 1e-5.
            from tfmeta.algorithms import cosine_annealing

            learning_rate = cosine_annealing(config.meta_lr, config.num_iterations, min(1e-5, config.meta_lr))
        return keras.optimizers.Adam(learning_rate=learning_rate)

    return make


def report_steps(config: MetaTrainConfig) -> list:
    """Inner-step counts reported by the final test."""
    return sorted({s for s in REPORT_STEPS if s <= config.eval_inner_steps} | {config.eval_inner_steps})


def evaluate_on_test(trainer: MetaTrainer, config: MetaTrainConfig, sources=None, verbose=True) -> dict:
    """Evaluates the trained algorithm on `config.eval_episodes` unseen test tasks."""
    dataset = eval_dataset_fn(config, sources, start_step=TEST_START_STEP)
    results = {}
    for steps in report_steps(config):
        results[steps] = evaluation.evaluate(trainer.algorithm, dataset(), config.eval_episodes, steps=steps)
        if verbose:
            print(f"test after {steps:2d} inner steps: {evaluation.format_results(results[steps])}", flush=True)
    return results


def export_trained(trainer: MetaTrainer, config: MetaTrainConfig, test_results: dict | None = None) -> pathlib.Path:
    """Exports the trained algorithm as an adapt-and-predict SavedModel.

    Classification runs give `export_few_shot_classifier`, sinusoid runs
    `export_few_shot_regressor`, under `<config.export_dir>/<config.export_name>/<version>`
    (the next free version; never overwritten). The model card holds the
    configuration, the checkpoint step, the preprocessing the learner was
    trained with and the test results (mean and 95% CI per inner-step count).

    Args:
        trainer: a trained (or restored) `MetaTrainer`.
        config: the run's configuration (resolved: `export_name` set).
        test_results: `{inner_steps: evaluate(...) dict}`, e.g. `RunResult.test_results`.

    Returns:
        The new version directory.

    Example:

    ```python
    result = run(config)                    # exports already unless export_dir == ""
    path = export_trained(result.trainer, result.config, result.test_results)
    ```
    """
    from tfmeta import export

    config = config.resolved()
    evaluation_card = {}
    if test_results:
        evaluation_card = {
            "split": "test (classes or tasks never seen in training)",
            "episodes": int(next(iter(test_results.values()))["num_episodes"]),
            "after_inner_steps": {
                str(steps): {k: {"mean": float(v[0]), "ci95": float(v[1])} for k, v in r.items() if k != "num_episodes"}
                for steps, r in test_results.items()
            },
        }
    card = {
        "training": config.to_dict(),
        "checkpoint_step": int(trainer.step.numpy()),
        "evaluation": evaluation_card,
    }
    if config.is_regression:
        return export.export_few_shot_regressor(trainer.algorithm, config.export_dir, config.export_name,
                                                model_card=card, inner_steps=config.eval_inner_steps)
    card["shots"] = config.shots
    # Omniglot strokes are stored as 1 (inverted); other image sources as read.
    card["preprocessing"] = {"invert": config.dataset == "omniglot"}
    return export.export_few_shot_classifier(trainer.algorithm, config.export_dir, config.export_name,
                                             model_card=card, inner_steps=config.eval_inner_steps)


def build_trainer(config: MetaTrainConfig, strategy=None, verbose=True):
    """A `MetaTrainer` for `config` and the class sources it uses (None for regression).

    `strategy` None: `distribute.make_strategy(config.strategy, config.devices)`.
    """
    config = config.resolved()
    if strategy is None:
        strategy = distribute.make_strategy(config.strategy, config.devices)
    sources = None if config.is_regression else load_class_split(config.dataset, config.data_dir, config.ways, config.seed)
    trainer = MetaTrainer(
        config,
        build_algorithm=algorithm_fn(config, sources),
        train_dataset=train_dataset_fn(config, sources),
        eval_dataset=eval_dataset_fn(config, sources),
        build_optimizer=optimizer_fn(config),
        strategy=strategy,
        verbose=verbose,
    )
    return trainer, sources


def run(config: MetaTrainConfig, strategy=None, verbose: bool = True) -> RunResult:
    """Meta-trains (or resumes) as `config` says, then tests on unseen tasks.

    Args:
        config: the run's `MetaTrainConfig`.
        strategy: a `tf.distribute.Strategy` (default: the one `config.strategy`
            names, built by `tfmeta.training.distribute.make_strategy`).
        verbose: print progress and the test results.

    Returns:
        A `RunResult` (the trained algorithm is `result.trainer.algorithm`;
        the SavedModel is at `result.export_path`). On the non-chief workers
        of a multi-worker run `test_results` is empty and nothing is
        exported (only the chief tests and exports).

    Raises:
        NonFiniteLossError: if training diverges (the last checkpoint is kept).

    Example:

    ```python
    result = run(MetaTrainConfig(num_iterations=200, workdir="runs/quick"))
    result.test_results[10]["mse"]   # (mean, ci95) after 10 inner steps
    ```
    """
    config = config.resolved()
    trainer, sources = build_trainer(config, strategy, verbose)
    if verbose:
        print(f"tfmeta: {config.variant} on {config.dataset}; workdir {config.workdir}", flush=True)
    history = trainer.train()
    results, path = test_and_export(trainer, config, sources, verbose=verbose)
    return RunResult(config, trainer, history, results, path)


def test_and_export(trainer: MetaTrainer, config: MetaTrainConfig, sources=None, verbose: bool = True):
    """The end of a run: on the chief only, tests on unseen tasks, then exports.

    Args:
        trainer: the trained `MetaTrainer`.
        config: the run's configuration.
        sources: the class sources `build_trainer` returned (None for regression).
        verbose: print the test results and the export path.

    Returns:
        `(test_results, export_path)`: `({}, None)` on non-chief workers;
        `export_path` is None when `config.export_dir` is empty.
    """
    if not trainer.is_chief:  # Only the chief tests and exports.
        return {}, None
    results = evaluate_on_test(trainer, config, sources, verbose=verbose)
    path = None
    if config.export_dir:
        path = export_trained(trainer, config, results)
        if verbose:
            print(f"exported {path}", flush=True)
    return results, path


def evaluate_workdir(workdir, eval_episodes: int = 600, data_dir=None, verbose: bool = True) -> dict:
    """Tests the latest checkpoint of a run directory on unseen tasks.

    Args:
        workdir: a run directory (`config.json`, `checkpoints/`).
        eval_episodes: number of unseen test tasks.
        data_dir: overrides the `data_dir` saved in `config.json` (None: keep).
        verbose: print one line per inner-step count.

    Returns:
        `{inner_steps: evaluate(...) dict}` as in `RunResult.test_results`.

    Raises:
        FileNotFoundError: if the workdir has no `config.json` or no checkpoint.
    """
    from tfmeta.training import checkpoints

    config = checkpoints.load_config(workdir)
    overrides = {"workdir": str(workdir), "eval_episodes": eval_episodes}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    config = dataclasses.replace(config, **overrides)
    if checkpoints.latest_checkpoint(workdir) is None:
        raise FileNotFoundError(f"No checkpoint to evaluate in the workdir. Received: workdir={str(workdir)!r}")
    # One device: the run's strategy (perhaps a cluster) is not needed to evaluate.
    trainer, sources = build_trainer(config, strategy=tf.distribute.get_strategy(), verbose=verbose)
    step = trainer.restore()
    if verbose:
        print(f"Evaluating {config.variant} on {config.dataset} at step {step} ({trainer.manager.latest_checkpoint})")
    return evaluate_on_test(trainer, config, sources, verbose=verbose)
