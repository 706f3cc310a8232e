"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 train, save (chief only) and resume."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from tfmeta.training import distribute

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORKER = pathlib.Path(__file__).with_name("multi_worker_check.py")
TIMEOUT = 150  # seconds per phase; both processes are killed if it passes


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def start_workers(script, *args):
    """Starts two worker processes of `script` on a loopback cluster (`TF_CONFIG`); returns them."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    return [subprocess.Popen(
        [sys.executable, str(script), *map(str, args)], cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
             "TF_CONFIG": distribute.tf_config_for(cluster, "worker", index)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for index in range(2)]


def finish(processes):
    """Waits for the workers (bounded: both are killed after TIMEOUT); returns their exit codes and outputs."""
    try:
        outputs = [p.communicate(timeout=TIMEOUT)[0] for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [p.returncode for p in processes], outputs


def run_cluster(workdir, out_dir, num_iterations):
    """Starts two workers, waits for both (bounded), returns their reports."""
    out_dir.mkdir(parents=True, exist_ok=True)
    codes, outputs = finish(start_workers(WORKER, workdir, out_dir, num_iterations))
    for code, output in zip(codes, outputs):
        assert code == 0, output[-3000:]
    reports = [json.loads((out_dir / f"worker{i}.json").read_text()) for i in range(2)]
    params = [list(np.load(out_dir / f"worker{i}.npz").values()) for i in range(2)]
    return reports, params


def test_two_workers_train_identically_save_on_chief_and_resume(tmp_path):
    workdir = tmp_path / "run"
    reports, params = run_cluster(workdir, tmp_path / "phase1", num_iterations=2)
    chief, other = reports
    assert chief["is_chief"] and not other["is_chief"]
    assert chief["replicas"] == other["replicas"] == 2
    assert chief["per_replica_batch_size"] == 2  # meta_batch_size 4 over 2 replicas
    assert chief["step"] == other["step"] == 2 and chief["start"] == 0
    assert chief["write_dir"] == str(workdir)
    assert other["write_dir"] != str(workdir) and not other["write_dir_exists"]  # temporary, deleted
    for a, b in zip(*params):
        np.testing.assert_array_equal(a, b)
    assert sorted(p.name for p in (workdir / "checkpoints").glob("*.index")) == ["ckpt-2.index"]
    assert (workdir / "config.json").is_file() and list((workdir / "tensorboard").iterdir())
    # Only the chief tests and exports (one SavedModel version).
    assert chief["tested"] == [0, 1] and other["tested"] == [] and other["export_path"] is None
    exports = tmp_path / "phase1" / "exports" / "maml_sinusoid"
    assert chief["export_path"] == str(exports / "1") and [p.name for p in exports.iterdir()] == ["1"]
    assert (exports / "1" / "saved_model.pb").is_file()

    # Resume both workers from the chief's checkpoint to step 4.
    reports, resumed = run_cluster(workdir, tmp_path / "phase2", num_iterations=4)
    assert [r["start"] for r in reports] == [2, 2] and [r["step"] for r in reports] == [4, 4]
    for a, b in zip(*resumed):
        np.testing.assert_array_equal(a, b)
    assert sorted(p.name for p in (workdir / "checkpoints").glob("*.index")) == ["ckpt-2.index", "ckpt-4.index"]
    assert not any(np.array_equal(a, b) for a, b in zip(params[0], resumed[0]) if a.ndim == 2)  # it trained on

    # The same steps on one device (the global meta-batch is the same).
    sys.path.insert(0, str(WORKER.parent))
    import multi_worker_check

    from tfmeta.training import runner

    single, _ = runner.build_trainer(multi_worker_check.config(tmp_path / "single", 4, "default"), verbose=False)
    # The loop's gradients before any update: the mean over both workers' tasks equals the
    # single-device mean (a sum over workers, or a worker drawing the other's tasks, would not).
    expected = multi_worker_check.first_gradients(single)
    for index in range(2):
        grads = list(np.load(tmp_path / "phase1" / f"worker{index}_grads.npz").values())
        assert max(float(np.abs(g).max()) for g in grads) > 0.1
        for g, e in zip(grads, expected):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
    single.train()
    for a, b in zip(resumed[0], single.model.variables):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-5, atol=1e-6)


PREEMPT_RUN = pathlib.Path(__file__).with_name("preempt_run.py")


def _final_checkpoint(workdir):
    import tensorflow as tf  # noqa: PLC0415

    from tfmeta.training import checkpoints  # noqa: PLC0415

    reader = tf.train.load_checkpoint(checkpoints.latest_checkpoint(workdir))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if not any(part in name for part in ("save_counter", "checkpointed_runs", "_CHECKPOINTABLE_OBJECT_GRAPH"))}


@pytest.mark.slow
def test_sigterm_to_one_worker_saves_the_same_step_on_all_and_resumes_bitwise(tmp_path):
    """SIGTERM to the non-chief worker: TensorFlow's PreemptionCheckpointHandler makes both save and exit 42."""
    from tfmeta.training import checkpoints  # noqa: PLC0415
    from tfmeta.training.preemption import PREEMPTED_EXIT_CODE  # noqa: PLC0415

    codes, outputs = finish(start_workers(PREEMPT_RUN, tmp_path / "full", "multi_worker", 40))
    assert codes == [0, 0], outputs[0][-2000:]

    processes = start_workers(PREEMPT_RUN, tmp_path / "run", "multi_worker", 40)
    for line in processes[0].stdout:  # the chief prints progress; preempt the other worker once it trains
        if line.startswith("step 10/"):
            processes[1].send_signal(signal.SIGTERM)
            break
    codes, outputs = finish(processes)
    assert codes == [PREEMPTED_EXIT_CODE] * 2, [o[-2000:] for o in outputs]
    stopped = int(outputs[0].split("Preempted (SIGTERM) after step ")[1].split(":")[0])
    assert 10 <= stopped < 40
    assert checkpoints.latest_checkpoint(tmp_path / "run").endswith(f"ckpt-{stopped}")

    codes, outputs = finish(start_workers(PREEMPT_RUN, tmp_path / "run", "multi_worker", 40))
    assert codes == [0, 0], outputs[0][-2000:]
    full, resumed = _final_checkpoint(tmp_path / "full"), _final_checkpoint(tmp_path / "run")
    assert sorted(full) == sorted(resumed)
    for name in full:
        np.testing.assert_array_equal(full[name], resumed[name], err_msg=name)
