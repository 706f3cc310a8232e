"""Meta-trains a Conditional Neural Process (Garnelo et al., 2018), or its attentive form (Kim et al., 2019).

    python -m trainers.cnp                                              # GP regression, the CNP paper's tasks
    python -m trainers.cnp --attention --dataset=gp_anp --meta_batch_size=16   # the ANP paper's tasks
    python -m trainers.cnp --dataset=sinusoid --shots=5 --num_iterations=20000
    python -m trainers.cnp --dataset=sinusoid --task_metadata --metadata_noise=0.1 --min_shots=0
    python -m trainers.cnp --dataset=omniglot --data_dir=../shared/data/omniglot --ways=5 --shots=1
    python -m trainers.cnp --dataset=omniglot_completion --data_dir=../shared/data/omniglot   # image completion
    python -m trainers.cnp --dataset=omniglot_completion --data_dir=../shared/data/omniglot --attention

Defaults (`tfmeta.training.presets.TRAINER_DEFAULTS["cnp"]`): GP tasks with the CNP
paper's kernel, 64 tasks per step, Adam 1e-4. The test prints the log-likelihood per
target point and the MSE over 1,000 unseen tasks and, on GP tasks, the exact GP
posterior's on the same tasks and the gap in nats. With matplotlib installed, each
evaluation draws fixed test tasks (mean ± 2 stddev, the true function, the context)
into `<workdir>/plots/` and TensorBoard. The export serves `predictions` and `stddev`
(and takes `task_metadata` with `--task_metadata`). On Omniglot and the other image data sets
(`CLASSIFICATION_DEFAULTS` for the flags not given) the CNP aggregates per class and
serves any number of classes; with `--task_metadata --export_dir=` (Omniglot from
`--data_dir`, or a folder with a `metadata.json`) it also conditions on each class's
metadata (Omniglot: the one-hot of its alphabet).

`--dataset=omniglot_completion` is image completion as in the CNP paper
(`tfmeta.data.completion`): each task is one 28x28 Omniglot image, x a pixel's (row,
column) scaled to [0, 1], y its intensity (strokes 1); the context is 1 to 200 random
pixels (drawn per task, padded and masked), the training targets the context and 1 to
200 other pixels, the test targets all 784. Training images are those of the training
classes of `--split` (rotations included), validation and test images those of its
validation and test classes; the test prints the log-likelihood and MSE per pixel over
`--eval_episodes` (1,000) distinct test images. The pictures show, per task, the
context pixels (unobserved ones blue), the predicted mean and stddev images and the
true image; the export serves `support_x` [S, 2], `support_y` [S, 1] and `query_x`
[Q, 2] (e.g. all 784 pixels) and says how to form x in its model card (`completion`).
"""

from absl import app

from tfmeta.training import run
from tfmeta.training.presets import CLASSIFICATION_DEFAULTS, TRAINER_DEFAULTS
from trainers import common

common.define_flags(common.COMMON_FIELDS + common.AMORTIZED_FIELDS + ("attention",), TRAINER_DEFAULTS["cnp"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    common.configure_threads()
    run(common.config_from_flags(trainer="cnp", classification_defaults=CLASSIFICATION_DEFAULTS, variant="cnp"))


if __name__ == "__main__":
    common.main(main)
