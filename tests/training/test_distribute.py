"""tf.distribute: MirroredStrategy on 2 logical CPUs matches one device; strategy plumbing and errors.

The MirroredStrategy comparison runs in its own process (`mirrored_check.py`): logical
devices must be configured before TensorFlow initialises, which another test may already
have done in this pytest process.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest
import tensorflow as tf

from tfmeta.training import distribute
from tfmeta.training.config import MetaTrainConfig
from tfmeta.training.loop import MetaTrainer

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHECK = pathlib.Path(__file__).with_name("mirrored_check.py")


VARIANTS = ["maml", "maml++", "protonet", "finetune", "cnp_gp", "hypernet"]
# Variants whose distributed path is one of the above's, checked with `-m slow` to keep the default
# suite's time: first-order MAML and Reptile (their meta-gradients, a first-order gradient and the
# weights' difference, come out of the same inner loop and are reduced as MAML's), Matching and
# Relation Networks (an episodic loss of an embedding, as ProtoNets'; Relation Networks' BatchNorm
# state is reduced as MAML's), the CNP classifier (an amortized learner's extra variables, as the
# HyperNetwork's and the GP CNP's) and the HyperNetwork's FiLM generator.
SLOW_VARIANTS = ["fomaml", "reptile", "matching", "relation", "cnp", "hypernet_film"]
# Learners without a network of their own to change (a CNP on raw (x, y) pairs): their
# parameters are all extra variables, and they hold no BatchNorm state.
WITHOUT_NETWORK_STATE = {"cnp_gp"}
# The size of the largest meta-gradient below which the comparison would say little (Relation
# Networks' MSE of sigmoid scores: measured 0.10, smaller than a cross-entropy's; the CNP
# classifier's decoder starts with small gradients: measured 0.036).
GRAD_SCALE = {"relation": 0.02, "cnp": 0.02}


def _run_mirrored_check(tmp_path_factory, variants):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    # The script's own folder comes first on its sys.path: put this checkout's tfmeta before any installed one.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    workdir = tmp_path_factory.mktemp("mirrored")
    done = subprocess.run([sys.executable, str(CHECK), str(workdir), *variants], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.split("RESULT ")[-1])


@pytest.fixture(scope="module")
def mirrored_results(tmp_path_factory):
    """Second-order MAML, MAML++ (per-step BatchNorm statistics), Prototypical Networks (Conv-4,
    8 filters, 16x16, BatchNorm), the fine-tuning baseline (pre-training batches of all 8
    classes), a CNP on GP tasks (padded sets under masks) and the HyperNetwork head on Conv-4,
    on 2 replicas (2 tasks each) and on one device (4 tasks)."""
    return _run_mirrored_check(tmp_path_factory, VARIANTS)


@pytest.fixture(scope="module")
def mirrored_results_slow(tmp_path_factory):
    """First-order MAML, Reptile, Matching and Relation Networks (their embedding, 8 filters, and a relation
    module with BatchNorm), the CNP classifier and the HyperNetwork's FiLM generator, as above."""
    return _run_mirrored_check(tmp_path_factory, SLOW_VARIANTS)


@pytest.mark.parametrize("variant", VARIANTS)
def test_mirrored_two_replicas_match_one_device(mirrored_results, variant):
    _check_mirrored(mirrored_results[variant], variant)


@pytest.mark.slow
@pytest.mark.parametrize("variant", SLOW_VARIANTS)
def test_mirrored_two_replicas_match_one_device_more_learners(mirrored_results_slow, variant):
    _check_mirrored(mirrored_results_slow[variant], variant)


