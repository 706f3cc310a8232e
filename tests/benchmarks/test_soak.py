"""benchmarks.soak: concurrent requests to one loaded export, every answer and every rejection checked.

Small exports of every kind of every family (freshly initialised: answers do not depend
on training), both loaders: few-shot classifiers (MAML, ProtoNet), an adapted classifier,
regressors (MAML, CNP), a recurrent classifier (MANN), an RL² policy step. A broken export or server fails here: an export without the NaN check
answers the NaN requests (counted as a failure), a loader that is not thread-safe
(or state shared between requests) gives answers that differ from the single-threaded
ones, a check that names the wrong input fails the message match.
"""

import numpy as np
import pytest
import tensorflow as tf

from benchmarks import soak
from tfmeta import learners
from tfmeta.export import export_adapted_classifier, export_few_shot_classifier, export_few_shot_regressor
from tfmeta.export import export_recurrent_classifier
from tfmeta.export.rl2 import export_rl2_policy
from tfmeta.learners.recurrent import build_rl2, make_env, memory_network
from tfmeta.models import conv4, mlp


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    import keras

    root = tmp_path_factory.mktemp("soak")
    keras.utils.set_random_seed(0)
    shape = (16, 16, 1)
    maml = learners.MAML(conv4(ways=3, input_shape=shape, filters=4), inner_steps=2, inner_lr=0.4)
    proto = learners.PrototypicalNetwork(conv4(ways=None, input_shape=shape, filters=4))
    rng = np.random.default_rng(1)
    state = maml.adapt(rng.random((3, *shape), dtype=np.float32), np.arange(3, dtype=np.int32))
    return {
        "maml": export_few_shot_classifier(maml, root, "maml"),
        "protonet": export_few_shot_classifier(proto, root, "protonet", max_ways=8),
        "adapted": export_adapted_classifier(maml, state, ["a", "b", "c"], root, "adapted"),
        "regressor": export_few_shot_regressor(
            learners.MAML(mlp(hidden=(8,)), task="regression", inner_lr=0.01), root, "regressor"),
        "cnp": export_few_shot_regressor(
            learners.build("cnp", None, task="regression", encoder_sizes=(8,), decoder_sizes=(8,)), root, "cnp"),
        "mann": export_recurrent_classifier(learners.build("mann", memory_network(
            3, (4, 4, 1), seed=1, controller_units=8, memory_slots=6, memory_width=4, read_heads=2)), root, "mann"),
        "rl2_mdp": export_rl2_policy(build_rl2(env=make_env("mdp")[0], units=8), root, "rl2_mdp"),
    }


@pytest.mark.parametrize("loader", ["signature", "session"])
@pytest.mark.parametrize("name", ["maml", "protonet", "adapted", "regressor", "cnp", "mann", "rl2_mdp"])
def test_every_valid_request_answered_and_every_invalid_rejected_under_load(exports, name, loader):
    report = soak.soak(exports[name], loader, requests=100, threads=8, invalid_every=5, templates=10)
    assert report["failures"] == [], report["failures"][:5]
    assert (report["valid_ok"], report["invalid_ok"]) == (80, 20)
    assert all(count >= 20 // len(report["errors_by_fault"]) for count in report["errors_by_fault"].values())


def test_a_request_the_export_should_reject_but_answers_is_a_failure(exports, monkeypatch):
    """The harness itself: an 'invalid' request that is in fact valid must be reported, not counted as rejected."""
    make = soak.REQUESTS["adapted_classifier"]

    def with_a_valid_request_called_invalid(card, rng, count):
        valid, invalid = make(card, rng, count)
        return valid, [("not really invalid", valid[0], "must be finite")]

    monkeypatch.setitem(soak.REQUESTS, "adapted_classifier", with_a_valid_request_called_invalid)
    report = soak.soak(exports["adapted"], "signature", requests=20, threads=4, invalid_every=5, templates=3)
    assert report["invalid_ok"] == 0 and len(report["failures"]) == 4
    assert "answered instead of rejected" in report["failures"][0]


def test_unknown_export_kind_is_named(tmp_path):
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "tfmeta.json").write_text('{"kind": "mystery"}')
    with pytest.raises(ValueError, match="No soak requests for exports of kind 'mystery'"):
        soak.soak(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("loader", ["signature", "session"])
@pytest.mark.parametrize("name", ["maml", "protonet", "adapted", "regressor", "cnp", "mann"])
def test_ten_thousand_requests_keep_memory_flat(exports, name, loader):
    """The issue's soak: 10,000 requests, 8 threads, one in five invalid; memory after them within 10% of after 1,000."""
    report = soak.soak(exports[name], loader, requests=10000, threads=8, invalid_every=5, templates=50)
    assert report["failures"] == [], report["failures"][:5]
    assert (report["valid_ok"], report["invalid_ok"]) == (8000, 2000)
    assert report["rss_mib_end"] <= 1.10 * report["rss_mib_at_1000"], report
