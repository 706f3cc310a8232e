"""What the trainers share: the meta-training flags, threads, and how errors are shown.

Each meta-training flag is a `MetaTrainConfig` field of the same name; its
default is read from the dataclass (defaults live there only).

`main(fn)` runs a trainer: a bad flag value, missing or bad data, a workdir
that belongs to another run or a diverging run end with one line on stderr
(`error: ...`) and exit status 1; `--verbose` shows the traceback and
TensorFlow's own log lines instead. A run stopped by SIGTERM (preemption) saves a
checkpoint at its current step and exits with status 42
(`tfmeta.training.preemption.PREEMPTED_EXIT_CODE`); the same command resumes it.
"""

import dataclasses
import sys

from absl import app, flags, logging

from tfmeta.learners import registry
from tfmeta.training.config import (
    DISTANCES,
    GENERATES,
    HEADS,
    MIXED_PRECISION_POLICIES,
    OMNIGLOT_SPLITS,
    REGRESSION_DATASETS,
    SELECTIONS,
    STRATEGIES,
    MetaTrainConfig,
)

flags.DEFINE_bool("verbose", False, "Show tracebacks on errors and TensorFlow's log lines.")
flags.DEFINE_string("preset", None, "Start from a published configuration (`tfmeta.training.presets.PRESETS`, e.g. "
                    "maml_omniglot_5w1s, protonet_omniglot_20w1s); flags given explicitly override its values.")

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(MetaTrainConfig)}
_HELP = {
    "dataset": "'sinusoid', 'gp', 'gp_anp', 'omniglot' (archives or unpacked tree in --data_dir), "
               "'omniglot_completion' (CNP image completion), 'mini_imagenet', 'tiered_imagenet', 'cifar_fs', 'fc100', "
               "'cub', 'folder' or a TFDS name.",
    "data_dir": "Where the data lives (omniglot, folder, TFDS cache).",
    "ways": "Classes per task (classification).",
    "shots": "Support examples per class (regression: support points).",
    "queries": "Query examples per class (regression: query points).",
    "meta_batch_size": "Tasks per meta-update.",
    "inner_steps": "Inner (adaptation) steps while meta-training.",
    "inner_lr": "Inner learning rate.",
    "eval_inner_steps": "Inner steps at evaluation; the test also reports 0/1/5/10 steps up to this.",
    "meta_lr": "Outer (Adam) learning rate.",
    "first_order": "First-order MAML (no second derivatives).",
    "multi_step_loss": "MAML++ multi-step loss for any MAML-family variant (on for maml++): the query loss after "
                       "every inner step, weights annealed towards the last step over --msl_anneal_steps.",
    "msl_anneal_steps": "Meta-updates over which the multi-step loss weights are annealed (MAML++: 5000).",
    "variant": "Algorithm variant.",
    "num_iterations": "Meta-updates in total (also when resuming).",
    "eval_every": "Steps between checkpoints and validation evaluations.",
    "eval_episodes": "Tasks per evaluation (the final test on unseen tasks too).",
    "seed": "Seed of the initialisation and of every task stream.",
    "workdir": "Run directory (config.json, checkpoints/, tensorboard/); default runs/<variant>_<dataset>.",
    "export_dir": "Root of SavedModel exports; the trained model is exported to <export_dir>/<export_name>/<version> "
                  "at the end of the run ('' to skip).",
    "export_name": "Name of the export; default <variant>_<dataset>[_<ways>way_<shots>shot].",
    "resume": "Continue from the workdir's latest checkpoint if any (same config required); "
              "--noresume refuses a workdir that holds checkpoints.",
    "strategy": "tf.distribute strategy: default (one device), mirrored (all local GPUs or --devices), "
                "multi_worker (MultiWorkerMirroredStrategy from TF_CONFIG), tpu (untested). "
                "--meta_batch_size is global: each replica gets meta_batch_size/replicas tasks.",
    "devices": "Devices of --strategy=mirrored, comma-separated (e.g. GPU:0,GPU:1); default all local GPUs.",
    "mixed_precision": "none | mixed_float16 (loss-scaled) | mixed_bfloat16: 16-bit compute, float32 variables.",
    "backbone": "Network of image tasks: conv4, conv4_32, resnet12, conv4_relation (feature maps, Relation "
                "Networks) or package.module:factory.",
    "train_ways": "Classes per training episode (default: --ways).",
    "train_shots": "Support examples per class in training episodes (default: --shots).",
    "train_queries": "Query examples per class in training episodes (default: --queries).",
    "distance": "Prototypical Networks: euclidean (squared) or cosine.",
    "fce": "Matching Networks: full context embeddings (bidirectional LSTM, attention LSTM).",
    "head": "Fine-tuning baselines: the head fitted on the support set: linear, cosine (Baseline++) or logreg.",
    "batch_size": "Pre-training as a classifier of all training classes: images per task; a step holds "
                  "--meta_batch_size such mini-batches.",
    "max_ways": "Export: the most classes one request may hold (learners that serve any number).",
    "max_shots": "Export: the most support examples of one class a request may hold.",
    "split": "Omniglot's class split: sample (default; the two sample archives), vinyals or lake (full release).",
    "image_size": "Side of the square images (default: the data set's usual size, or a folder's own).",
    "channels": "Folders and TFDS: 1 (greyscale) or 3 (RGB).",
    "select": "Checkpoint the final test and the export use: last, or best (best validation metric).",
    "crop_padding": "Training augmentation: random crop after zero padding of this many pixels (0: none; "
                    "default: the data set's, tfmeta.data.AUGMENTATIONS: 8 on miniImageNet, none on Omniglot).",
    "flip": "Training augmentation: random left-right flips (default: the data set's; --noflip: none).",
    "color_jitter": "Training augmentation: brightness/contrast/saturation jitter strength in [0, 1] "
                    "(0: none; default: the data set's).",
    "patience": "Stop after this many evaluations without a better validation metric (0: never).",
    "attention": "Neural Processes: the Attentive NP's self- and cross-attention (Kim et al. 2019) instead of the mean.",
    "generate": "HyperNetworks: all (every weight of the MLP; regression), head (the classifier head) or film "
                "(FiLM scales and shifts of Conv-4's BatchNorm layers); default all for regression, head otherwise.",
    "task_metadata": "Condition on each task's description (sinusoid: amplitude and phase; GP: the kernel's scales; "
                     "omniglot: each class's one-hot alphabet; folder: its metadata.json; needs --export_dir=; "
                     "maml, fomaml: FiLM of the initialisation, sinusoids only).",
    "metadata_noise": "Standard deviation of the noise on the sinusoid description (0: exact).",
    "lstm_hidden_size": "LSTM meta-learner: units of its first (ordinary) LSTM layer per coordinate (20 in Ravi & "
                        "Larochelle 2017; 0: the gates read the preprocessed gradient and loss directly, ~5x cheaper).",
    "min_shots": "Sinusoid training tasks: draw the number of support points per task in [min_shots, shots] "
                 "(0 also trains prediction from the description alone).",
}

