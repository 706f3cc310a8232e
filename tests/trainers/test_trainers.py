"""The thin trainers, run as users run them (subprocesses)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def run_module(module, *args, timeout=240, quiet_tensorflow=True):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    if quiet_tensorflow:
        env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    else:  # as a user runs the trainers: the trainers keep TensorFlow's start-up lines out themselves
        env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_maml_trainer_smoke_then_evaluate(tmp_path):
    workdir = tmp_path / "run"
    exports = tmp_path / "exports"
    done = run_module("trainers.maml", "--num_iterations=20", "--eval_episodes=20", f"--workdir={workdir}",
                      f"--export_dir={exports}", "--export_name=sine")
    assert done.returncode == 0, done.stderr[-3000:]
    for steps in (0, 1, 5, 10):
        assert f"test after {steps:2d} inner steps: mse" in done.stdout, done.stdout
    assert "± " in done.stdout and "(20 episodes)" in done.stdout
    assert f"exported {exports / 'sine' / '1'}" in done.stdout
    assert json.loads((exports / "sine" / "1" / "assets" / "tfmeta.json").read_text())["kind"] == "few_shot_regressor"
    config = json.loads((workdir / "config.json").read_text())
    assert config["variant"] == "maml" and config["num_iterations"] == 20 and config["dataset"] == "sinusoid"
    assert (workdir / "checkpoints" / "ckpt-20.index").is_file()
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))

    evaluated = run_module("trainers.evaluate", f"--workdir={workdir}", "--eval_episodes=25")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "at step 20" in evaluated.stdout and "(25 episodes)" in evaluated.stdout

    # Same workdir, different settings: refused, nothing overwritten.
    refused = run_module("trainers.maml", "--num_iterations=20", "--inner_lr=0.5", f"--workdir={workdir}")
    assert refused.returncode == 1
    assert "inner_lr=0.5 (workdir has 0.01)" in refused.stderr and "Traceback" not in refused.stderr
    assert json.loads((workdir / "config.json").read_text())["inner_lr"] == 0.01


def test_reptile_trainer_rejects_another_variant(tmp_path):
    done = run_module("trainers.reptile", "--variant=maml", f"--workdir={tmp_path}")
    assert done.returncode != 0
    assert "trains Reptile only. Received: variant='maml'" in done.stderr
    assert not (tmp_path / "config.json").exists()


def test_strategy_and_mixed_precision_flags(tmp_path):
    workdir = tmp_path / "run"
    done = run_module("trainers.reptile", "--strategy=mirrored", "--devices=CPU:0", "--mixed_precision=mixed_bfloat16",
                      "--num_iterations=2", "--eval_every=2", "--eval_episodes=4", "--eval_inner_steps=1",
                      "--meta_batch_size=2", f"--workdir={workdir}", "--export_dir=")
    assert done.returncode == 0, done.stderr[-3000:]
    config = json.loads((workdir / "config.json").read_text())
    assert (config["strategy"], config["devices"], config["mixed_precision"]) == ("mirrored", "CPU:0", "mixed_bfloat16")
    assert (workdir / "checkpoints" / "ckpt-2.index").is_file()

    refused = run_module("trainers.maml", "--devices=GPU:0", f"--workdir={tmp_path / 'other'}")
    assert refused.returncode != 0
    assert "`devices` applies to strategy='mirrored' only. Received: strategy='default'" in refused.stderr


def test_bad_input_is_one_line_and_tensorflow_start_up_is_quiet(tmp_path):
    missing = tmp_path / "nowhere"
    done = run_module("trainers.maml", "--dataset=folder", f"--data_dir={missing}", f"--workdir={tmp_path / 'run'}",
                      quiet_tensorflow=False)
    assert done.returncode == 1
    assert done.stderr.splitlines()[0] == f"error: Image folder not found: {missing}", done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 2  # the error and the --verbose hint
    for noise in ("oneDNN", "cuInit", "absl::InitializeLog", "cpu_feature_guard", "cuda drivers"):
        assert noise not in done.stderr + done.stdout, noise

    verbose = run_module("trainers.maml", "--dataset=folder", f"--data_dir={missing}", f"--workdir={tmp_path / 'run'}",
                         "--verbose", quiet_tensorflow=False)
    assert verbose.returncode != 0
    assert "Traceback" in verbose.stderr and "FileNotFoundError: Image folder not found" in verbose.stderr


def _image_folder(root, classes=8, images=6, size=28, seed=0):
    """A folder dataset: `classes` classes of `images` grey images each, a class-specific pattern plus noise."""
    from PIL import Image
    import numpy as np

    rng = np.random.default_rng(seed)
    for k in range(classes):
        pattern = rng.random((size, size)) > 0.7
        for i in range(images):
            pixels = (pattern * 200 + rng.integers(0, 55, (size, size))).astype(np.uint8)
            folder = root / f"class{k}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def test_protonet_trainer_resumes_exactly_and_exports_for_any_ways(tmp_path):
    import numpy as np

    data = _image_folder(tmp_path / "data", classes=10)
    common = ["--dataset=folder", f"--data_dir={data}", "--ways=2", "--shots=1", "--queries=2", "--train_ways=3",
              "--train_queries=2", "--eval_every=2", "--eval_episodes=4", "--max_ways=4"]
    full = run_module("trainers.protonet", *common, "--num_iterations=4", f"--workdir={tmp_path / 'full'}",
                      f"--export_dir={tmp_path / 'exports'}", "--export_name=proto")
    assert full.returncode == 0, full.stderr[-3000:]
    assert "test: loss" in full.stdout and "(4 episodes)" in full.stdout, full.stdout
    config = json.loads((tmp_path / "full" / "config.json").read_text())
    assert (config["variant"], config["train_ways"], config["ways"]) == ("protonet", 3, 2)
    card = json.loads((tmp_path / "exports" / "proto" / "1" / "assets" / "tfmeta.json").read_text())
    assert card["any_ways"] and card["ways"] == 4 and "embed" in card["signatures"]
    # The same run tested on 3-way tasks (a metric learner serves any number of classes).
    evaluated = run_module("trainers.evaluate", f"--workdir={tmp_path / 'full'}", "--ways=3", "--eval_episodes=5")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "test: loss" in evaluated.stdout and "(5 episodes)" in evaluated.stdout

    first = run_module("trainers.protonet", *common, "--num_iterations=2", f"--workdir={tmp_path / 'split'}",
                       "--export_dir=")
    second = run_module("trainers.protonet", *common, "--num_iterations=4", f"--workdir={tmp_path / 'split'}",
                        "--export_dir=")
    assert first.returncode == 0 and second.returncode == 0, second.stderr[-3000:]
    assert "Resuming from step 2" in second.stdout
    import tensorflow as tf

    # Every value of the two final checkpoints (network, optimizer slots, step), bit for bit.
    read = lambda run: {name: tf.train.load_variable(str(tmp_path / run / "checkpoints" / "ckpt-4"), name)
                        for name, _ in tf.train.list_variables(str(tmp_path / run / "checkpoints" / "ckpt-4"))
                        if not name.startswith(("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter"))}
    full_values, resumed_values = read("full"), read("split")
    assert full_values.keys() == resumed_values.keys() and len(full_values) > 50
    for name, value in full_values.items():
        np.testing.assert_array_equal(value, resumed_values[name], err_msg=name)


def test_preset_flag_starts_from_the_papers_settings_and_flags_override_it(tmp_path):
    workdir, exports = tmp_path / "run", tmp_path / "exports"
    done = run_module("trainers.maml", "--preset=sinusoid", "--num_iterations=2", "--eval_every=2",
                      "--eval_episodes=4", f"--workdir={workdir}", f"--export_dir={exports}", "--export_name=sine")
    assert done.returncode == 0, done.stderr[-3000:]
    config = json.loads((workdir / "config.json").read_text())
    # From the preset (the defaults are 5 / 10 / 10 / 1000); --num_iterations given: overridden.
    assert (config["preset"], config["meta_batch_size"], config["shots"], config["queries"]) == ("sinusoid", 25, 5, 5)
    assert config["num_iterations"] == 2 and "Finn et al. 2017" in config["paper"]
    card = json.loads((exports / "sine" / "1" / "assets" / "tfmeta.json").read_text())
    assert card["preset"]["name"] == "sinusoid" and "Finn et al. 2017" in card["preset"]["paper"]

    other = run_module("trainers.protonet", "--preset=maml_omniglot_5w1s", f"--workdir={tmp_path / 'p'}")
    assert other.returncode == 1
    assert "--preset=maml_omniglot_5w1s runs with `python -m trainers.maml`" in other.stderr
    unknown = run_module("trainers.maml", "--preset=omniglot_1w", f"--workdir={tmp_path / 'u'}")
    assert unknown.returncode == 1 and "Received: --preset=omniglot_1w" in unknown.stderr


def test_finetune_trainer(tmp_path):
    """Pre-training through the loop on a folder of images, the test on unseen classes, the export's card."""
    data = _image_folder(tmp_path / "data", classes=15, images=4, size=16)  # 12 pre-train, 3 test classes
    workdir, exports = tmp_path / "run", tmp_path / "exports"
    done = run_module("trainers.finetune", "--dataset=folder", f"--data_dir={data}", "--ways=3",
                      "--shots=1", "--queries=2", "--batch_size=8", "--num_iterations=4", "--eval_every=2",
                      "--eval_episodes=6", "--head=cosine", f"--workdir={workdir}", f"--export_dir={exports}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "test: loss" in done.stdout and "accuracy" in done.stdout and "(6 episodes)" in done.stdout
    config = json.loads((workdir / "config.json").read_text())
    assert (config["variant"], config["head"], config["batch_size"]) == ("finetune", "cosine", 8)
    assert config["data"]["num_classes"] == 12  # the pre-training head's size, for restoring without the data
    assert (workdir / "checkpoints" / "ckpt-4.index").is_file()
    card = json.loads((exports / "finetune_folder_3way_1shot" / "1" / "assets" / "tfmeta.json").read_text())
    assert card["any_ways"] and card["algorithm"]["head"] == "cosine" and card["algorithm"]["num_classes"] == 12
