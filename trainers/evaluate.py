"""Evaluates a workdir's latest checkpoint on unseen tasks: mean ± 95% CI.

    python -m trainers.evaluate --workdir=runs/maml_sinusoid --eval_episodes=600
    python -m trainers.evaluate --workdir=runs/proto_5w1s --ways=20     # any number of classes: metric learners
"""

from absl import app, flags

from tfmeta.workdir import evaluate_workdir
from trainers import common

flags.DEFINE_string("workdir", None, "Run directory holding config.json and checkpoints/.", required=True)
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
    evaluate_workdir(f.workdir, f.eval_episodes, data_dir=f.data_dir, ways=f.ways, shots=f.shots, queries=f.queries)


if __name__ == "__main__":
    common.main(main)
