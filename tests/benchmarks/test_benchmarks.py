"""The benchmarks still run and print the lines their docs promise (tiny settings;
the figures themselves are measured by running the benchmarks, not here)."""

import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_meta_step_prints_one_line_per_config():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.meta_step", "--configs=fomaml_1step,proto_5w1s", "--meta_batch_size=2",
         "--repeats=1", "--warmup=0", "--notorch"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "intra_op_threads=1 inter_op_threads=default" in done.stdout, done.stdout
    assert re.search(r"^config=fomaml_1step ms_per_meta_step=[\d.]+ peak_rss_mb=\d+ start_rss_mb=\d+$", done.stdout,
                     re.M), done.stdout
    assert re.search(r"^config=proto_5w1s ms_per_episode=[\d.]+ peak_rss_mb=\d+", done.stdout, re.M), done.stdout


def test_serving_prints_one_line_per_config():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.serving", "--configs=proto_20w1s", "--requests=3", "--warmup=1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"^config=proto_20w1s p50_ms=[\d.]+ p99_ms=[\d.]+$", done.stdout, re.M), done.stdout
