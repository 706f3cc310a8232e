"""Latency of "adapt and predict" requests to a few-shot export, one request at a time on CPU.

    python -m benchmarks.serving                       # fresh Conv-4 MAML exports (1 and 5 inner steps)
    python -m benchmarks.serving --model=saved_models/omniglot_5way/1 --config=maml_5step

Each request is a 5-way 1-shot task with 5 queries per class (28x28x1 unless the
export says otherwise): the inner steps run inside the served graph. Prints one line
per configuration: `config=<name> p50_ms=<number> p99_ms=<number>`.
Without --model, the exports are made from a freshly initialised Conv-4 MAML (the
latency does not depend on the weights' values) in a temporary directory.
"""

import json
import pathlib
import tempfile
import time

import numpy as np
from absl import app, flags

flags.DEFINE_string("model", None, "A few-shot classifier export; default: fresh Conv-4 MAML exports.")
flags.DEFINE_string("config", None, "Name printed for --model (default: maml_<inner_steps>step).")
flags.DEFINE_integer("requests", 300, "Timed requests per configuration (after warm-up).")
flags.DEFINE_integer("warmup", 30, "Untimed requests first.")
flags.DEFINE_integer("shots", 1, "Support examples per class.")
flags.DEFINE_integer("queries", 5, "Query examples per class.")
flags.DEFINE_enum("loader", "signature", ["signature", "session"],
                  "signature: tf.saved_model.load; session: TF1 Session loader as TF Serving's C++ server.")


def _fresh_exports(root):
    import keras  # noqa: PLC0415

    from tfmeta.learners import MAML  # noqa: PLC0415
    from tfmeta.export import export_few_shot_classifier  # noqa: PLC0415
    from tfmeta.models import conv4  # noqa: PLC0415

    exports = {}
    for steps in (1, 5):
        keras.utils.set_random_seed(0)
        algorithm = MAML(conv4(ways=5, input_shape=(28, 28, 1)), inner_steps=steps, inner_lr=0.4)
        card = {"note": "freshly initialised Conv-4 MAML for benchmarks.serving (untrained)"}
        exports[f"maml_{steps}step"] = export_few_shot_classifier(algorithm, root, f"bench_{steps}step", model_card=card)
    return exports


def _make_serve(path, loader):
    import tensorflow as tf  # noqa: PLC0415

    if loader == "signature":
        loaded = tf.saved_model.load(str(path))
        signature = loaded.signatures["serving_default"]

        def serve(request):
            return signature(**{k: tf.constant(v) for k, v in request.items()})["classes"].numpy()

        serve.keep_alive = loaded
        return serve
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph)
    with graph.as_default():
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(path))
    sig = meta_graph.signature_def["serving_default"]
    fetch = sig.outputs["classes"].name
    return lambda request: session.run(fetch, {sig.inputs[k].name: v for k, v in request.items()})


def measure(path, loader="signature", requests=300, warmup=30, shots=1, queries=5):
    """`(p50_ms, p99_ms)` of adapt-and-predict requests, one at a time."""
    card = json.loads((pathlib.Path(path) / "assets" / "tfmeta.json").read_text())
    ways, shape = card["ways"], tuple(card["input"]["shape"])
    serve = _make_serve(path, loader)
    rng = np.random.default_rng(0)
    times = []
    for i in range(warmup + requests):
        request = {
            "support_images": rng.random((ways * shots, *shape), dtype=np.float32),
            "support_labels": np.repeat(np.arange(ways, dtype=np.int32), shots),
            "query_images": rng.random((ways * queries, *shape), dtype=np.float32),
        }
        start = time.perf_counter()
        classes = serve(request)
        elapsed = time.perf_counter() - start
        if classes.shape != (ways * queries,):
            raise RuntimeError(f"Unexpected answer shape {classes.shape}")
        if i >= warmup:
            times.append(elapsed * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    f = flags.FLAGS
    with tempfile.TemporaryDirectory(prefix="tfmeta-bench-") as tmp:
        if f.model is None:
            print("benchmarks.serving: exporting freshly initialised Conv-4 MAML models (5-way, 28x28x1)", flush=True)
            exports = _fresh_exports(tmp)
        else:
            card = json.loads((pathlib.Path(f.model) / "assets" / "tfmeta.json").read_text())
            exports = {f.config or f"maml_{card.get('inner_steps')}step": f.model}
        for name, path in exports.items():
            p50, p99 = measure(path, f.loader, f.requests, f.warmup, f.shots, f.queries)
            print(f"config={name} p50_ms={p50:.2f} p99_ms={p99:.2f}", flush=True)


if __name__ == "__main__":
    app.run(main)
