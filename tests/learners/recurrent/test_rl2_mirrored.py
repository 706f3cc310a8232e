"""RL² under MirroredStrategy on 2 logical CPUs: the same PPO gradients as one device (run in a fresh process,
`rl2_mirrored_check.py`, since logical devices must be configured before TensorFlow initialises)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
CHECK = pathlib.Path(__file__).with_name("rl2_mirrored_check.py")


def _run(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    done = subprocess.run([sys.executable, str(CHECK), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.split("RESULT ")[-1])


def test_two_replicas_give_the_one_device_gradients():
    result = _run()
    assert result["replicas"] == 2 and result["same_start"] == 0.0
    # Gradients of the same 8 trials, before any update. A sum over replicas instead of a mean
    # doubles them; per-replica advantage normalisation or a per-replica mean changes them by
    # O(scale): both fail this bound.
    assert result["grad_scale"] > 1e-2, result
    assert result["grad_difference"] < 1e-4 * result["grad_scale"] + 1e-7, result
    assert result["loss_difference"] < 1e-5 * max(1.0, abs(result["loss"])), result


@pytest.mark.slow
def test_a_whole_training_step_runs_on_two_replicas():
    # The compiled step (rollout on each replica's tasks + PPO) runs and updates the weights.
    result = _run("--step")
    assert result["step"] == 1 and result["step_finite"] and result["step_moved"] > 0, result
