"""`run(config)`: builds data and learner from a config, meta-trains, tests, exports.

The trainers in `trainers/` are flags -> `MetaTrainConfig` -> `run(config)`.
"""

import dataclasses
import math
import pathlib

import keras
import tensorflow as tf

from tfmeta import evaluation
from tfmeta.data.sources import FOLDER_METADATA_FILE
from tfmeta.data.splits import ClassSplit, load_class_split
from tfmeta.training import distribute
from tfmeta.training.config import COMPLETION_DATASETS, FIXED_HEAD_VARIANTS, GP_DATASETS, MetaTrainConfig
from tfmeta.training.loop import MetaTrainer
from tfmeta.training.preemption import PreemptedError

# Validation and test tasks are drawn at steps far beyond any training step, so
# with the same seed they never coincide with training tasks (sinusoids).
VALIDATION_START_STEP = 10**9
TEST_START_STEP = 2 * 10**9
# The final test of a learner that adapts in steps reports these step counts
# (those <= eval_inner_steps), plus eval_inner_steps itself.
REPORT_STEPS = (0, 1, 5, 10)
SINUSOID_INPUT_SHAPE = (1,)


@dataclasses.dataclass
class RunResult:
    """What `run` returns.

    Attributes:
        config: the resolved configuration.
        trainer: the `MetaTrainer` (its `.learner` holds the trained state).
        history: per-evaluation training records.
        test_results: `{inner_steps: evaluate(...) dict}` on the test tasks
            (`{None: ...}` for a learner that adapts in one pass).
        export_path: the SavedModel version directory written at the end of
            the run (None: `config.export_dir` is empty, or not the chief).
    """

    config: MetaTrainConfig
    trainer: MetaTrainer
    history: list
    test_results: dict
    export_path: pathlib.Path | None = None


# ------------------------------------------------------------------ data


def load_data(config: MetaTrainConfig) -> ClassSplit | None:
    """The classes of a classification config (`tfmeta.data.splits.load_class_split`), or whose images an
    image completion config completes (Omniglot's `config.split`); None for the other regression configs."""
    if config.dataset in COMPLETION_DATASETS:
        return load_class_split("omniglot", config.data_dir, config.ways, config.seed, split=config.split,
                                image_size=config.image_size)
    if config.is_regression:
        return None
    return load_class_split(config.dataset, config.data_dir, config.ways, config.seed, split=config.split,
                            image_size=config.image_size, channels=config.channels)


def data_spec(config: MetaTrainConfig, split: ClassSplit | None) -> dict:
    """What the learner's inputs are, recorded in `config.json` (`tfmeta.workdir.restore` builds from it).

    Returns:
        `{"input_shape": [...], "preprocessing": {...} or None}`, and for
        classification `"num_classes"`, the number of training classes (the
        size of a pre-trained classifier's head), and with `task_metadata`
        `"metadata_dim"`, the size of a class's metadata (`class_metadata_dim`).
    """
    if split is None:
        return {"input_shape": list(SINUSOID_INPUT_SHAPE), "preprocessing": None}
    if config.dataset in COMPLETION_DATASETS:  # x: a pixel's (row, column) of the images
        return {"input_shape": [2], "preprocessing": split.train.preprocessing.to_dict(),
                "image_shape": list(split.train.image_shape)}
    spec = {"input_shape": list(split.train.image_shape), "preprocessing": split.train.preprocessing.to_dict(),
            "num_classes": int(split.train.num_classes)}
    if config.task_metadata:
        spec["metadata_dim"] = class_metadata_dim(config, split)
    return spec


