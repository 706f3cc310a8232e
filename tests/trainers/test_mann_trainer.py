"""`python -m trainers.mann`, run as users run it, on a generated Omniglot-layout tree."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def run_module(*args, timeout=300):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "trainers.mann", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow  # ~25 s: the same path runs in-process in tests/training/test_sequence_runs.py
def test_trainer_tests_by_instance_and_exports(tmp_path, omniglot_tree):
    """The sample split's alphabets (train: Greek, Latin; validation: Early_Aramaic; test: Sanskrit,
    Tagalog), 4 images per character: a 2-step run prints the by-instance table and exports."""
    tree = omniglot_tree(tmp_path / "omniglot", {"Greek": 3, "Latin": 3, "Early_Aramaic": 3, "Sanskrit": 2,
                                                 "Tagalog": 2}, images_per_character=4, size=8)
    done = run_module(f"--data_dir={tree}", "--ways=3", "--instances=2", "--image_size=8", "--meta_batch_size=2",
                      "--num_iterations=2", "--eval_every=2", "--eval_episodes=4", "--controller_units=8",
                      "--memory_slots=8", "--memory_width=4", "--read_heads=2", f"--workdir={tmp_path / 'run'}",
                      f"--export_dir={tmp_path / 'exports'}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "instance |" in done.stdout and "all steps:" in done.stdout, done.stdout
    card = json.loads((tmp_path / "exports" / "mann_omniglot_3way" / "1" / "assets" / "tfmeta.json").read_text())
    assert card["kind"] == "recurrent_classifier" and card["training"]["shots"] == 2
    assert card["input"]["shape"] == [8, 8, 1]


def test_bad_flags_end_in_one_error_line(tmp_path):
    done = run_module(f"--data_dir={tmp_path / 'missing'}", f"--workdir={tmp_path / 'run'}")
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Omniglot data not found" in errors[0] and "missing" in errors[0], done.stderr
