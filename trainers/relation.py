"""Meta-trains Relation Networks (Sung et al., 2018) and tests them on unseen classes.

    python -m trainers.relation --data_dir=../shared/data/omniglot --ways=5 --shots=1
    python -m trainers.relation --data_dir=../shared/data/omniglot --ways=20 --shots=1 --train_queries=10

Defaults (`tfmeta.training.presets.TRAINER_DEFAULTS["relation"]`): Omniglot, the paper's
embedding (`--backbone=conv4_relation`: 5x5x64 feature maps on 28x28) and relation module,
one episode per step with 19 queries per class (the paper's 5-way 1-shot training episodes;
give `--train_queries` for the other settings: 15 for 5-way 5-shot, 10 for 20-way 1-shot,
5 for 20-way 5-shot), test episodes with 15 queries, MSE to one-hot targets, Adam 1e-3. The
export serves any number of classes (up to `--max_ways`) and of shots per class: its `logits`
are the relation scores in [0, 1] and `probabilities` their softmax; its `embed` signature
returns the flattened feature maps.
"""

from absl import app

from tfmeta.training import run
from tfmeta.training.presets import TRAINER_DEFAULTS
from trainers import common

common.define_flags(common.COMMON_FIELDS + common.METRIC_FIELDS, TRAINER_DEFAULTS["relation"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    common.configure_threads()
    run(common.config_from_flags(trainer="relation", variant="relation"))


if __name__ == "__main__":
    common.main(main)