def class_metadata_dim(config: MetaTrainConfig, split: ClassSplit) -> int:
    """`M`, the size of the class metadata a classification run with `task_metadata` conditions on.

    Args:
        config: a classification config with `task_metadata`.
        split: its classes.

    Returns:
        `split.train.metadata_dim` (the validation and test classes have the same).

    Raises:
        ValueError: if a part of the split has no class metadata, or the parts disagree
            on its size.

    Example:

    ```python
    class_metadata_dim(config, load_data(config))   # Omniglot read from --data_dir: the number of alphabets
    ```
    """
    dims = {name: part.metadata_dim for name, part in zip(split._fields, split)}
    if None in dims.values() or len(set(dims.values())) != 1:
        raise ValueError(
            f"`task_metadata` needs classes with metadata of one size (Omniglot read from --data_dir with "
            f"split 'sample': the one-hot alphabet; a folder: its {FOLDER_METADATA_FILE}). "
            f"Received: dataset={config.dataset!r}, data_dir={config.data_dir!r}, split={config.split!r}, "
            f"metadata_dim by part={dims}"
        )
    return dims["train"]


def train_dataset_fn(config: MetaTrainConfig, split: ClassSplit | None = None):
    """`(start_step, input_context) -> Dataset` of training meta-batches for `config`.

    With an `input_context` each element is one replica's share of the global
    meta-batch (`meta_batch_size / num_replicas` distinct tasks); the shares
    of step `s` together are exactly the single-device meta-batch of step `s`.
    Learners pre-trained as classifiers (registry `training_data` `CLASS_BATCHES`,
    e.g. `"finetune"`) get mini-batches of `config.batch_size` images of all
    training classes with their global labels (`class_batch_dataset`) instead of episodes.
    """
    if config.dataset in COMPLETION_DATASETS:
        return completion_dataset_fn(config, split.train, training=True)
    if config.dataset in GP_DATASETS:
        from tfmeta.data.gp import gp_tasks

        def make(start_step, input_context=None):
            tasks = gp_tasks(config.meta_batch_size, seed=config.seed, start_step=start_step,
                             input_context=input_context, **gp_settings(config)[0])
            return tasks.map(lambda batch: batch.task_episode(config.task_metadata))

        return make
    if config.is_regression:
        from tfmeta.data.regression import sinusoid_tasks

        def make(start_step, input_context=None):
            return sinusoid_tasks(config.shots, config.queries, config.meta_batch_size,
                                  seed=config.seed, start_step=start_step, input_context=input_context,
                                  **sinusoid_options(config, training=True))

        return make
    from tfmeta.data.augment import augment_episode
    from tfmeta.data.pipeline import class_batch_dataset, episode_dataset
    from tfmeta.data.sharding import TaskShard
    from tfmeta.learners import registry

    ways, shots, queries = config.train_episode
    augmentation = config.augmentation
    class_batches = registry.entry(config.variant).training_data == registry.CLASS_BATCHES

    def make(start_step, input_context=None):
        if class_batches:
            episodes = class_batch_dataset(split.train, config.batch_size, config.meta_batch_size, seed=config.seed,
                                           start_step=start_step, input_context=input_context)
        else:
            episodes = episode_dataset(split.train, ways, shots, queries, config.meta_batch_size,
                                       seed=config.seed, start_step=start_step, input_context=input_context,
                                       metadata=config.task_metadata)  # TaskEpisodes with class metadata
        if augmentation.is_identity:
            return episodes
        shard = TaskShard.from_context(config.meta_batch_size, input_context)

        def augment(element, episode):  # the element's step and first task: the same draws on any replica count
            steps, first_task = shard.locate(element)
            return augment_episode(episode, augmentation, config.seed, start_step + steps, first_task)

        return episodes.enumerate().map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    return make


