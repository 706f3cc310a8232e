"""`MetaTrainConfig`: everything that defines a meta-training run."""

import dataclasses
import json
import math
import re

from tfmeta.data.splits import OMNIGLOT_SPLITS
from tfmeta.learners import registry

DATASETS = ("sinusoid", "gp", "gp_anp", "omniglot_completion", "omniglot", "folder")  # or any TFDS name
# Regression task families: sinusoids, Gaussian-process tasks (`gp`: the CNP paper's
# fixed kernel; `gp_anp`: the ANP paper's kernel drawn per task) and image completion
# (`omniglot_completion`: pixel coordinates -> intensity, one Omniglot image per task).
REGRESSION_DATASETS = ("sinusoid", "gp", "gp_anp", "omniglot_completion")
GP_DATASETS = ("gp", "gp_anp")
COMPLETION_DATASETS = ("omniglot_completion",)
# Classification data sets whose classes may carry metadata (`ClassDataset.class_metadata`) for `task_metadata`.
CLASS_METADATA_DATASETS = ("omniglot", "folder")
GENERATES = ("all", "head", "film")  # HyperNetwork: every weight, the classifier head, FiLM layers
# The MAML variants that condition on sinusoid task metadata (FiLM of the initialisation, `MAML(metadata_dim=...)`).
FILM_MAML_VARIANTS = ("maml", "fomaml")
# Learners outside the gradient family whose network has a `ways`-wide head (trained on `ways`-way episodes).
FIXED_HEAD_VARIANTS = ("lstm_meta",)
DISTANCES = ("euclidean", "cosine")  # Prototypical Networks
HEADS = ("linear", "cosine", "logreg")  # fine-tuning baselines: Baseline, Baseline++, RFS
SELECTIONS = ("last", "best")
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
MIXED_PRECISION_POLICIES = ("none", "mixed_float16", "mixed_bfloat16")

# Fields that may differ when a run is resumed: they change how long the run goes
# on, how it reports and where things go, but not the trajectory of the parameters.
# The strategy may change too: the update is the mean over the same global
# meta-batch at any replica count (equal up to float round-off).
RESUMABLE_FIELDS = frozenset(
    {"num_iterations", "eval_every", "eval_episodes", "workdir", "export_dir", "export_name", "resume", "data_dir",
     "strategy", "devices", "max_ways", "max_shots", "select", "patience"}
)


