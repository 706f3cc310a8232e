"""Pre-trains a classifier on all training classes, then tests it with a head fitted per task.

The fine-tuning baselines: Baseline and Baseline++ (Chen et al., 2019, "A Closer Look at
Few-shot Classification") and logistic regression on the pre-trained embedding (Tian et
al., 2020, "Rethinking Few-Shot Image Classification").

    python -m trainers.finetune --data_dir=../shared/data/omniglot                 # Baseline (linear head)
    python -m trainers.finetune --data_dir=../shared/data/omniglot --head=cosine   # Baseline++
    python -m trainers.finetune --data_dir=../shared/data/omniglot --head=logreg   # Tian et al.

Defaults (`tfmeta.training.presets.TRAINER_DEFAULTS["finetune"]`): Omniglot, Conv-4
embedding pre-trained on mini-batches of `--batch_size` (16) images of all training
classes with their global labels, `--meta_batch_size` (1) such batches a step, Adam 1e-3,
5,000 steps (about 5 epochs of the Omniglot sample, as Chen et al.'s 5 epochs); validation
and test on episodes of unseen classes (`--ways`, `--shots`, 15 queries), each fitting a
new `--head` (default `linear`) on its support set with the embedding frozen (BatchNorm on
its moving statistics). The export fits the head inside the served graph, for any number of
classes (up to `--max_ways`) and of shots per class, and has an `embed` signature.
"""

from absl import app

from tfmeta.training import run
from tfmeta.training.presets import TRAINER_DEFAULTS
from trainers import common

common.define_flags(common.COMMON_FIELDS + ("head", "batch_size", "max_ways", "max_shots"),
                    TRAINER_DEFAULTS["finetune"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    common.configure_threads()
    run(common.config_from_flags(trainer="finetune", variant="finetune"))


if __name__ == "__main__":
    common.main(main)
