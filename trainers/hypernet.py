"""Meta-trains a HyperNetwork learner: the support set (and the task's description) generates weights.

    python -m trainers.hypernet                                  # sinusoid 5-shot: every weight of the MLP 1-40-40-1
    python -m trainers.hypernet --task_metadata --metadata_noise=0 --min_shots=0   # down to zero shots
    python -m trainers.hypernet --dataset=omniglot --data_dir=../shared/data/omniglot --generate=head
    python -m trainers.hypernet --dataset=omniglot --data_dir=../shared/data/omniglot --generate=film

Defaults (`tfmeta.training.presets.TRAINER_DEFAULTS["hypernet"]`): sinusoids with Finn
et al.'s 5-shot tasks and meta-batch 25, Adam 1e-3. `--generate=all` (regression)
generates the whole target MLP, `head` a classifier head per class from the class's
mean embedding, `film` FiLM scales and shifts of Conv-4's BatchNorm layers
(TADAM-like); the classification ones serve any number of classes.
"""

from absl import app

from tfmeta.training import run
from tfmeta.training.presets import CLASSIFICATION_DEFAULTS, TRAINER_DEFAULTS
from trainers import common

common.define_flags(common.COMMON_FIELDS + common.AMORTIZED_FIELDS + ("generate",), TRAINER_DEFAULTS["hypernet"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    common.configure_threads()
    run(common.config_from_flags(trainer="hypernet", classification_defaults=CLASSIFICATION_DEFAULTS,
                                 variant="hypernet"))


if __name__ == "__main__":
    common.main(main)
