"""`python -m benchmarks.torch_reference --check`: tfmeta and the torch reference
compute the same meta-gradient (tiny meta-batches; the full check is the command).

Skipped where torch is not importable: it is not a tfmeta dependency."""

import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None,
    reason="torch is not importable (not a tfmeta dependency; `pip install torch==2.13.0` to run the check)",
)


def run(args):
    # A child process: torch and TensorFlow stay out of the test process.
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)


def test_check_passes_and_prints_one_line_per_config():
    done = run(["-m", "benchmarks.torch_reference", "--check", "--check_configs=maml2_1step,fomaml_1step",
                "--check_tasks=2"])
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    for name in ("maml2_1step", "fomaml_1step"):
        match = re.search(rf"^check={name} max_rel_diff=(\S+) .*dtype=float64 tasks=2 tolerance=1e-08 ok=True$",
                          done.stdout, re.M)
        assert match, done.stdout
        assert float(match.group(1)) < 1e-8


def test_check_fails_on_a_mismatch():
    # torch's default BatchNorm epsilon (1e-5) instead of tfmeta's 1e-3: far above the tolerance.
    code = ("from benchmarks import torch_reference as r; "
            "print(max(r.meta_gradient_differences(1, True, tasks=1, torch_bn_epsilon=1e-5).values()))")
    done = run(["-c", code])
    assert done.returncode == 0, done.stderr[-3000:]
    assert float(done.stdout.strip().splitlines()[-1]) > 1e3 * 1e-8, done.stdout


def test_check_exits_non_zero_above_the_tolerance():
    done = run(["-m", "benchmarks.torch_reference", "--check", "--check_configs=fomaml_1step", "--check_tasks=1",
                "--check_tolerance=0"])
    assert done.returncode == 1, done.stdout + done.stderr[-3000:]
    assert re.search(r"^check=fomaml_1step max_rel_diff=\S+ .* ok=False$", done.stdout, re.M), done.stdout
