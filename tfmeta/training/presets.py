"""Published settings as data: `preset(name, **overrides)` -> `MetaTrainConfig`.

A preset is a paper's configuration (`Preset.config`: only the fields that differ
from `MetaTrainConfig`'s defaults), the trainer that runs it, and the paper's
figure, which the run records in its `config.json` and model card. On the command
line: `python -m trainers.<trainer> --preset=NAME --data_dir=...` (flags given
explicitly override the preset's values).

Sources: Finn, Abbeel and Levine (ICML 2017), section 5, appendix A.1 and Table 1,
and their code (`cbfinn/maml`); Snell, Swersky and Zemel (NeurIPS 2017), section 3
and Tables 1-2; Antoniou, Edwards and Storkey (ICLR 2019), sections 4-5 and Tables 1-2.
"""

import dataclasses

from tfmeta.training.config import MetaTrainConfig


@dataclasses.dataclass(frozen=True)
class Preset:
    """A published configuration.

    Attributes:
        trainer: the trainer that runs it (`python -m trainers.<trainer>`).
        config: `MetaTrainConfig` fields, where they differ from the defaults.
        paper: the paper's figure for this setting, and where it comes from.
    """

    trainer: str
    config: dict
    paper: str


_MAML_OMNIGLOT_5W1S = dict(dataset="omniglot", split="vinyals", ways=5, shots=1, queries=1, meta_batch_size=32,
                           inner_steps=1, inner_lr=0.4, eval_inner_steps=3, meta_lr=1e-3, num_iterations=60000)
_MAML_OMNIGLOT_20W1S = dict(dataset="omniglot", split="vinyals", ways=20, shots=1, queries=1, meta_batch_size=16,
                            inner_steps=5, inner_lr=0.1, eval_inner_steps=5, meta_lr=1e-3, num_iterations=60000)
# miniImageNet: 32-filter Conv-4, 5 inner steps of 0.01 (10 at test), 15 queries per class,
# meta-batch 4 (1-shot) or 2 (5-shot), 60,000 iterations; no augmentation (MAML, MAML++ and
# ProtoNets predate it: the data set's default crops, flips and jitter are turned off).
NO_AUGMENTATION = dict(crop_padding=0, flip=False, color_jitter=0.0)
_MAML_MINI = dict(dataset="mini_imagenet", backbone="conv4_32", ways=5, queries=15, inner_steps=5, inner_lr=0.01,
                  eval_inner_steps=10, meta_lr=1e-3, num_iterations=60000, **NO_AUGMENTATION)
# MAML++: every option of the paper (the `maml++` variant), 5 inner steps, cosine-annealed meta lr.
_MAML_PP_OMNIGLOT = dict(dataset="omniglot", split="vinyals", variant="maml++", shots=1, queries=1, inner_steps=5,
                         inner_lr=0.1, eval_inner_steps=5, meta_batch_size=16, meta_lr=1e-3, num_iterations=60000)
# Prototypical Networks: Omniglot, 60-way training episodes with 5 queries; miniImageNet, 30-way
# (1-shot) or 20-way (5-shot) training episodes with 15 queries; Adam 1e-3; test with 15 queries.
_PROTO_OMNIGLOT = dict(dataset="omniglot", split="vinyals", shots=1, queries=15, train_ways=60, train_queries=5,
                       meta_batch_size=1, meta_lr=1e-3, num_iterations=20000)
_PROTO_MINI = dict(dataset="mini_imagenet", ways=5, queries=15, train_queries=15, meta_batch_size=1, meta_lr=1e-3,
                   num_iterations=30000, **NO_AUGMENTATION)