# The flags of each kind of trainer (each a MetaTrainConfig field of the same name).
COMMON_FIELDS = ("dataset", "data_dir", "split", "image_size", "channels", "ways", "shots", "queries",
                 "meta_batch_size", "meta_lr", "num_iterations", "eval_every", "eval_episodes", "select", "patience",
                 "crop_padding", "flip", "color_jitter",
                 "seed", "workdir", "export_dir", "export_name", "resume", "strategy", "devices", "mixed_precision",
                 "backbone")
GRADIENT_FIELDS = ("variant", "inner_steps", "inner_lr", "eval_inner_steps", "first_order", "multi_step_loss",
                   "msl_anneal_steps")
METADATA_FIELDS = ("task_metadata", "metadata_noise", "min_shots")  # FiLM-conditioned MAML (trainers.maml)
METRIC_FIELDS = ("train_ways", "train_shots", "train_queries", "max_ways", "max_shots")
AMORTIZED_FIELDS = METRIC_FIELDS + METADATA_FIELDS
LSTM_META_FIELDS = ("inner_steps", "inner_lr", "eval_inner_steps", "train_queries", "lstm_hidden_size")
_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(MetaTrainConfig)}
ENUMS = {"mixed_precision": MIXED_PRECISION_POLICIES, "distance": DISTANCES, "head": HEADS, "split": OMNIGLOT_SPLITS,
         "select": SELECTIONS, "generate": GENERATES}
_defined = []  # the flags define_flags defined
_defaults = {}  # every field's value when it has no flag: the trainer's defaults


def define_thread_flags() -> None:
    """Defines `--intra_op_threads` and `--inter_op_threads` (see `configure_threads`)."""
    flags.DEFINE_integer(
        "intra_op_threads", 1,
        "Threads one TensorFlow op may use (0: TensorFlow's default, one per core). 1 is fastest for "
        "meta-training on CPU (measured by benchmarks.meta_step): the tasks of a meta-batch run in parallel instead.",
        lower_bound=0,
    )
    flags.DEFINE_integer("inter_op_threads", 0, "TensorFlow ops run at once (0: one per core).", lower_bound=0)


def configure_threads() -> None:
    """Applies the thread flags; call before TensorFlow runs anything."""
    import tensorflow as tf  # noqa: PLC0415 - only once the flags are parsed

    tf.config.threading.set_intra_op_parallelism_threads(flags.FLAGS.intra_op_threads)
    tf.config.threading.set_inter_op_parallelism_threads(flags.FLAGS.inter_op_threads)