def eval_dataset_fn(config: MetaTrainConfig, split: ClassSplit | None = None, start_step=VALIDATION_START_STEP,
                    num_episodes=None, classes=None):
    """`() -> Dataset` of finite meta-batches of unseen tasks.

    Args:
        config: the run's configuration.
        split: its classes (None for regression).
        start_step: the first task index (validation and test use disjoint ranges).
        num_episodes: tasks in all (default `config.eval_episodes`).
        classes: the `ClassDataset` to draw from (default: the split's validation classes).
    """
    num_episodes = num_episodes or config.eval_episodes
    num_steps = math.ceil(num_episodes / config.meta_batch_size)
    if config.dataset in COMPLETION_DATASETS:  # from step 0: every image once (none is a training image)
        tasks = completion_dataset_fn(config, split.val if classes is None else classes, training=False)
        return lambda: tasks(0).take(num_steps)
    if config.dataset in GP_DATASETS:
        gp = gp_test_dataset_fn(config, start_step, num_episodes)
        return lambda: gp().map(lambda batch: batch.task_episode(config.task_metadata))
    if config.is_regression:
        from tfmeta.data.regression import sinusoid_tasks

        options = sinusoid_options(config, training=False)
        return lambda: sinusoid_tasks(config.shots, config.queries, config.meta_batch_size, seed=config.seed,
                                      start_step=start_step, **options).take(num_steps)
    from tfmeta.data.pipeline import episode_dataset

    classes = split.val if classes is None else classes
    return lambda: episode_dataset(classes, config.ways, config.shots, config.queries, config.meta_batch_size,
                                   seed=config.seed, start_step=start_step, num_steps=num_steps,
                                   metadata=config.task_metadata)


def completion_dataset_fn(config: MetaTrainConfig, classes, training: bool):
    """`(start_step, input_context=None) -> Dataset` of `TaskEpisode`s completing the images of `classes`
    (`tfmeta.data.completion.completion_settings`): training tasks (the context and up to 200 other
    pixels as targets) or test tasks (every pixel a target)."""
    from tfmeta.data.completion import completion_settings, image_completion_tasks

    images = classes.images
    settings = completion_settings(images.shape[1:])[0 if training else 1]

    def make(start_step, input_context=None):
        tasks = image_completion_tasks(images, config.meta_batch_size, seed=config.seed, start_step=start_step,
                                       input_context=input_context, **settings)
        return tasks.map(lambda batch: batch.task_episode())

    return make


def gp_settings(config: MetaTrainConfig) -> tuple[dict, dict]:
    """`(training, test)` settings of `gp_tasks` / `gp_test_tasks` for a GP dataset: the CNP
    paper's (`gp`, fixed kernel) or the ANP paper's (`gp_anp`, kernel drawn per task)."""
    from tfmeta.data import gp

    return (gp.CNP_SETTING, gp.CNP_TEST_SETTING) if config.dataset == "gp" else (gp.ANP_SETTING, gp.ANP_TEST_SETTING)


# Tasks per meta-batch of the GP validation and test streams, whatever the run's
# `meta_batch_size`: the GP generator draws a meta-batch at once, so a fixed size gives every
# run of a seed the same validation and test tasks (CNP and ANP compared on the same tasks).
GP_EVAL_BATCH = 40


def gp_test_dataset_fn(config: MetaTrainConfig, start_step=TEST_START_STEP, num_episodes=None):
    """`() -> Dataset` of `GPEpisode`s (kernel parameters included) of unseen GP tasks: 400 grid
    targets, in meta-batches of `GP_EVAL_BATCH` (the same tasks for any `meta_batch_size`)."""
    from tfmeta.data.gp import gp_test_tasks

    num_steps = math.ceil((num_episodes or config.eval_episodes) / GP_EVAL_BATCH)
    return lambda: gp_test_tasks(GP_EVAL_BATCH, seed=config.seed, start_step=start_step,
                                 **gp_settings(config)[1]).take(num_steps)


def sinusoid_options(config: MetaTrainConfig, training: bool) -> dict:
    """`sinusoid_tasks`' metadata options for `config`: the description with its noise, and
    (training tasks) the drawn number of support points."""
    options = {}
    if config.task_metadata:
        options["metadata_noise"] = float(config.metadata_noise)
    if training and config.min_shots is not None:
        options["min_shots"] = config.min_shots
    return options


# --------------------------------------------------------------- learners