PRESETS = {
    # Sinusoid regression: MLP 40-40 (ReLU), K=5 support and K=5 query points (the
    # reference code draws 2K points per task), 1 inner step of 0.01, meta-batch 25,
    # Adam 1e-3, 70,000 meta-iterations; tested with 1/5/10 steps.
    "sinusoid": Preset("maml", dict(
        dataset="sinusoid", shots=5, queries=5, meta_batch_size=25, inner_steps=1, inner_lr=0.01,
        eval_inner_steps=10, meta_lr=1e-3, num_iterations=70000,
    ), "MSE 0.67 / 0.38 / 0.35 after 1 / 5 / 10 steps (Finn et al. 2017, section 5.1)"),
    "maml_omniglot_5w1s": Preset("maml", _MAML_OMNIGLOT_5W1S, "98.7 ± 0.4% (Finn et al. 2017, Table 1)"),
    "maml_omniglot_20w1s": Preset("maml", _MAML_OMNIGLOT_20W1S, "95.8 ± 0.3% (Finn et al. 2017, Table 1)"),
    "maml_mini_imagenet_5w1s": Preset("maml", {**_MAML_MINI, "shots": 1, "meta_batch_size": 4},
                                      "48.70 ± 1.84% (Finn et al. 2017, Table 1)"),
    "maml_mini_imagenet_5w5s": Preset("maml", {**_MAML_MINI, "shots": 5, "meta_batch_size": 2},
                                      "63.11 ± 0.92% (Finn et al. 2017, Table 1)"),
    "mamlpp_omniglot_5w1s": Preset("maml", {**_MAML_PP_OMNIGLOT, "ways": 5}, "99.47% (Antoniou et al. 2019, Table 1)"),
    "mamlpp_omniglot_20w1s": Preset("maml", {**_MAML_PP_OMNIGLOT, "ways": 20},
                                    "97.65% (Antoniou et al. 2019, Table 1)"),
    "mamlpp_mini_imagenet_5w1s": Preset("maml", {**_MAML_MINI, "variant": "maml++", "shots": 1, "meta_batch_size": 2,
                                                 "backbone": "conv4", "inner_lr": 0.01},
                                        "52.15 ± 0.26% (Antoniou et al. 2019, Table 2)"),
    "mamlpp_mini_imagenet_5w5s": Preset("maml", {**_MAML_MINI, "variant": "maml++", "shots": 5, "meta_batch_size": 2,
                                                 "backbone": "conv4", "inner_lr": 0.01},
                                        "68.32 ± 0.44% (Antoniou et al. 2019, Table 2)"),
    "protonet_omniglot_5w1s": Preset("protonet", {**_PROTO_OMNIGLOT, "ways": 5}, "98.8% (Snell et al. 2017, Table 1)"),
    "protonet_omniglot_20w1s": Preset("protonet", {**_PROTO_OMNIGLOT, "ways": 20}, "96.0% (Snell et al. 2017, Table 1)"),
    "protonet_mini_imagenet_5w1s": Preset("protonet", {**_PROTO_MINI, "shots": 1, "train_ways": 30},
                                          "49.42 ± 0.78% (Snell et al. 2017, Table 2)"),
    "protonet_mini_imagenet_5w5s": Preset("protonet", {**_PROTO_MINI, "shots": 5, "train_ways": 20},
                                          "68.20 ± 0.66% (Snell et al. 2017, Table 2)"),
}
# Fine-tuning baselines on miniImageNet (`trainers.finetune`): Chen et al. (2019), Table 3 (Conv-4, 84x84):
# pre-training with Adam 1e-3 on batches of 16 for 400 epochs of the 38,400 training images (960,000
# steps), flips and colour jitter (their random-resized crop is approximated by random crops with
# padding). RFS (Tian et al. 2020, Table 1, "RFS-simple"): ResNet-12, batches of 64, 90 epochs (54,000
# steps), random crops (padding 8), colour jitter and flips, logistic regression on L2-normalised
# features; tfmeta pre-trains with Adam 1e-3 where they use SGD (lr 0.05, momentum 0.9, weight decay
# 5e-4, decayed at epochs 60, 70 and 80): the recipe is the paper's but for the optimiser.
_FINETUNE_MINI = dict(dataset="mini_imagenet", ways=5, queries=15, meta_batch_size=1, meta_lr=1e-3, flip=True,
                      color_jitter=0.4, eval_every=10000)
