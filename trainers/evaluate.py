"""Evaluates a workdir's latest checkpoint on unseen tasks: mean ± 95% CI.

    python -m trainers.evaluate --workdir=runs/maml_sinusoid --eval_episodes=600
"""

from absl import app, flags

from tfmeta.workdir import evaluate_workdir
from trainers import common

flags.DEFINE_string("workdir", None, "Run directory holding config.json and checkpoints/.", required=True)
flags.DEFINE_integer("eval_episodes", 600, "Unseen tasks to evaluate on (>= 600 for the usual CI).")
flags.DEFINE_string("data_dir", None, "Override the data directory saved in config.json.")
common.define_thread_flags()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    common.configure_threads()
    evaluate_workdir(flags.FLAGS.workdir, flags.FLAGS.eval_episodes, data_dir=flags.FLAGS.data_dir)


if __name__ == "__main__":
    common.main(main)