# The options of each learner that the config holds, by registry name (the gradient family's are shared).
LEARNER_OPTIONS = {
    "protonet": lambda config: dict(distance=config.distance),
    "cnp": lambda config: (dict(task="regression", attention=config.attention, metadata_dim=config.metadata_dim)
                           if config.is_regression else dict(task="classification")),
    "hypernet": lambda config: dict(task="regression" if config.is_regression else "classification",
                                    generate=config.generate, metadata_dim=config.metadata_dim),
    "matching": lambda config: dict(fce=config.fce),
    "finetune": lambda config: dict(head=config.head),
    "lstm_meta": lambda config: dict(task="regression" if config.is_regression else "classification",
                                     inner_steps=config.inner_steps, eval_inner_steps=config.eval_inner_steps,
                                     inner_lr=config.inner_lr, hidden_size=config.lstm_hidden_size),
}


def learner_fn(config: MetaTrainConfig, input_shape, num_classes: int | None = None,
               metadata_dim: int | None = None):
    """`() -> Learner`: the network, wrapped by the learner `config.variant` names.

    Regression: an MLP 40-40. Images: `config.backbone` (Conv-4 by default),
    with a `ways`-wide head for the gradient family and without one (an
    embedding) for the metric family. `maml++` is every MAML++ option of
    Antoniou et al. (2019): LSLR, the multi-step loss, per-step BatchNorm
    statistics, weights and biases, derivative-order annealing over the first
    third of `num_iterations`, and (in `optimizer_fn`) the cosine-annealed meta
    learning rate.

    Learners pre-trained as classifiers of all training classes (registry
    `training_data` `CLASS_BATCHES`, `"finetune"`) also take `num_classes`.

    Args:
        config: the run's configuration.
        input_shape: the shape of one example (`data_spec(...)["input_shape"]`).
        num_classes: the number of training classes (`data_spec(...)["num_classes"]`),
            for the learners pre-trained as classifiers.
        metadata_dim: the size of a class's metadata (`data_spec(...)["metadata_dim"]`),
            for classification with `config.task_metadata` (regression's is `config.metadata_dim`).

    Raises:
        ValueError: if such a learner is built without `num_classes`, or a
            classifier with `task_metadata` without `metadata_dim`.
    """
    from tfmeta import learners, models
    from tfmeta.learners import registry

    family = learners.entry(config.variant).family
    pretrained = learners.entry(config.variant).training_data == registry.CLASS_BATCHES
    if pretrained and num_classes is None:
        raise ValueError(
            f"{config.variant} is pre-trained as a classifier of all training classes: it needs their number "
            "(the data spec's 'num_classes', recorded in config.json by runs of this version). Received: num_classes=None"
        )
    class_metadata = config.task_metadata and not config.is_regression
    if class_metadata and metadata_dim is None:
        raise ValueError(f"{config.variant} on {config.dataset} with `task_metadata` conditions on class metadata: it "
                         f"needs its size (the data spec's 'metadata_dim'). Received: metadata_dim=None")

    def make():
        if config.is_regression and family == "amortized" and config.variant == "cnp":
            network = None  # the CNP encodes the raw (x, y) pairs (its network is the identity)
        elif config.is_regression:
            network = models.mlp(input_dim=int(input_shape[0]), hidden=(40, 40), outputs=1)
        else:
            head = config.ways if family == "gradient" or config.variant in FIXED_HEAD_VARIANTS else None
            network = models.build_backbone(config.backbone, ways=head, input_shape=tuple(input_shape))
        if family != "gradient":
            options = LEARNER_OPTIONS[config.variant](config) if config.variant in LEARNER_OPTIONS else {}
            if network is None:  # the identity on x: its size
                options["input_dim"] = int(input_shape[0])
            if pretrained:
                options["num_classes"] = int(num_classes)
            if class_metadata:
                options["metadata_dim"] = int(metadata_dim)
            return learners.build(config.variant, network, **options)
        kwargs = dict(task="regression" if config.is_regression else "classification", inner_steps=config.inner_steps,
                      inner_lr=config.inner_lr, eval_inner_steps=config.eval_inner_steps)
        if config.variant not in ("fomaml", "reptile"):  # Those two are first order by definition.
            kwargs["first_order"] = config.first_order
        if config.variant != "reptile":
            kwargs["msl_anneal_steps"] = config.msl_anneal_steps
            if config.multi_step_loss:
                kwargs["multi_step_loss"] = True
        if config.variant == "maml++":  # Derivative-order annealing: first order for the first third (50/150 epochs).
            kwargs["first_order_steps"] = config.num_iterations // 3
        if config.metadata_dim is not None:  # FiLM-conditioned MAML (the config allows maml, fomaml on sinusoids)
            kwargs["metadata_dim"] = config.metadata_dim
        return learners.build(config.variant, network, **kwargs)

    return make


