"""Meta-trains Prototypical Networks (Snell et al., 2017) and tests them on unseen classes.

    python -m trainers.protonet --data_dir=../shared/data/omniglot --ways=5 --shots=1
    python -m trainers.protonet --data_dir=../shared/data/omniglot --ways=20 --shots=1 --distance=cosine

Defaults (`tfmeta.training.presets.TRAINER_DEFAULTS["protonet"]`): Omniglot, Conv-4
embedding, 60-way training episodes with 5 queries per class (`--train_ways`,
`--train_queries`; `--train_shots` defaults to `--shots`), test episodes of `--ways`
classes with 15 queries, one episode per step, Adam 1e-3. The export serves any number
of classes (up to `--max_ways`) and of shots per class, and an `embed` signature.
"""

from absl import app

from tfmeta.training import run
from tfmeta.training.presets import TRAINER_DEFAULTS
from trainers import common

common.define_flags(common.COMMON_FIELDS + common.METRIC_FIELDS + ("distance",), TRAINER_DEFAULTS["protonet"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    common.configure_threads()
    run(common.config_from_flags(trainer="protonet", variant="protonet"))


if __name__ == "__main__":
    common.main(main)
