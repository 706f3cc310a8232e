"""Run in its own process by test_faults.py: a small sinusoid MAML run, optionally under
MirroredStrategy on 2 logical CPUs (which must be configured before TensorFlow starts).

    python tests/training/preempt_run.py <workdir> <default|mirrored|multi_worker> <num_iterations>

(`multi_worker`: one worker of a cluster described by `TF_CONFIG`.)

Exits 42 (`PREEMPTED_EXIT_CODE`) when SIGTERM stopped it, 0 when it finished.
"""

import sys

from tfmeta.training import distribute

workdir, strategy, iterations = sys.argv[1], sys.argv[2], int(sys.argv[3])
if strategy == "mirrored":
    distribute.configure_logical_devices(2)

from tfmeta.training import run  # noqa: E402
from tfmeta.training.config import MetaTrainConfig  # noqa: E402
from tfmeta.training.preemption import PREEMPTED_EXIT_CODE, PreemptedError  # noqa: E402

config = MetaTrainConfig(num_iterations=iterations, eval_every=5, meta_batch_size=4, eval_episodes=2,
                         eval_inner_steps=1, export_dir="", workdir=workdir, strategy=strategy)
try:
    run(config, verbose=True)
except PreemptedError as error:
    print(error, flush=True)
    sys.exit(PREEMPTED_EXIT_CODE)