def optimizer_fn(config: MetaTrainConfig):
    """`() -> keras optimizer`: Adam(meta_lr) for every learner (Reptile's displacement
    is its "gradient"); MAML++ anneals it with a cosine schedule over num_iterations."""

    def make():
        learning_rate = config.meta_lr
        if config.variant == "maml++":  # Antoniou et al. 2019: cosine annealing down to 1e-5.
            from tfmeta.learners import cosine_annealing

            learning_rate = cosine_annealing(config.meta_lr, config.num_iterations, min(1e-5, config.meta_lr))
        return keras.optimizers.Adam(learning_rate=learning_rate)

    return make


def build_trainer(config: MetaTrainConfig, strategy=None, verbose=True, split: ClassSplit | None = None):
    """A `MetaTrainer` for `config` and the classes it uses (None for regression).

    Args:
        config: the run's configuration.
        strategy: None: `distribute.make_strategy(config.strategy, config.devices)`.
        verbose: print progress.
        split: the classes, if already loaded (default: `load_data(config)`).

    Returns:
        `(trainer, split)`.
    """
    config = config.resolved()
    if strategy is None:
        strategy = distribute.make_strategy(config.strategy, config.devices)
    split = load_data(config) if split is None else split
    if (config.select == "best" or config.patience) and split is not None and not split.has_own_validation:
        raise ValueError(
            f"Selecting on validation (select='best' or patience) needs validation classes of the split's own; "
            f"{config.dataset!r} validates on its test classes, which must not select anything. "
            f"Received: select={config.select!r}, patience={config.patience}"
        )
    spec = data_spec(config, split)
    hooks = plot_hooks(config, verbose, split) if distribute.is_chief(strategy) else []
    trainer = MetaTrainer(
        config,
        build_learner=learner_fn(config, spec["input_shape"], spec.get("num_classes"), spec.get("metadata_dim")),
        train_dataset=train_dataset_fn(config, split),
        eval_dataset=eval_dataset_fn(config, split),
        build_optimizer=optimizer_fn(config),
        strategy=strategy,
        verbose=verbose,
        data_spec=spec,
        evaluation_hooks=hooks,
    )
    return trainer, split


# Test tasks drawn at each evaluation of a regression run (`plot_hooks`).
NUM_PLOT_TASKS = 4
PLOT_POINTS = 200  # sinusoid targets per plotted task (the GP test grid has 400)
PLOT_CONTEXT = (10, 50, 100, 200)  # context pixels of the plotted completion tasks (at most the training's)


def completion_plot_episodes(config: MetaTrainConfig, classes):
    """The fixed completion tasks a run draws: the first 4 test tasks' images, every pixel a target, with
    `PLOT_CONTEXT` context pixels (a `TaskEpisode`)."""
    from tfmeta.data.completion import completion_settings, image_completion_tasks

    most = completion_settings(classes.image_shape)[1]["num_context"][1]
    batch = next(iter(image_completion_tasks(classes.images, NUM_PLOT_TASKS, seed=config.seed,
                                             num_context=(most, most), num_extra_targets=None)))
    counts = tf.constant([min(c, most) for c in PLOT_CONTEXT], tf.int32)
    mask = tf.cast(tf.range(most)[None, :] < counts[:, None], tf.float32)  # (4, most): a prefix of each context
    episode = batch.task_episode()
    return episode._replace(support_x=episode.support_x * mask[..., None],
                            support_y=episode.support_y * mask[..., None], support_mask=mask)


