"""One worker of a MultiWorkerMirroredStrategy run, started by test_multi_worker.py.

The cluster comes from `TF_CONFIG`. Trains second-order MAML on sinusoids to
`num_iterations` (resuming from the chief's workdir if it holds a checkpoint),
then writes `<out_dir>/worker<index>.npz` (final parameters),
`<out_dir>/worker<index>_grads.npz` (the loop's reduced meta-gradients of the first
step, before training, when starting from scratch) and `<out_dir>/worker<index>.json`
(what this worker saw). The end of the run
(test and export, chief only) exports under `<out_dir>/exports`.

    TF_CONFIG=... python tests/training/multi_worker_check.py <workdir> <out_dir> <num_iterations>
"""

import json
import os
import pathlib
import sys

import numpy as np

from tfmeta.data.episode import Episode
from tfmeta.training import runner
from tfmeta.training.config import MetaTrainConfig


def config(workdir, num_iterations, strategy="multi_worker", export_dir=""):
    return MetaTrainConfig(meta_batch_size=4, num_iterations=num_iterations, eval_every=2, eval_episodes=4,
                           eval_inner_steps=1, meta_lr=1e-2, workdir=str(workdir), strategy=strategy,
                           export_dir=str(export_dir))


def first_gradients(trainer) -> list:
    """The loop's meta-gradients of step 0, reduced across all replicas of all workers (nothing applied)."""
    dataset = trainer.strategy.distribute_datasets_from_function(lambda ctx: trainer.train_dataset_fn(0, ctx))
    grads, _, _ = trainer.compute_gradients(Episode(*next(iter(dataset))))
    return [g.numpy() for g in grads]


def main(workdir, out_dir, num_iterations):
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    out = pathlib.Path(out_dir)
    cfg = config(workdir, num_iterations, export_dir=out / "exports")
    trainer, sources = runner.build_trainer(cfg, verbose=False)
    start = trainer.restore()
    if start == 0:
        np.savez(out / f"worker{index}_grads.npz", *first_gradients(trainer))
    history = trainer.train()
    test_results, export_path = runner.test_and_export(trainer, cfg, sources, verbose=False)
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
        "tested": sorted(test_results),
        "export_path": None if export_path is None else str(export_path),
    }
    (out / f"worker{index}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
