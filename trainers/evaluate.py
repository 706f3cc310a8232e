"""Evaluates a workdir's latest checkpoint on unseen tasks: mean ± 95% CI; several: also their ensemble.

    python -m trainers.evaluate --workdir=runs/maml_sinusoid --eval_episodes=600
    python -m trainers.evaluate --workdir=runs/proto_5w1s --ways=20     # any number of classes: metric learners
    python -m trainers.evaluate --workdir=runs/protonet_s0 --workdir=runs/finetune_s0 --eval_episodes=600

With several `--workdir`s (classification runs on the same inputs) it tests each run and
their ensemble (`tfmeta.learners.Ensemble`: the mean of their class probabilities) on
the same test tasks (the first run's, or of `--ways`/`--shots`/`--queries`), and prints
the ensemble's gain over its best member on those tasks, ± 95% CI
(`tfmeta.workdir.evaluate_ensemble`).
"""

from absl import app, flags

from tfmeta.workdir import evaluate_ensemble, evaluate_workdir
from trainers import common

flags.DEFINE_multi_string("workdir", None, "Run directory holding config.json and checkpoints/; repeat the flag to "
                          "test several runs and their ensemble on the same tasks.", required=True)
flags.DEFINE_integer("eval_episodes", 600, "Unseen tasks to evaluate on (>= 600 for the usual CI).")
flags.DEFINE_string("data_dir", None, "Override the data directory saved in config.json.")
flags.DEFINE_integer("ways", None, "Test episodes of this many classes (default: the run's; metric learners).")
flags.DEFINE_integer("shots", None, "Support examples per class in test episodes (default: the run's).")
flags.DEFINE_integer("queries", None, "Query examples per class in test episodes (default: the run's).")
common.define_thread_flags()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    common.configure_threads()
    f = flags.FLAGS
    shape = dict(ways=f.ways, shots=f.shots, queries=f.queries)
    if len(f.workdir) == 1:
        evaluate_workdir(f.workdir[0], f.eval_episodes, data_dir=f.data_dir, **shape)
    else:
        evaluate_ensemble(f.workdir, f.eval_episodes, data_dir=f.data_dir, **shape)


if __name__ == "__main__":
    common.main(main)
