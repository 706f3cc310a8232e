"""One worker of a MultiWorkerMirroredStrategy run, started by test_multi_worker.py.

The cluster comes from `TF_CONFIG`. Trains second-order MAML on sinusoids to
`num_iterations` (resuming from the chief's workdir if it holds a checkpoint),
then writes `<out_dir>/worker<index>.npz` (final parameters) and
`<out_dir>/worker<index>.json` (what this worker saw).

    TF_CONFIG=... python tests/training/multi_worker_check.py <workdir> <out_dir> <num_iterations>
"""

import json
import os
import pathlib
import sys

import numpy as np

from tfmeta.training import runner
from tfmeta.training.config import MetaTrainConfig


def config(workdir, num_iterations, strategy="multi_worker"):
    return MetaTrainConfig(meta_batch_size=4, num_iterations=num_iterations, eval_every=2, eval_episodes=4,
                           eval_inner_steps=1, meta_lr=1e-2, workdir=str(workdir), strategy=strategy)


def main(workdir, out_dir, num_iterations):
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    trainer, _ = runner.build_trainer(config(workdir, num_iterations), verbose=False)
    start = trainer.restore()
    history = trainer.train()
    out = pathlib.Path(out_dir)
    np.savez(out / f"worker{index}.npz", *[v.numpy() for v in trainer.model.variables])
    report = {
        "is_chief": trainer.is_chief,
        "replicas": trainer.strategy.num_replicas_in_sync,
        "per_replica_batch_size": trainer.per_replica_batch_size,
        "write_dir": str(trainer.write_dir),
        "write_dir_exists": trainer.write_dir.exists(),
        "start": start,
        "step": int(trainer.step.numpy()),
        "loss": history[-1]["loss"] if history else None,
    }
    (out / f"worker{index}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