def _check_mirrored(result, variant):
    assert result["replicas"] == 2 and result["num_copies"] == 2
    # The loop's reduced meta-gradients of the same global meta-batch, before any update
    # (measured: ~6e-8 of ~0.7 for MAML): a sum instead of a mean over replicas, or a replica
    # seeing the wrong tasks, is off by O(1) relative.
    assert result["grad_max_abs"] > GRAD_SCALE.get(variant, 0.1)
    assert result["grad_max_diff"] < 1e-6 and result["grad_max_rel_diff"] < 1e-5
    assert result["first_loss_diff"] < 1e-6
    # BatchNorm statistics averaged over the global meta-batch (MAML++: one copy per inner step).
    assert result["state_max_diff"] < 1e-6
    if variant == "maml++":
        assert result["state_shapes"][0] == [3, 8]  # inner_steps + 1 copies of 8 channels
    assert result["loss_diff"] < 1e-5
    # Parameters and BatchNorm moving statistics after 3 Adam steps of 1e-3 (measured: 2e-6 to 2.5e-5 apart,
    # depending on the threads' summation order, which Adam's division by the gradients' own size amplifies;
    # they moved by ~0.08 with the moving statistics, ~3e-3 without: MAML++ keeps its statistics per step).
    # The gradients before any update are compared to 1e-6 above: this only checks the updates are applied.
    if variant in WITHOUT_NETWORK_STATE:
        assert result["extra_max_change"] > 2e-3 and result["extra_max_diff"] < 1e-4
        assert result["state_shapes"] == [] and result["moving_min_change"] is None
        assert result["step"] == 3 and result["checkpoint"] and result["replica_max_diff"] == 0.0
        return
    assert result["param_max_change"] > 2e-3
    assert result["param_max_diff"] < 1e-4
    assert result["extra_max_diff"] < 1e-4
    # Conv biases before BatchNorm: exact gradient 0 (noise ~3e-7), Adam moves them by at most meta_lr a step.
    assert result["cancelled_bias_max_grad"] < 1e-5
    assert result["cancelled_bias_max_diff"] <= 2 * 3 * 1e-3
    # Every replica holds the same values of every variable of the learner (state reduced and assigned cross-replica).
    assert result["replica_max_diff"] == 0.0
    assert result["moving_min_change"] > 1e-3
    assert result["step"] == 3 and result["checkpoint"]


def test_make_strategy_and_errors():
    assert distribute.make_strategy("default") is tf.distribute.get_strategy()
    mirrored = distribute.make_strategy("mirrored", devices="CPU:0")
    assert isinstance(mirrored, tf.distribute.MirroredStrategy) and mirrored.num_replicas_in_sync == 1
    assert distribute.parse_devices(" GPU:0, GPU:1 ,") == ["GPU:0", "GPU:1"]
    with pytest.raises(ValueError, match="Received: strategy='horovod'"):
        distribute.make_strategy("horovod")
    with pytest.raises(ValueError, match="'mirrored' strategy only. Received: strategy='default'"):
        distribute.make_strategy("default", devices="GPU:0")
    assert distribute.is_chief(mirrored) and distribute.is_chief(tf.distribute.get_strategy())
    with pytest.raises(ValueError, match="Received: count=0"):
        distribute.configure_logical_devices(0)
    tf.constant(1.0)  # TensorFlow is initialised now: too late to split devices.
    with pytest.raises(RuntimeError, match="before TensorFlow initialises"):
        distribute.configure_logical_devices(2)


def test_meta_batch_must_divide_among_replicas(tmp_path):
    class FourReplicas:
        num_replicas_in_sync = 4

    assert distribute.check_meta_batch_size(8, FourReplicas()) == 2
    with pytest.raises(ValueError, match=r"divisible by the number of replicas \(4\).*Received: meta_batch_size=6"):
        distribute.check_meta_batch_size(6, FourReplicas())
    with pytest.raises(ValueError, match="Received: meta_batch_size=6"):
        MetaTrainer(MetaTrainConfig(meta_batch_size=6, workdir=str(tmp_path)), None, None, strategy=FourReplicas())


def test_tf_config_for():
    config = json.loads(distribute.tf_config_for({"worker": ["a:1", "b:2"]}, "worker", 1))
    assert config == {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}