PRESETS.update({
    "baseline_pp_mini_imagenet_5w1s": Preset("finetune", {**_FINETUNE_MINI, "shots": 1, "head": "cosine", "batch_size": 16,
                                                          "crop_padding": 8, "num_iterations": 960000},
                                             "48.24 ± 0.75% (Chen et al. 2019, Table 3)"),
    "baseline_pp_mini_imagenet_5w5s": Preset("finetune", {**_FINETUNE_MINI, "shots": 5, "head": "cosine", "batch_size": 16,
                                                          "crop_padding": 8, "num_iterations": 960000},
                                             "66.43 ± 0.63% (Chen et al. 2019, Table 3)"),
    "rfs_mini_imagenet_5w1s": Preset("finetune", {**_FINETUNE_MINI, "shots": 1, "head": "logreg", "batch_size": 64,
                                                  "backbone": "resnet12", "crop_padding": 8, "num_iterations": 54000},
                                     "62.02 ± 0.63% (Tian et al. 2020, Table 1, RFS-simple; SGD there, Adam here)"),
    "rfs_mini_imagenet_5w5s": Preset("finetune", {**_FINETUNE_MINI, "shots": 5, "head": "logreg", "batch_size": 64,
                                                  "backbone": "resnet12", "crop_padding": 8, "num_iterations": 54000},
                                     "79.64 ± 0.44% (Tian et al. 2020, Table 1, RFS-simple; SGD there, Adam here)"),
})
# The names of tfmeta 0.1 (MAML, on the Omniglot split the data gives).
PRESETS["omniglot_5w1s"] = Preset("maml", {k: v for k, v in _MAML_OMNIGLOT_5W1S.items() if k != "split"},
                                  PRESETS["maml_omniglot_5w1s"].paper)
PRESETS["omniglot_20w1s"] = Preset("maml", {k: v for k, v in _MAML_OMNIGLOT_20W1S.items() if k != "split"},
                                   PRESETS["maml_omniglot_20w1s"].paper)


def preset(name: str, **overrides) -> MetaTrainConfig:
    """The published configuration `name`, with `overrides` applied.

    Args:
        name: one of `PRESETS` (e.g. `"maml_omniglot_5w1s"`, `"protonet_mini_imagenet_5w1s"`).
        **overrides: `MetaTrainConfig` fields to change (e.g. `data_dir`).

    Returns:
        A validated `MetaTrainConfig` whose `preset` is `name`.

    Raises:
        ValueError: on an unknown preset name (or a bad override value).

    Example:

    ```python
    config = preset("maml_omniglot_5w1s", data_dir="/data/omniglot", workdir="runs/o5")
    ```
    """
    if name not in PRESETS:
        raise ValueError(f"Unknown preset; expected one of {', '.join(PRESETS)}. Received: name={name!r}")
    base = {"variant": PRESETS[name].trainer, **PRESETS[name].config, "preset": name}
    return dataclasses.replace(MetaTrainConfig(), **{**base, **overrides})


