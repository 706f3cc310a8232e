"""The benchmarks still run and print the lines their docs promise (tiny settings;
the figures themselves are measured by running the benchmarks, not here)."""

import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_meta_step_prints_one_line_per_config():
    # The gradient, metric and amortized configs in one process (one TensorFlow start-up).
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.meta_step", "--configs=fomaml_1step,proto_5w1s,cnp_gp,hypernet_5w1s",
         "--meta_batch_size=2", "--repeats=1", "--warmup=0", "--notorch"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "intra_op_threads=1 inter_op_threads=default" in done.stdout, done.stdout
    for name in ("fomaml_1step", "cnp_gp", "hypernet_5w1s"):
        assert re.search(rf"^config={name} ms_per_meta_step=[\d.]+ peak_rss_mb=\d+ start_rss_mb=\d+$", done.stdout,
                         re.M), done.stdout
    assert re.search(r"^config=proto_5w1s ms_per_episode=[\d.]+ peak_rss_mb=\d+", done.stdout, re.M), done.stdout
    assert "torch" not in done.stdout, done.stdout


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not importable (not a dependency)")
def test_meta_step_amortized_configs_time_the_torch_reference():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.meta_step", "--configs=cnp_gp,hypernet_5w1s", "--meta_batch_size=2",
         "--repeats=1", "--warmup=0", "--torch_threads=1", "--torch_hypernet_per_task"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("cnp_gp", "hypernet_5w1s"):
        assert re.search(rf"^config={name} ms_per_meta_step=[\d.]+ ", done.stdout, re.M), done.stdout
        assert re.search(rf"^config=torch_{name} ms_per_meta_step=[\d.]+ peak_rss_mb=\d+ start_rss_mb=\d+$",
                         done.stdout, re.M), done.stdout
        assert re.search(rf"^config={name} tf_over_torch=[\d.]+$", done.stdout, re.M), done.stdout


def test_meta_step_builds_the_trainers_learners_and_batches():
    # What the timed steps run: the trainers' meta-batch sizes, their learners with the sizes
    # the torch reference mirrors (`torch_reference --check` compares those), and a real GP
    # meta-batch with prefix masks (not random shapes).
    code = """
import json, tempfile
import numpy as np
from benchmarks import meta_step as m
from tfmeta.training import runner
print(json.dumps([m.tasks_per_step(n, None) for n in ("maml2_1step", "proto_5w1s", "cnp_gp", "hypernet_5w1s")]))
with tempfile.TemporaryDirectory() as workdir:
    cnp, batch = m.amortized_trainer("cnp_gp", None, 4, workdir, workdir + "/b.npz")
    saved = np.load(workdir + "/b.npz")
    assert all(np.array_equal(saved[f], getattr(batch, f)) for f in saved.files), saved.files
    head, episode = m.amortized_trainer("hypernet_5w1s", None, 2, workdir, None)
print(json.dumps(cnp.learner.config()))
print(json.dumps(head.learner.config()))
print(json.dumps({"shapes": [list(t.shape) for t in batch], "support_mask": batch.support_mask.tolist(),
                  "query_mask": batch.query_mask.tolist(), "images": list(episode.support_x.shape)}))
"""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    tasks, cnp, head, data = (json.loads(line) for line in done.stdout.strip().splitlines()[-4:])
    assert tasks == [32, 1, 64, 32]
    assert (cnp["class"], cnp["encoder_sizes"], cnp["decoder_sizes"], cnp["min_stddev"], cnp["attention"]) == (
        "ConditionalNeuralProcess", [128] * 4, [128, 128], 0.1, False)
    assert (head["class"], head["generator_sizes"], head["metadata_dim"]) == ("HyperHead", [128], None)
    assert data["shapes"][:6] == [[4, 9, 1], [4, 9, 1], [4, 18, 1], [4, 18, 1], [4, 9], [4, 18]]
    for mask in data["support_mask"] + data["query_mask"]:  # prefixes of real points, some padding
        count = int(sum(mask))
        assert mask == [1.0] * count + [0.0] * (len(mask) - count) and 3 <= count < len(mask), mask
    assert data["images"] == [2, 5, 28, 28, 1]


def test_serving_prints_one_line_per_config():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.serving", "--configs=proto_20w1s", "--requests=8", "--warmup=2",
         "--concurrency=4"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"^config=proto_20w1s p50_ms=[\d.]+ p99_ms=[\d.]+ requests_per_s=[\d.]+ concurrency=4 "
                     r"load_p50_ms=[\d.]+ load_p99_ms=[\d.]+ load_requests_per_s=[\d.]+$", done.stdout, re.M), done.stdout


@pytest.mark.slow  # compiles the 256-unit GRU's 100-step rollout and its PPO update (~12 s unloaded)
def test_meta_step_rl2_bandit_prints_its_configuration_and_the_time_split():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.meta_step", "--configs=rl2_bandit", "--meta_batch_size=2",
         "--repeats=1", "--warmup=0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "# rl2_bandit: k=10 arms, n=100 pulls per trial, 2 trials per step, GRU 256 units" in done.stdout
    line = re.search(r"^config=rl2_bandit ms_per_meta_step=([\d.]+) env_steps_per_s=(\d+) rollout_ms=([\d.]+) "
                     r"ppo_update_ms=(-?[\d.]+) peak_rss_mb=\d+ start_rss_mb=\d+$", done.stdout, re.M)
    assert line, done.stdout
    ms, steps_per_s = float(line[1]), int(line[2])
    assert abs(steps_per_s - 2 * 100 / ms * 1000) <= 1  # trials x pulls per second of the whole step
    assert "torch_rl2_bandit" not in done.stdout
