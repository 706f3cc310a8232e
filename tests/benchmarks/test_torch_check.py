"""`python -m benchmarks.torch_reference --check`: tfmeta and the torch references
compute the same meta-gradients (MAML, CNP, HyperHead; tiny meta-batches; the full
check is the command).

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


def test_amortized_checks_pass():
    # CNP on GP tasks with per-task counts (masks differ between tasks) and HyperHead on Conv-4:
    # the torch references compute tfmeta's loss and meta-gradients on the same weights and inputs.
    done = run(["-m", "benchmarks.torch_reference", "--check", "--check_configs=cnp_gp,hypernet_5w1s",
                "--check_tasks=2"])
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    for name, tolerance in (("cnp_gp", "1e-08"), ("hypernet_5w1s", "0.0001")):
        match = re.search(rf"^check={name} max_rel_diff=(\S+) .*dtype=float64 tasks=2 tolerance={tolerance} ok=True$",
                          done.stdout, re.M)
        assert match, done.stdout
        assert float(match.group(1)) < float(tolerance)


def test_amortized_checks_fail_on_a_mismatch():
    # A stddev floor of 0 instead of 0.1 (CNP), BatchNorm epsilon 1e-5 instead of 1e-3 (HyperHead):
    # far above the tolerances.
    code = ("from benchmarks import torch_reference as r; "
            "print(max(r.cnp_gradient_differences(tasks=2, torch_min_stddev=0.0).values())); "
            "print(max(r.hypernet_gradient_differences(tasks=1, torch_bn_epsilon=1e-5).values()))")
    done = run(["-c", code])
    assert done.returncode == 0, done.stderr[-3000:]
    cnp, hypernet = (float(line) for line in done.stdout.strip().splitlines()[-2:])
    assert cnp > 1e3 * 1e-8 and cnp > 1e-2, done.stdout
    assert hypernet > 1e2 * 1e-4, done.stdout


def test_hypernet_per_task_loop_computes_the_batched_step():
    # `--check` compares the batched pass with tfmeta; the loop over the tasks must give the same numbers
    # (float64: in float32 the first layer's gradients differ by round-off, ~2e-5 of the largest).
    code = ("import torch; from benchmarks import torch_reference as r; "
            "a, b = r.TorchHyperHeadStep(), r.TorchHyperHeadStep(per_task=True); a.model.double(); b.model.double(); "
            "episode = [t.double() if t.is_floating_point() else t for t in a.random_episode(3)]; "
            "la, lb = a.loss(*episode), b.loss(*episode); la.backward(); lb.backward(); "
            "scale = max(p.grad.abs().max().item() for p in a.model.parameters()); "
            "print(abs(la.item() - lb.item()) / la.item(), "
            "max((p.grad - q.grad).abs().max().item() for p, q in zip(a.model.parameters(), b.model.parameters()))"
            " / scale)")
    done = run(["-c", code])
    assert done.returncode == 0, done.stderr[-3000:]
    loss, grads = (float(v) for v in done.stdout.split())
    assert loss < 1e-12 and grads < 1e-10, done.stdout