# The defaults of the trainers of other families where they differ from MetaTrainConfig's
# (which are the sinusoid MAML run's). Prototypical Networks, Snell et al. (2017), Omniglot:
# Conv-4 embedding, 60-way training episodes with 5 queries per class, test episodes of
# `--ways` classes and 15 queries, shots equal in training and test, Adam 1e-3, one
# episode per step.
TRAINER_DEFAULTS = {
    "protonet": dict(dataset="omniglot", ways=5, shots=1, queries=15, train_ways=60, train_queries=5,
                     meta_batch_size=1, meta_lr=1e-3, num_iterations=10000, eval_every=1000),
    # Conditional Neural Processes on GP tasks, the reference notebook's settings
    # (deepmind/neural-processes, conditional_neural_process.ipynb): 64 tasks per step,
    # Adam 1e-4 (it trains 200,000 steps; 20,000 here fit a CPU budget), tested on 1,000
    # tasks of 400 grid targets. The ANP notebook trains on `gp_anp` with 16 tasks per step.
    "cnp": dict(dataset="gp", meta_batch_size=64, meta_lr=1e-4, num_iterations=20000, eval_every=2000,
                eval_episodes=1000),
    # HyperNetworks generating the sinusoid MLP 1-40-40-1 (Finn et al.'s 5-shot tasks and
    # meta-batch of 25, tested on 1,000 tasks).
    "hypernet": dict(dataset="sinusoid", shots=5, queries=5, meta_batch_size=25, meta_lr=1e-3,
                     num_iterations=20000, eval_every=2000, eval_episodes=1000),
    # Fine-tuning baselines, Chen et al. (2019) (wyharveychen/CloserLookFewShot, train.py): the backbone
    # pre-trained as a classifier of all training classes with Adam (PyTorch's default lr 1e-3) on
    # mini-batches of 16 images, 5 epochs on Omniglot; test episodes of `--ways` classes, 15 queries.
    # 5 epochs of the sample's 644 training classes x 20 images are 4,025 steps of 16.
    "finetune": dict(dataset="omniglot", ways=5, shots=1, queries=15, meta_batch_size=1, batch_size=16,
                     meta_lr=1e-3, num_iterations=4000, eval_every=1000, head="linear"),
}
# Matching Networks, Vinyals et al. (2016), Omniglot: Conv-4 embedding (64 features on 28x28),
# trained on episodes of the test shape (N-way k-shot). The paper gives no optimiser or query
# count; these follow the reproductions (oscarknagg/few-shot, experiments/matching_nets.py, and
# Chen et al.'s CloserLookFewShot): Adam 1e-3, 15 queries per class, one episode per step.
TRAINER_DEFAULTS["matching"] = dict(dataset="omniglot", ways=5, shots=1, queries=15, meta_batch_size=1, meta_lr=1e-3,
                                    num_iterations=10000, eval_every=1000)
# Relation Networks, Sung et al. (2018), section 4.1 and the authors' code
# (floodsung/LearningToCompare_FSL, omniglot_train_one_shot.py): their embedding (feature maps),
# one episode per step, 19 queries per class in 5-way 1-shot training episodes (15 for 5-way
# 5-shot, 10 for 20-way 1-shot, 5 for 20-way 5-shot), Adam 1e-3 (halved every 100,000 of their
# 1,000,000 episodes, beyond these runs). Test episodes keep the library's 15 queries.
TRAINER_DEFAULTS["relation"] = dict(dataset="omniglot", ways=5, shots=1, queries=15, train_queries=19,
                                    meta_batch_size=1, meta_lr=1e-3, num_iterations=10000, eval_every=1000,
                                    backbone="conv4_relation")

# Where a trainer's defaults are a regression's, the settings of its classification runs
# (`--dataset=omniglot ...`; flags given on the command line win): Omniglot 5-way 1-shot,
# 15 queries per class, 32 tasks per step, Adam 1e-3, as the other Omniglot runs.
CLASSIFICATION_DEFAULTS = dict(ways=5, shots=1, queries=15, meta_batch_size=32, meta_lr=1e-3, num_iterations=10000,
                               eval_every=1000, eval_episodes=600)

# The LSTM meta-learner, Ravi & Larochelle (2017): Conv-4 with a 5-way head, 5 updates of the
# coordinate-wise LSTM from an SGD start of step 0.1 (the input gate's initial value), 15
# queries per class, 4 tasks per meta-update (the amortized Omniglot rows' budget), Adam 1e-3.
TRAINER_DEFAULTS["lstm_meta"] = dict(dataset="omniglot", ways=5, shots=1, queries=15, meta_batch_size=4,
                                     inner_steps=5, inner_lr=0.1, eval_inner_steps=5, meta_lr=1e-3,
                                     num_iterations=4000, eval_every=500)