def plot_episodes(config: MetaTrainConfig):
    """The fixed test tasks a regression run draws: 4 tasks with dense targets (a `TaskEpisode`)."""
    if config.dataset in GP_DATASETS:
        from tfmeta.data.gp import gp_test_tasks

        batch = next(iter(gp_test_tasks(NUM_PLOT_TASKS, seed=config.seed, start_step=TEST_START_STEP,
                                        per_task_counts=True, **gp_settings(config)[1])))
        return batch.task_episode(config.task_metadata)
    from tfmeta.data.episode import TaskEpisode
    from tfmeta.data.regression import sinusoid_tasks

    options = sinusoid_options(config, training=False)
    batch = next(iter(sinusoid_tasks(config.shots, PLOT_POINTS, NUM_PLOT_TASKS, seed=config.seed,
                                     start_step=TEST_START_STEP, **options)))
    return batch if isinstance(batch, TaskEpisode) else TaskEpisode.from_episode(batch)


def plot_hooks(config: MetaTrainConfig, verbose: bool = True, split: ClassSplit | None = None) -> list:
    """The evaluation hooks of a run: pictures of test-task predictions for regression runs
    (`tfmeta.training.plots`; image completion runs draw images of `split.test`), none for
    classification or without matplotlib (a one-line note)."""
    from tfmeta.training import plots

    if not config.is_regression:
        return []
    if not plots.available():
        if verbose:
            print('note: matplotlib is not installed, so no prediction plots (pip install "tfmeta[plots]")',
                  flush=True)
        return []
    label = "anp" if config.attention else config.variant
    if config.dataset in COMPLETION_DATASETS:
        from tfmeta.data.completion import COORDINATE_RANGE

        return [plots.CompletionPlotHook(completion_plot_episodes(config, split.test), config.resolved().workdir,
                                         split.test.image_shape, COORDINATE_RANGE,
                                         title=f"{label} on {config.dataset}")]
    return [plots.RegressionPlotHook(plot_episodes(config), config.resolved().workdir,
                                     title=f"{label} on {config.dataset}")]


# ---------------------------------------------------------------- the end


def report_steps(config: MetaTrainConfig, learner) -> list:
    """Adaptation step counts the final test reports: `[None]` for a learner
    that adapts in one pass."""
    if learner.eval_steps is None:
        return [None]
    return sorted({s for s in REPORT_STEPS if s <= config.eval_inner_steps} | {config.eval_inner_steps})


def evaluate_on_test(learner, config: MetaTrainConfig, split: ClassSplit | None = None, verbose=True) -> dict:
    """Evaluates `learner` on `config.eval_episodes` tasks of the test classes (tasks never seen in training).

    Returns:
        `{steps: evaluate(...) dict}` (`{None: ...}` for one-pass learners).
    """
    classes = None if split is None else split.test
    dataset = eval_dataset_fn(config, split, start_step=TEST_START_STEP, classes=classes)
    evaluator = evaluation.Evaluator(learner)
    if verbose and config.dataset in COMPLETION_DATASETS:
        images = len(classes.pixels)
        print(f"image completion of {min(images, config.eval_episodes)} distinct test images of {classes.num_classes} "
              f"classes{' (some twice)' if images < config.eval_episodes else ''}, every pixel a target: "
              f"log_likelihood and mse per pixel", flush=True)
    results = {}
    for steps in report_steps(config, learner):
        results[steps] = evaluator.evaluate(dataset(), config.eval_episodes, steps=steps)
        if verbose:
            label = "test" if steps is None else f"test after {steps:2d} inner steps"
            print(f"{label}: {evaluation.format_results(results[steps])}", flush=True)
    if config.dataset in GP_DATASETS:  # the best any model can do on the same tasks
        oracle = evaluation.compare_with_gp_oracle(learner, gp_test_dataset_fn(config)(), config.eval_episodes,
                                                   kernel_metadata=config.task_metadata)
        results[None].update({k: v for k, v in oracle.items() if k != evaluation.NUM_EPISODES_KEY})
        if verbose:
            print(f"exact GP posterior (true kernel): {evaluation.format_gp_oracle(oracle)}", flush=True)
    if config.task_metadata and config.dataset == "sinusoid":  # the amortized family, FiLM-conditioned MAML
        results[learner.eval_steps].update(evaluate_by_shots(learner, config, verbose))  # MAML: at eval_inner_steps
    return results


