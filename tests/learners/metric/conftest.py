"""What the metric learners' export tests share: one any-ways request checked two ways."""

import numpy as np
import pytest
import tensorflow as tf


def _session_run(path, feed_values, signature="serving_default"):
    """The export run as TF Serving's C++ server runs it: the TF1 Session loader."""
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(path))
        definition = meta_graph.signature_def[signature]
        feed = {definition.inputs[k].name: v for k, v in feed_values.items()}
        return session.run({k: definition.outputs[k].name for k in definition.outputs}, feed)


@pytest.fixture(scope="session")
def serve_any_ways():
    """`serve(learner, path, ways, max_shots) -> (outputs, expected_logits)`: a request of `ways`
    classes with unequal shots (1 to `max_shots`) and 7 queries of 16x16x1 images, answered by the
    loaded export (`tf.saved_model.load`) and checked against the library's logits both there and
    through the Session loader."""

    def serve(learner, path, ways, max_shots=4, atol=1e-4):
        rng = np.random.default_rng(ways)
        labels = rng.permutation(np.repeat(np.arange(ways), rng.integers(1, max_shots + 1, size=ways)))
        request = {"support_images": rng.random((len(labels), 16, 16, 1), np.float32),
                   "support_labels": labels.astype(np.int32),
                   "query_images": rng.random((7, 16, 16, 1), np.float32)}
        expected = learner.predict(learner.adapt(request["support_images"], request["support_labels"]),
                                   request["query_images"]).numpy()
        got = tf.saved_model.load(str(path)).signatures["serving_default"](**request)
        assert got["logits"].shape == (7, ways)
        np.testing.assert_allclose(got["logits"].numpy(), expected, rtol=1e-4, atol=atol)
        np.testing.assert_allclose(_session_run(path, request)["logits"], expected, rtol=1e-4, atol=atol)
        return got, expected

    return serve
