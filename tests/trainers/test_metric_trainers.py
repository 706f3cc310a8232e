"""The Matching and Relation Networks trainers, run as users run them, on a generated image folder."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[2]


def run_module(module, *args, timeout=240):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """10 classes of 4 greyscale 28x28 PNGs: a bright square at a class-specific place, plus noise."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for c in range(10):
        (root / f"class{c}").mkdir()
        for i in range(4):
            image = rng.integers(0, 60, size=(28, 28), dtype=np.uint8)
            row, col = 2 + 6 * (c // 4), 2 + 6 * (c % 4)
            image[row:row + 8, col:col + 8] = 255
            Image.fromarray(image).save(root / f"class{c}" / f"{i}.png")
    return root


@pytest.mark.parametrize("trainer, flags, algorithm", [
    ("matching", ["--fce"], {"learner": "matching", "fce": True}),
    # Relation Networks' trainer runs the same runner with another embedding (slow: ~40 s more).
    pytest.param("relation", [], {"learner": "relation", "feature_shape": [5, 5, 64]}, marks=pytest.mark.slow),
])
def test_trainer_smoke_exports_any_ways(tmp_path, image_folder, trainer, flags, algorithm):
    workdir, exports = tmp_path / "run", tmp_path / "exports"
    done = run_module(f"trainers.{trainer}", "--dataset=folder", f"--data_dir={image_folder}", "--ways=3",
                      "--shots=1", "--queries=2", "--train_queries=2", "--num_iterations=4", "--eval_every=4",
                      "--eval_episodes=4", "--max_ways=5", f"--workdir={workdir}", f"--export_dir={exports}",
                      "--export_name=model", *flags)
    assert done.returncode == 0, done.stderr[-3000:]
    test_lines = [line for line in done.stdout.splitlines() if line.startswith("test: ")]  # one pass: no steps
    assert len(test_lines) == 1 and "accuracy" in test_lines[0] and "(4 episodes)" in test_lines[0], done.stdout
    config = json.loads((workdir / "config.json").read_text())
    assert config["variant"] == trainer and config["num_iterations"] == 4
    if trainer == "relation":  # the trainer's defaults: the paper's embedding, one episode per step
        assert config["backbone"] == "conv4_relation" and config["meta_batch_size"] == 1
    assert (workdir / "checkpoints" / "ckpt-4.index").is_file()
    card = json.loads((exports / "model" / "1" / "assets" / "tfmeta.json").read_text())
    assert card["kind"] == "few_shot_classifier" and card["any_ways"] and card["ways"] == 5
    assert algorithm.items() <= card["algorithm"].items()
    assert "embed" in card["signatures"]
    # Restored from its checkpoint (the LSTMs or the relation module with their BatchNorm statistics included),
    # the model gives the same test results: an uncheckpointed variable would come back at its initial value.
    evaluated = run_module("trainers.evaluate", f"--workdir={workdir}", "--eval_episodes=4")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "at step 4" in evaluated.stdout and test_lines[0] in evaluated.stdout.splitlines(), evaluated.stdout
