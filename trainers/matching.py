"""Meta-trains Matching Networks (Vinyals et al., 2016) and tests them on unseen classes.

    python -m trainers.matching --data_dir=../shared/data/omniglot --ways=5 --shots=1
    python -m trainers.matching --data_dir=../shared/data/omniglot --ways=5 --shots=1 --fce

Defaults (`tfmeta.training.presets.TRAINER_DEFAULTS["matching"]`): Omniglot, Conv-4
embedding, training episodes of the test shape (`--ways`, `--shots`, 15 queries per class;
`--train_ways` etc. to change it), one episode per step, Adam 1e-3. `--fce` adds full
context embeddings (a bidirectional LSTM over the support set, an attention LSTM for the
queries). The export serves any number of classes (up to `--max_ways`) and of shots per
class; its `probabilities` are the attention's class distribution, and it has an `embed`
signature.
"""

from absl import app

from tfmeta.training import run
from tfmeta.training.presets import TRAINER_DEFAULTS
from trainers import common

common.define_flags(common.COMMON_FIELDS + common.METRIC_FIELDS + ("fce",), TRAINER_DEFAULTS["matching"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    common.configure_threads()
    run(common.config_from_flags(trainer="matching", variant="matching"))


if __name__ == "__main__":
    common.main(main)