# Support sizes of the test of a run with task metadata (0: the description alone).
METADATA_SHOTS = (0, 1, 5, 10)


def evaluate_by_shots(learner, config: MetaTrainConfig, verbose: bool = True) -> dict:
    """The test metrics of a sinusoid run with metadata at 0, 1, 5 and 10 support points
    (a gradient-based learner after its `eval_inner_steps`).

    Returns:
        `{"<metric>_<k>shot": (mean, ci95)}`.
    """
    from tfmeta.data.regression import sinusoid_tasks

    num_steps = math.ceil(config.eval_episodes / config.meta_batch_size)
    out = {}
    for shots in METADATA_SHOTS:
        tasks = sinusoid_tasks(shots, config.queries, config.meta_batch_size, seed=config.seed,
                               start_step=TEST_START_STEP, metadata_noise=float(config.metadata_noise)).take(num_steps)
        result = evaluation.Evaluator(learner).evaluate(tasks, config.eval_episodes)  # one trace per support size
        if verbose:
            print(f"test at {shots:2d} shots (metadata noise {config.metadata_noise}): "
                  f"{evaluation.format_results(result)}", flush=True)
        out.update({f"{name}_{shots}shot": value for name, value in result.items()
                    if name != evaluation.NUM_EPISODES_KEY})
    return out


def evaluation_card(test_results: dict) -> dict:
    """The model card's `evaluation` entry: the test results with their 95% CIs."""
    if not test_results:
        return {}
    as_dict = lambda r: {k: {"mean": float(v[0]), "ci95": float(v[1])} for k, v in r.items()
                         if k != evaluation.NUM_EPISODES_KEY}
    card = {"split": "test (classes or tasks never seen in training)",
            "episodes": int(next(iter(test_results.values()))[evaluation.NUM_EPISODES_KEY])}
    if list(test_results) == [None]:
        card["results"] = as_dict(test_results[None])
    else:
        card["after_inner_steps"] = {str(steps): as_dict(r) for steps, r in test_results.items()}
    return card


def export_learner(learner, config: MetaTrainConfig, spec: dict, step: int, test_results: dict | None = None):
    """Exports a trained learner as an adapt-and-predict SavedModel.

    Classification runs give `export_few_shot_classifier`, regression runs
    `export_few_shot_regressor`, under `<config.export_dir>/<config.export_name>/<version>`
    (the next free version; never overwritten). The model card holds the
    configuration, the checkpoint step, the preprocessing of the training data
    and the test results (mean and 95% CI).

    Args:
        learner: the trained (or restored) learner.
        config: the run's configuration (resolved: `export_name` set).
        spec: the run's data spec (`data_spec`, or `config.json`'s `"data"`).
        step: the checkpoint step of the learner's state.
        test_results: `{steps: evaluate(...) dict}`, e.g. `RunResult.test_results`.

    Returns:
        The new version directory.

    Example:

    ```python
    result = run(config)                    # exports already unless export_dir == ""
    path = export_learner(result.trainer.learner, result.config, data_spec(result.config, split), step)
    ```
    """
    from tfmeta import export

    config = config.resolved()
    card = {"training": config.to_dict(), "checkpoint_step": int(step), "evaluation": evaluation_card(test_results)}
    steps = None if learner.eval_steps is None else config.eval_inner_steps
    if config.preset is not None:
        from tfmeta.training.presets import PRESETS

        card["preset"] = {"name": config.preset, "paper": PRESETS[config.preset].paper}
    if config.dataset in COMPLETION_DATASETS:  # what a client must send: pixel coordinates
        from tfmeta.data.completion import COORDINATE_RANGE

        card["completion"] = {"image_shape": spec.get("image_shape"), "preprocessing": spec.get("preprocessing"),
                              "coordinate_range": list(COORDINATE_RANGE),
                              "x": "(row, column) of a pixel, scaled from (0, H - 1) and (0, W - 1) to "
                                   "coordinate_range", "y": "the pixel's intensity in [0, 1] (strokes 1)"}
    if config.is_regression:
        return export.export_few_shot_regressor(learner, config.export_dir, config.export_name,
                                                model_card=card, inner_steps=steps)
    card["shots"] = config.shots
    return export.export_few_shot_classifier(learner, config.export_dir, config.export_name, model_card=card,
                                             inner_steps=steps, preprocessing=spec["preprocessing"],
                                             max_ways=config.max_ways, max_shots=config.max_shots)


