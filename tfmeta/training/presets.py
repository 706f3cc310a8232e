"""Published settings as data: `preset(name, **overrides)` -> `MetaTrainConfig`.

Only the fields that differ from `MetaTrainConfig`'s defaults are listed.
Sources: Finn, Abbeel and Levine, "Model-Agnostic Meta-Learning for Fast
Adaptation of Deep Networks" (ICML 2017), section 5 and appendix A.1, and
their reference code (`cbfinn/maml`, main.py usage notes).
"""

import dataclasses

from tfmeta.training.config import MetaTrainConfig

PRESETS = {
    # Sinusoid regression: MLP 40-40 (ReLU), K=5 support and K=5 query points (the
    # reference code draws 2K points per task), 1 inner step of 0.01, meta-batch 25,
    # Adam 1e-3, 70,000 meta-iterations; tested with 1/5/10 steps.
    "sinusoid": dict(
        dataset="sinusoid", shots=5, queries=5, meta_batch_size=25, inner_steps=1, inner_lr=0.01,
        eval_inner_steps=10, meta_lr=1e-3, num_iterations=70000,
    ),
    # Omniglot 5-way 1-shot: Conv-4 (64 filters), 1 inner step of 0.4, meta-batch 32,
    # 60,000 meta-iterations; 3 inner steps at test time.
    "omniglot_5w1s": dict(
        dataset="omniglot", ways=5, shots=1, queries=1, meta_batch_size=32, inner_steps=1, inner_lr=0.4,
        eval_inner_steps=3, meta_lr=1e-3, num_iterations=60000,
    ),
    # Omniglot 20-way 1-shot: 5 inner steps of 0.1, meta-batch 16; 5 steps at test.
    "omniglot_20w1s": dict(
        dataset="omniglot", ways=20, shots=1, queries=1, meta_batch_size=16, inner_steps=5, inner_lr=0.1,
        eval_inner_steps=5, meta_lr=1e-3, num_iterations=60000,
    ),
}


def preset(name: str, **overrides) -> MetaTrainConfig:
    """The published configuration `name`, with `overrides` applied.

    Args:
        name: one of `PRESETS` (`"sinusoid"`, `"omniglot_5w1s"`, `"omniglot_20w1s"`).
        **overrides: `MetaTrainConfig` fields to change (e.g. `data_dir`).

    Returns:
        A validated `MetaTrainConfig`.

    Raises:
        ValueError: on an unknown preset name (or a bad override value).

    Example:

    ```python
    config = preset("omniglot_5w1s", data_dir="/data/omniglot", workdir="runs/o5")
    ```
    """
    if name not in PRESETS:
        raise ValueError(f"Unknown preset; expected one of {', '.join(PRESETS)}. Received: name={name!r}")
    return dataclasses.replace(MetaTrainConfig(), **{**PRESETS[name], **overrides})


# The defaults of the trainers of other families where they differ from MetaTrainConfig's
# (which are the sinusoid MAML run's). Prototypical Networks, Snell et al. (2017), Omniglot:
# Conv-4 embedding, 60-way training episodes with 5 queries per class, test episodes of
# `--ways` classes and 15 queries, shots equal in training and test, Adam 1e-3, one
# episode per step.
TRAINER_DEFAULTS = {
    "protonet": dict(dataset="omniglot", ways=5, shots=1, queries=15, train_ways=60, train_queries=5,
                     meta_batch_size=1, meta_lr=1e-3, num_iterations=10000, eval_every=1000),
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