def define_flags(fields=COMMON_FIELDS + GRADIENT_FIELDS, defaults=None) -> None:
    """Defines one absl flag per listed `MetaTrainConfig` field, and the thread flags.

    Args:
        fields: the config fields this trainer exposes (the others keep the
            config's defaults).
        defaults: the trainer's defaults where they differ from the config's
            (data, e.g. `tfmeta.training.presets.TRAINER_DEFAULTS["protonet"]`).
    """
    define_thread_flags()
    defaults = {**_DEFAULTS, **(defaults or {})}
    for name in fields:
        default, help_text, kind = defaults[name], _HELP[name], _FIELD_TYPES[name]
        if name == "variant":
            flags.DEFINE_enum(name, default, registry.names(), help_text)
        elif name == "strategy":
            flags.DEFINE_enum(name, default, STRATEGIES, help_text)
        elif name in ENUMS:
            flags.DEFINE_enum(name, default, ENUMS[name], help_text)
        elif kind in (bool, bool | None):
            flags.DEFINE_boolean(name, default, help_text)
        elif kind in (int, int | None):
            flags.DEFINE_integer(name, default, help_text)
        elif kind in (float, float | None):
            flags.DEFINE_float(name, default, help_text)
        else:
            flags.DEFINE_string(name, default, help_text)
        _defined.append(name)
    _defaults.update({name: defaults[name] for name in _DEFAULTS})


def config_from_flags(trainer: str = "maml", classification_defaults=None, **fixed) -> MetaTrainConfig:
    """The `MetaTrainConfig` the command line describes.

    Args:
        trainer: the running trainer's name (`--preset` must be one of its presets).
        classification_defaults: optional `{field: value}`: for a trainer whose
            defaults are a regression run's, the defaults of its classification
            runs (`--dataset` not a regression task family), for the fields
            neither given on the command line nor set by `--preset`.
        **fixed: fields this trainer forces (e.g. `variant="protonet"`).

    Returns:
        The trainer's defaults (and `classification_defaults` where they apply),
        overridden by `--preset`'s values, overridden by the flags given on the
        command line, with `fixed` applied.

    Raises:
        ValueError: on an unknown `--preset`, or one of another trainer.
    """
    from tfmeta.training.presets import PRESETS  # noqa: PLC0415

    values = dict(_defaults)
    values.update({name: flags.FLAGS[name].value for name in _defined})
    given = {field for field in _defined if flags.FLAGS[field].present}
    preset_config = {}
    name = flags.FLAGS.preset
    if name is not None:
        if name not in PRESETS:
            raise ValueError(f"Unknown --preset; expected one of {', '.join(PRESETS)}. Received: --preset={name}")
        if PRESETS[name].trainer != trainer:
            raise ValueError(f"--preset={name} runs with `python -m trainers.{PRESETS[name].trainer}`; "
                             f"received it in trainers.{trainer}")
        preset_config = PRESETS[name].config
        values.update({field: value for field, value in preset_config.items() if field not in given})
        values["preset"] = name
    if classification_defaults and values["dataset"] not in REGRESSION_DATASETS:
        values.update({field: value for field, value in classification_defaults.items()
                       if field not in given and field not in preset_config})
    values.update(fixed)
    return MetaTrainConfig(**values)


def main(fn) -> None:
    """`absl.app.run(fn)`, with the user's errors shown as one line (see the module docstring).

    Example:

    ```python
    if __name__ == "__main__":
        common.main(main)
    ```
    """
    import tensorflow as tf  # noqa: PLC0415

    from tfmeta.training.checkpoints import WorkdirConfigMismatchError  # noqa: PLC0415
    from tfmeta.training.checkpoints import DamagedCheckpointError  # noqa: PLC0415
    from tfmeta.training.loop import NonFiniteLossError  # noqa: PLC0415
    from tfmeta.training.preemption import PREEMPTED_EXIT_CODE, PreemptedError  # noqa: PLC0415

    user_errors = (ValueError, OSError, NonFiniteLossError, WorkdirConfigMismatchError, tf.errors.OpError,
                   DamagedCheckpointError)

    def wrapped(argv):
        verbose = flags.FLAGS.verbose
        logging.set_verbosity(logging.INFO if verbose else logging.WARNING)
        if not verbose:
            tf.get_logger().setLevel("ERROR")  # e.g. retracing warnings
        try:
            return fn(argv)
        except PreemptedError as error:  # saved; a scheduler restarts the same command
            print(str(error), file=sys.stderr)
            sys.exit(PREEMPTED_EXIT_CODE)
        except user_errors as error:
            if verbose:
                raise
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            print(f"error: {message}", file=sys.stderr)
            print("(--verbose shows the traceback)", file=sys.stderr)
            sys.exit(1)

    app.run(wrapped)