def export_trained(trainer: MetaTrainer, config: MetaTrainConfig, test_results: dict | None = None):
    """`export_learner` for a trained `MetaTrainer` (its learner, step and data spec)."""
    return export_learner(trainer.learner, config, trainer.data_spec, int(trainer.step.numpy()), test_results)


def run(config: MetaTrainConfig, strategy=None, verbose: bool = True) -> RunResult:
    """Meta-trains (or resumes) as `config` says, then tests on unseen tasks and exports.

    Args:
        config: the run's `MetaTrainConfig`.
        strategy: a `tf.distribute.Strategy` (default: the one `config.strategy`
            names, built by `tfmeta.training.distribute.make_strategy`).
        verbose: print progress and the test results.

    Returns:
        A `RunResult` (the trained learner is `result.trainer.learner`; the
        SavedModel is at `result.export_path`). On the non-chief workers of a
        multi-worker run `test_results` is empty and nothing is exported
        (only the chief tests and exports).

    Raises:
        NonFiniteLossError: if training diverges (the last checkpoint is kept).
        PreemptedError: if the run got SIGTERM (it saved a checkpoint at the
            current step; the same call resumes it).
        DamagedCheckpointError: if every checkpoint of the workdir is damaged.

    Example:

    ```python
    result = run(MetaTrainConfig(num_iterations=200, workdir="runs/quick"))
    result.test_results[10]["mse"]   # (mean, ci95) after 10 inner steps
    ```
    """
    from tfmeta.learners import registry

    if registry.entry(config.variant).training_data == registry.SEQUENCES:
        raise ValueError(f"{config.variant} trains on label-offset sequences: use python -m trainers.mann "
                         f"(tfmeta.training.sequences.run_sequences). Received: variant={config.variant!r}")
    config = config.resolved()
    trainer, split = build_trainer(config, strategy, verbose)
    if verbose:
        print(f"tfmeta: {config.variant} on {config.dataset}; workdir {config.workdir}", flush=True)
    history = trainer.train()
    if trainer.preempted:
        raise PreemptedError(f"Preempted (SIGTERM) at step {int(trainer.step.numpy())}; the checkpoint is saved: run "
                             f"the same command again to resume. Received: workdir={config.workdir!r}")
    results, path = test_and_export(trainer, config, split, verbose=verbose)
    return RunResult(config, trainer, history, results, path)


def test_and_export(trainer: MetaTrainer, config: MetaTrainConfig, split: ClassSplit | None = None,
                    verbose: bool = True):
    """The end of a run: on the chief only, tests on unseen tasks, then exports.

    Returns:
        `(test_results, export_path)`: `({}, None)` on non-chief workers;
        `export_path` is None when `config.export_dir` is empty.
    """
    if not trainer.is_chief:  # Only the chief tests and exports.
        return {}, None
    if config.select == "best":
        step = trainer.restore_best()
        if verbose:
            print(f"Testing the checkpoint with the best {trainer.selection_key()[0]}: step {step}", flush=True)
    results = evaluate_on_test(trainer.learner, config, split, verbose=verbose)
    path = None
    if config.export_dir:
        path = export_trained(trainer, config, results)
        if verbose:
            print(f"exported {path}", flush=True)
    return results, path
