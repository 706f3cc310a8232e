"""Short real runs learn to adapt: after meta-training, k inner steps beat 0, and more steps do not hurt.

A learner without adaptation (or a loop that trains only the initialisation's
fit to the average task) fails these: on unseen sinusoids the 0-step error is
the variance of the task family, and only adaptation brings it down; on
unseen Omniglot classes 0 steps is chance (the labels are a random
permutation per task).
"""

import pytest

from tfmeta.training import MetaTrainConfig, run


def _means(results, metric):
    return {steps: r[metric][0] for steps, r in results.items()}, {steps: r[metric][1] for steps, r in results.items()}


def test_sinusoid_run_adapts_and_more_steps_do_not_hurt(tmp_path):
    # Finn et al.'s setup for 3,000 meta-updates (the default trainer runs 10,000).
    config = MetaTrainConfig(num_iterations=3000, eval_every=3000, eval_episodes=300, workdir=str(tmp_path),
                             export_dir="")
    mse, ci = _means(run(config, verbose=False).test_results, "mse")
    assert mse[1] < 0.5 * mse[0], mse  # measured: 0 steps 2.99, 1 step 0.93, 5 steps 0.75, 10 steps 0.68
    for fewer, more in ((1, 5), (5, 10)):
        assert mse[more] <= mse[fewer] + ci[fewer], (mse, ci)


@pytest.mark.data
def test_omniglot_run_adapts_and_more_steps_do_not_hurt(omniglot_data_dir, tmp_path):
    # 5-way 1-shot on the sample's unseen test alphabets, 150 second-order meta-updates.
    config = MetaTrainConfig(dataset="omniglot", data_dir=str(omniglot_data_dir), ways=5, shots=1, queries=2,
                             meta_batch_size=4, inner_lr=0.4, meta_lr=3e-3, eval_inner_steps=3, num_iterations=150,
                             eval_every=150, eval_episodes=200, workdir=str(tmp_path), export_dir="")
    accuracy, ci = _means(run(config, verbose=False).test_results, "accuracy")
    assert abs(accuracy[0] - 0.2) < 0.05, accuracy  # chance: labels are permuted per task
    assert accuracy[1] > 0.4, accuracy  # measured: 0 steps 0.19, 1 step 0.56, 3 steps 0.61
    assert accuracy[3] >= accuracy[1] - ci[1], (accuracy, ci)