@dataclasses.dataclass(frozen=True)
class MetaTrainConfig:
    """Configuration of one meta-training run (the defaults live here only).

    With no arguments: second-order MAML on sinusoid regression (Finn et al.,
    2017): an MLP 40-40, K=5 support and K=5 query points (as their reference
    code), one inner step of size 0.01, meta-batch 25, Adam 1e-3, short
    enough for a few CPU minutes.
    Published settings are in `tfmeta.training.presets`.

    Attributes:
        dataset: `"sinusoid"`, `"gp"`, `"gp_anp"`, `"omniglot"` (the Omniglot archives or an
            unpacked tree in `data_dir`; without `data_dir`, TFDS `omniglot`), `"omniglot_completion"`
            (image completion tasks on the images of the same Omniglot `split`'s classes,
            `tfmeta.data.completion`), `"folder"` (an image folder `<class>/*.png` in `data_dir`)
            or a TFDS name.
        data_dir: where the data lives (`omniglot`, `folder`, TFDS cache).
        ways: classes per task (classification only).
        shots: support examples per class (regression: support points).
        queries: query examples per class (regression: query points).
        meta_batch_size: tasks per meta-update.
        inner_steps: inner (adaptation) steps during meta-training.
        inner_lr: inner learning rate (initial value for learned ones).
        eval_inner_steps: inner steps at evaluation time; the final test also
            reports 0, 1, 5 and 10 steps where these are <= this value.
        meta_lr: outer (Adam) learning rate.
        first_order: drop second derivatives (first-order MAML).
        multi_step_loss: MAML++'s multi-step loss for any MAML-family variant
            (on for `maml++`): the meta-loss weighs the query loss after
            every inner step, the weights annealed towards the last step.
        msl_anneal_steps: meta-updates over which the multi-step loss
            weights are annealed (MAML++: 5,000).
        variant: the learner, a registry name (`tfmeta.learners.names()`):
            `"maml"`, `"fomaml"`, `"anil"`, `"metasgd"`, `"maml++"`,
            `"reptile"`, `"protonet"`, ...
        num_iterations: number of meta-updates in total (also when resuming).
        eval_every: steps between checkpoints and validation evaluations.
        eval_episodes: tasks for each evaluation (final test: at least this).
        seed: seeds the learner's initialisation and every task stream.
        workdir: run directory (`config.json`, `checkpoints/`,
            `tensorboard/`); None: `runs/<variant>_<dataset>`.
        export_dir: root of SavedModel exports (`<export_dir>/<name>/<version>`);
            the trained model is exported there at the end of the run. Empty
            string: no export.
        export_name: the export's name; None: `<variant>_<dataset>` plus
            `_<ways>way_<shots>shot` for classification (`maml++` -> `mamlpp`).
        resume: continue from the latest checkpoint in `workdir` if there is
            one (its `config.json` must match); if False, a `workdir` that
            already holds checkpoints is an error (never overwritten).
        strategy: `tf.distribute` strategy: `"default"` (one device),
            `"mirrored"` (all local GPUs, or `devices`), `"multi_worker"`
            (`MultiWorkerMirroredStrategy` from `TF_CONFIG`) or `"tpu"`
            (untested). `meta_batch_size` is the global meta-batch: each
            replica gets `meta_batch_size / replicas` distinct tasks and the
            replicas' mean gradients are averaged (see
            `tfmeta.training.distribute`). May change when resuming.
        devices: devices of the `"mirrored"` strategy, comma-separated
            (`"GPU:0,GPU:1"`); None: all local GPUs.
        mixed_precision: `"none"`, `"mixed_float16"` (with loss scaling) or
            `"mixed_bfloat16"`: 16-bit computation, float32 variables.
        backbone: the network of image tasks (`tfmeta.models.build_backbone`):
            `"conv4"`, `"conv4_32"`, `"resnet12"`, `"conv4_relation"` (feature
            maps, for Relation Networks) or `"package.module:factory"`;
            with a head of `ways` outputs for the gradient family, without one
            (an embedding) for the metric family.
        train_ways, train_shots, train_queries: the training episodes' shape
            when it differs from the test episodes' (`ways`, `shots`,
            `queries`; None: the same). Snell et al. train Omniglot
            Prototypical Networks on 60-way episodes with 5 queries per class.
            The gradient family's head is `ways` wide: `train_ways` must equal it.
        distance: Prototypical Networks: `"euclidean"` (squared) or `"cosine"`.
        fce: Matching Networks: full context embeddings (a bidirectional LSTM
            over the support embeddings, an attention LSTM for the queries).
        head: fine-tuning baselines: the head fitted on the support set at test
            time, `"linear"` (Baseline), `"cosine"` (Baseline++) or `"logreg"`
            (logistic regression on L2-normalised features, Tian et al.).
        batch_size: learners pre-trained as classifiers of all training classes
            (`"finetune"`): images per pre-training task; each step holds
            `meta_batch_size` such mini-batches (replicas split them), one
            mini-batch of `meta_batch_size * batch_size` images. Chen et al.
            (2019) pre-train on batches of 16. Unused by episodic learners.
        max_ways, max_shots: the largest number of classes, and of examples per
            class, one request to an export of a learner that serves any number
            of classes may hold (written in the model card; above them, a
            request is rejected).
        split: Omniglot's class split: `"sample"` (None: the default, for the
            two sample archives), `"vinyals"` or `"lake"` (the full release).
            The other standard data sets have their published split.
        image_size: the side of the square images (None: the data set's usual
            size, or a folder's own).
        channels: folders and TFDS: 1 or 3 (None: 1 for folders, the data set's own).
        crop_padding, flip, color_jitter: training-time augmentation of the
            training episodes' images (`tfmeta.data.Augmentation`: random crop
            after zero padding, left-right flips, colour jitter); off at
            validation and test. None (the default): the data set's own
            setting, as the papers train on it (`tfmeta.data.AUGMENTATIONS`:
            none on Omniglot, folders and TFDS names; crops, flips and jitter
            on miniImageNet, tieredImageNet, CIFAR-FS and FC100); 0 / False:
            off. `config.augmentation` is the resolved setting.
        select: the checkpoint the final test and the export use: `"last"`, or
            `"best"` (the best validation metric: accuracy, or MSE for
            regression; needs validation classes of the split's own).
        patience: stop after this many evaluations without a better validation
            metric (0: never; needs validation classes of the split's own).
        attention: Neural Processes (`cnp`): the Attentive NP's self- and
            cross-attention (Kim et al., 2019) instead of the mean.
        generate: HyperNetworks (`hypernet`): `"all"` the target's weights
            (regression), `"head"` the classifier head or `"film"` FiLM scales
            and shifts of the BatchNorm layers (classification); None: `"all"`
            for regression, `"head"` for classification.
        task_metadata: amortized learners condition on each task's description
            (sinusoids: amplitude and phase; GP tasks: length and signal scale;
            `omniglot` and `folder`: each class's metadata, `ClassDataset.class_metadata`:
            Omniglot's one-hot alphabet, a folder's `metadata.json`); `maml` and
            `fomaml` on sinusoids by FiLM of their initialisation. Classifier
            exports do not take class metadata yet: classification runs with it
            need `export_dir=""`.
        metadata_noise: standard deviation of the noise added to the sinusoid
            description (0: exact).
        min_shots: sinusoid training tasks (amortized learners; `maml` and
            `fomaml` with `task_metadata`): the number of
            support points is drawn per task, uniform in `min_shots..shots`
            (None: always `shots`; 0 trains prediction from the description alone).
        preset: the published configuration the run started from
            (`tfmeta.training.presets`; its paper's figure goes into
            `config.json` and the model card), or None.
        lstm_hidden_size: the LSTM meta-learner (`lstm_meta`): units of its
            first, ordinary LSTM layer per coordinate (20 in Ravi & Larochelle
            2017; 0: the gates read the preprocessed gradient and loss directly).
    """

    dataset: str = "sinusoid"
    data_dir: str | None = None
    ways: int = 5
    shots: int = 5
    queries: int = 5
    meta_batch_size: int = 25
    inner_steps: int = 1
    inner_lr: float = 0.01
    eval_inner_steps: int = 10
    meta_lr: float = 1e-3
    first_order: bool = False
    multi_step_loss: bool = False
    msl_anneal_steps: int = 5000
    variant: str = "maml"
    num_iterations: int = 10000
    eval_every: int = 1000
    eval_episodes: int = 600
    seed: int = 0
    workdir: str | None = None
    export_dir: str = "saved_models"
    export_name: str | None = None
    resume: bool = True
    strategy: str = "default"
    devices: str | None = None
    mixed_precision: str = "none"
    backbone: str = "conv4"
    train_ways: int | None = None
    train_shots: int | None = None
    train_queries: int | None = None
    distance: str = "euclidean"
    fce: bool = False
    head: str = "logreg"
    batch_size: int = 16
    max_ways: int = 100
    max_shots: int = 100
    split: str | None = None
    image_size: int | None = None
    channels: int | None = None
    crop_padding: int | None = None
    flip: bool | None = None
    color_jitter: float | None = None
    select: str = "last"
    patience: int = 0
    attention: bool = False
    generate: str | None = None
    task_metadata: bool = False
    metadata_noise: float = 0.0
    min_shots: int | None = None
    preset: str | None = None
    lstm_hidden_size: int = 20

    def __post_init__(self):
        for name in ("ways", "shots", "queries", "meta_batch_size", "inner_steps", "eval_inner_steps",
                     "msl_anneal_steps", "num_iterations", "eval_every", "eval_episodes", "seed", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"`{name}` must be an integer. Received: {name}={value!r}")
        for name in ("shots", "queries", "meta_batch_size", "msl_anneal_steps", "num_iterations", "eval_every",
                     "eval_episodes", "batch_size"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"`{name}` must be >= 1. Received: {name}={value}")
        if self.ways < 2:
            raise ValueError(f"ways must be >= 2. Received: ways={self.ways}")
        if self.preset is not None:
            from tfmeta.training.presets import PRESETS  # noqa: PLC0415 - presets import this module

            if self.preset not in PRESETS:
                raise ValueError(f"Unknown `preset`; expected one of {', '.join(PRESETS)}. "
                                 f"Received: preset={self.preset!r}")
        if self.inner_steps < 0 or self.eval_inner_steps < 0:
            name = "inner_steps" if self.inner_steps < 0 else "eval_inner_steps"
            raise ValueError(f"`{name}` must be >= 0. Received: {name}={getattr(self, name)}")
        if self.seed < 0:
            raise ValueError(f"`seed` must be >= 0. Received: seed={self.seed}")
        for name in ("inner_lr", "meta_lr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"`{name}` must be a finite number > 0. Received: {name}={value!r}")
        if self.variant not in registry.names():
            raise ValueError(
                f"`variant` must be one of {', '.join(registry.names())}. Received: variant={self.variant!r}"
            )
        if registry.entry(self.variant).training_data == registry.ENVIRONMENTS:
            raise ValueError(f"{self.variant!r} learns from environment rollouts: train it with "
                             f"`python -m trainers.{self.variant}`. Received: variant={self.variant!r}")
        for name, low in (("train_ways", 2), ("train_shots", 1), ("train_queries", 1), ("max_ways", 2),
                          ("max_shots", 1)):
            value = getattr(self, name)
            if value is None and name.startswith("train_"):
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"`{name}` must be an integer >= {low}. Received: {name}={value!r}")
        family = registry.entry(self.variant).family
        if not isinstance(self.lstm_hidden_size, int) or isinstance(self.lstm_hidden_size, bool) \
                or self.lstm_hidden_size < 0:
            raise ValueError(f"`lstm_hidden_size` must be an integer >= 0. "
                             f"Received: lstm_hidden_size={self.lstm_hidden_size!r}")
        if (family == "gradient" or self.variant in FIXED_HEAD_VARIANTS) and self.train_ways not in (None, self.ways):
            raise ValueError(
                f"{self.variant}'s head has `ways` outputs: train on {self.ways}-way episodes (train_ways=None). "
                f"Received: ways={self.ways}, train_ways={self.train_ways}"
            )
        if family == "metric" and self.is_regression:
            raise ValueError(
                f"{self.variant} classifies images; dataset={self.dataset!r} is a regression task family. "
                f"Choose --dataset=omniglot, folder or a TFDS name. Received: variant={self.variant!r}"
            )
        self._check_amortized_fields(family)
        if self.distance not in DISTANCES:
            raise ValueError(f"`distance` must be one of {', '.join(DISTANCES)}. Received: distance={self.distance!r}")
        if self.head not in HEADS:
            raise ValueError(f"`head` must be one of {', '.join(HEADS)}. Received: head={self.head!r}")
        if self.split is not None and self.split not in OMNIGLOT_SPLITS:
            raise ValueError(f"`split` must be one of {', '.join(OMNIGLOT_SPLITS)}. Received: split={self.split!r}")
        if self.image_size is not None and (not isinstance(self.image_size, int) or self.image_size < 8):
            raise ValueError(f"`image_size` must be None or an integer >= 8. Received: image_size={self.image_size!r}")
        if self.channels not in (None, 1, 3):
            raise ValueError(f"`channels` must be None, 1 or 3. Received: channels={self.channels!r}")
        if self.crop_padding is not None and (not isinstance(self.crop_padding, int)
                                              or isinstance(self.crop_padding, bool) or self.crop_padding < 0):
            raise ValueError(f"`crop_padding` must be None or an integer >= 0. "
                             f"Received: crop_padding={self.crop_padding!r}")
        if self.flip not in (None, True, False):
            raise ValueError(f"`flip` must be None, True or False. Received: flip={self.flip!r}")
        if self.color_jitter is not None and (isinstance(self.color_jitter, bool)
                                              or not isinstance(self.color_jitter, (int, float))
                                              or not 0.0 <= self.color_jitter <= 1.0):
            raise ValueError(f"`color_jitter` must be None or a number in [0, 1]. "
                             f"Received: color_jitter={self.color_jitter!r}")
        if self.is_regression and (self.crop_padding or self.flip or self.color_jitter):
            raise ValueError(f"Image augmentation needs image tasks. Received: dataset={self.dataset!r}, "
                             f"crop_padding={self.crop_padding}, flip={self.flip}, color_jitter={self.color_jitter}")
        if self.select not in SELECTIONS:
            raise ValueError(f"`select` must be one of {', '.join(SELECTIONS)}. Received: select={self.select!r}")
        if not isinstance(self.patience, int) or isinstance(self.patience, bool) or self.patience < 0:
            raise ValueError(f"`patience` must be an integer >= 0. Received: patience={self.patience!r}")
        if not isinstance(self.backbone, str) or not self.backbone:
            raise ValueError(f"`backbone` must be a non-empty string. Received: backbone={self.backbone!r}")
        if self.multi_step_loss and self.variant == "reptile":
            raise ValueError(
                "`multi_step_loss` applies to the MAML family; Reptile has no meta-loss. "
                f"Received: variant={self.variant!r}, multi_step_loss=True"
            )
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"`strategy` must be one of {', '.join(STRATEGIES)}. Received: strategy={self.strategy!r}"
            )
        if self.devices is not None and self.strategy != "mirrored":
            raise ValueError(
                f"`devices` applies to strategy='mirrored' only. Received: strategy={self.strategy!r}, "
                f"devices={self.devices!r}"
            )
        if self.mixed_precision not in MIXED_PRECISION_POLICIES:
            raise ValueError(
                f"`mixed_precision` must be one of {', '.join(MIXED_PRECISION_POLICIES)}. "
                f"Received: mixed_precision={self.mixed_precision!r}"
            )
        if not isinstance(self.dataset, str) or not self.dataset:
            raise ValueError(f"`dataset` must be a non-empty string. Received: dataset={self.dataset!r}")
        if self.dataset == "folder" and not self.data_dir:
            raise ValueError(
                f"dataset={self.dataset!r} needs `data_dir` (the folder holding the images). "
                f"Received: data_dir={self.data_dir!r}"
            )

        if self.export_name is not None and (
            not isinstance(self.export_name, str) or self.export_name in ("", ".", "..") or "/" in self.export_name
        ):
            raise ValueError(
                f"`export_name` must be a plain directory name (no '/'). Received: export_name={self.export_name!r}"
            )

    @property
    def train_episode(self) -> tuple[int, int, int]:
        """`(ways, shots, queries)` of the training episodes."""
        pick = lambda value, default: default if value is None else value
        return (pick(self.train_ways, self.ways), pick(self.train_shots, self.shots),
                pick(self.train_queries, self.queries))

    def _check_amortized_fields(self, family: str) -> None:
        """The options of the amortized family (attention, generate, task metadata, min_shots)."""
        if self.dataset in GP_DATASETS + COMPLETION_DATASETS and family != "amortized":
            raise ValueError(f"{self.dataset} tasks have padded context and target sets that only the amortized "
                             f"learners (cnp, hypernet) mask. Received: variant={self.variant!r}, "
                             f"dataset={self.dataset!r}")
        if self.attention and self.variant != "cnp":
            raise ValueError(f"`attention` applies to Neural Processes (variant='cnp'). "
                             f"Received: variant={self.variant!r}, attention=True")
        if self.attention and not self.is_regression:
            raise ValueError(f"`attention` applies to regression tasks. Received: dataset={self.dataset!r}")
        if self.generate is not None:
            if self.variant != "hypernet" or self.generate not in GENERATES:
                raise ValueError(f"`generate` applies to variant='hypernet' and must be one of "
                                 f"{', '.join(GENERATES)}. Received: variant={self.variant!r}, "
                                 f"generate={self.generate!r}")
            if (self.generate == "all") != self.is_regression:
                raise ValueError(f"generate='all' is for regression, 'head' and 'film' for classification. "
                                 f"Received: generate={self.generate!r}, dataset={self.dataset!r}")
        film_maml = self.variant in FILM_MAML_VARIANTS and self.dataset == "sinusoid"
        amortized = family == "amortized" and self.dataset not in COMPLETION_DATASETS and (
            self.is_regression or self.dataset in CLASS_METADATA_DATASETS)
        if self.task_metadata and not (amortized or film_maml):
            raise ValueError(f"`task_metadata` is used by the amortized learners on regression tasks (sinusoid, gp) "
                             f"and on classes with metadata ({', '.join(CLASS_METADATA_DATASETS)}), and by "
                             f"{' and '.join(FILM_MAML_VARIANTS)} on sinusoid tasks. "
                             f"Received: variant={self.variant!r}, dataset={self.dataset!r}")
        if self.task_metadata and not self.is_regression and self.export_dir:
            raise ValueError(f"Classifier exports do not take class metadata yet: a classification run with "
                             f"`task_metadata` needs export_dir='' (--export_dir=). "
                             f"Received: export_dir={self.export_dir!r}, dataset={self.dataset!r}")
        if isinstance(self.metadata_noise, bool) or not isinstance(self.metadata_noise, (int, float)) \
                or not 0.0 <= self.metadata_noise < math.inf:
            raise ValueError(f"`metadata_noise` must be a number >= 0. Received: metadata_noise={self.metadata_noise!r}")
        if self.metadata_noise and self.dataset != "sinusoid":
            raise ValueError(f"`metadata_noise` applies to sinusoid tasks. Received: dataset={self.dataset!r}")
        if self.min_shots is not None:
            if self.dataset != "sinusoid" or not (family == "amortized" or (film_maml and self.task_metadata)):
                raise ValueError(f"`min_shots` applies to the amortized learners on sinusoid tasks, and to "
                                 f"{' and '.join(FILM_MAML_VARIANTS)} with `task_metadata` (the FiLM-conditioned "
                                 f"MAML masks the padded support points). Received: variant={self.variant!r}, "
                                 f"dataset={self.dataset!r}, task_metadata={self.task_metadata}")
            if not isinstance(self.min_shots, int) or isinstance(self.min_shots, bool) \
                    or not 0 <= self.min_shots <= self.shots:
                raise ValueError(f"`min_shots` must be an integer in [0, shots={self.shots}]. "
                                 f"Received: min_shots={self.min_shots!r}")

    @property
    def augmentation(self):
        """The training episodes' `tfmeta.data.Augmentation`: each of `crop_padding`,
        `flip` and `color_jitter` left at None takes the data set's default
        (`tfmeta.data.AUGMENTATIONS`: none for Omniglot, folders and TFDS names;
        MetaOptNet's and RFS's crops, flips and jitter for miniImageNet,
        tieredImageNet, CIFAR-FS and FC100)."""
        from tfmeta.data.augment import AUGMENTATIONS, Augmentation  # noqa: PLC0415 - imports TensorFlow

        default = AUGMENTATIONS.get(self.dataset, Augmentation())
        pick = lambda value, fallback: fallback if value is None else value
        return Augmentation(pick(self.crop_padding, default.crop_padding), pick(self.flip, default.flip),
                            float(pick(self.color_jitter, default.color_jitter)))

    @property
    def is_regression(self) -> bool:
        """Whether the tasks are regression tasks (sinusoid, GP, image completion)."""
        return self.dataset in REGRESSION_DATASETS

    @property
    def metadata_dim(self) -> int | None:
        """The size of a regression task's description the learner conditions on (None: none).

        Classification runs read theirs from the data (`ClassDataset.metadata_dim`,
        recorded as the data spec's `"metadata_dim"`): None here.
        """
        return 2 if self.task_metadata and self.is_regression else None

    def resolved(self) -> "MetaTrainConfig":
        """A copy with derived defaults filled in (`workdir`, `export_name`)."""
        changes = {}
        if self.workdir is None:
            changes["workdir"] = f"runs/{'anp' if self.attention else self.variant}_{self.dataset}"
        if self.export_name is None:
            name = f"{'anp' if self.attention else self.variant}_{self.dataset}".replace("+", "p")
            if not self.is_regression:
                name += f"_{self.ways}way_{self.shots}shot"
            changes["export_name"] = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        return dataclasses.replace(self, **changes) if changes else self

    def to_dict(self) -> dict:
        """The fields as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """The fields as pretty JSON (what `config.json` holds)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict) -> "MetaTrainConfig":
        """Builds a config from a dict such as `to_dict()`'s.

        Raises:
            ValueError: on an unknown field name.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"Unknown MetaTrainConfig field(s): {', '.join(unknown)}. Received: {values!r}")
        return cls(**values)

    def resumable_fields(self) -> frozenset:
        """Fields a resumed run may change: `RESUMABLE_FIELDS`, except
        `num_iterations` for MAML++ (its cosine meta-lr schedule and its
        derivative-order annealing span it)."""
        if self.variant == "maml++":
            return RESUMABLE_FIELDS - {"num_iterations"}
        return RESUMABLE_FIELDS

    def differences(self, other: "MetaTrainConfig", ignore=None) -> dict:
        """`{field: (self_value, other_value)}` for fields that differ, minus
        `ignore` (default: `resumable_fields()`)."""
        ignore = self.resumable_fields() if ignore is None else ignore
        mine, theirs = self.to_dict(), other.to_dict()
        return {k: (mine[k], theirs[k]) for k in mine if k not in ignore and mine[k] != theirs[k]}
