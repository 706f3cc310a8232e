"""Latency of "adapt and predict" requests to a few-shot export, one request at a time on CPU.

    python -m benchmarks.serving                                   # every configuration below
    python -m benchmarks.serving --configs=proto_5w1s,proto_20w1s
    python -m benchmarks.serving --model=saved_models/omniglot_5way/1 --config=maml_5step

Configurations (fresh exports of freshly initialised learners on Conv-4, 28x28x1: the
latency does not depend on the weights' values), each request a `ways`-way 1-shot task
with 5 queries per class:

- `maml_1step`, `maml_5step`: MAML, 5-way, 1 or 5 inner steps inside the served graph;
- `proto_5w1s`, `proto_20w1s`: Prototypical Networks (one export, any number of classes),
  5- or 20-way requests.

Prints one line per configuration: `config=<name> p50_ms=<number> p99_ms=<number>`.
With `--concurrency=N` (N > 1) the line also gives the same export under load: `N`
client threads sending requests at once, each request's latency (`load_p50_ms`,
`load_p99_ms`) and the throughput in requests per second, next to the single
client's (`requests_per_s`, one request at a time).
`benchmarks.soak` checks the answers under load (and the rejections of bad requests).
"""

import concurrent.futures
import json
import pathlib
import tempfile
import time

import numpy as np
from absl import app, flags

from benchmarks.common import check_configs

CONFIGS = {  # name: (learner, inner steps, ways per request)
    "maml_1step": ("maml", 1, 5),
    "maml_5step": ("maml", 5, 5),
    "proto_5w1s": ("protonet", None, 5),
    "proto_20w1s": ("protonet", None, 20),
}

flags.DEFINE_list("configs", list(CONFIGS), f"Configurations to run, among {list(CONFIGS)}.")
flags.DEFINE_string("model", None, "A few-shot classifier export to time instead of the configurations.")
flags.DEFINE_string("config", None, "Name printed for --model (default: the export's name).")
flags.DEFINE_integer("ways", None, "Classes per request for --model (default: the model card's ways).")
flags.DEFINE_integer("requests", 300, "Timed requests per configuration (after warm-up).")
flags.DEFINE_integer("warmup", 30, "Untimed requests first.")
flags.DEFINE_integer("shots", 1, "Support examples per class.")
flags.DEFINE_integer("queries", 5, "Query examples per class.")
flags.DEFINE_integer("concurrency", 1, "Client threads for the figures under load (1: one client only).")
flags.DEFINE_enum("loader", "signature", ["signature", "session"],
                  "signature: tf.saved_model.load; session: TF1 Session loader as TF Serving's C++ server.")


def _fresh_export(root, name):
    """Exports the freshly initialised learner of configuration `name`; returns its path."""
    import keras  # noqa: PLC0415

    from tfmeta.export import export_few_shot_classifier  # noqa: PLC0415
    from tfmeta.learners import MAML, PrototypicalNetwork  # noqa: PLC0415
    from tfmeta.models import conv4  # noqa: PLC0415

    kind, steps, ways = CONFIGS[name]
    keras.utils.set_random_seed(0)
    card = {"note": f"freshly initialised Conv-4 {kind} for benchmarks.serving (untrained)"}
    if kind == "maml":
        learner = MAML(conv4(ways=ways, input_shape=(28, 28, 1)), inner_steps=steps, inner_lr=0.4)
    else:
        learner = PrototypicalNetwork(conv4(ways=None, input_shape=(28, 28, 1)))
    return export_few_shot_classifier(learner, root, f"bench_{name}", model_card=card, max_ways=100)


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


def _requests(path, count, shots, queries, ways, seed=0):
    card = json.loads((pathlib.Path(path) / "assets" / "tfmeta.json").read_text())
    ways, shape = ways or card["ways"], tuple(card["input"]["shape"])
    rng = np.random.default_rng(seed)
    return ways * queries, [{
        "support_images": rng.random((ways * shots, *shape), dtype=np.float32),
        "support_labels": np.repeat(np.arange(ways, dtype=np.int32), shots),
        "query_images": rng.random((ways * queries, *shape), dtype=np.float32),
    } for _ in range(count)]


def measure(path, loader="signature", requests=300, warmup=30, shots=1, queries=5, ways=None, concurrency=1):
    """Latency of adapt-and-predict requests of `ways` classes (default: the card's).

    Returns:
        `(p50_ms, p99_ms, requests_per_s)` of requests sent one at a time; with
        `concurrency > 1`, also `(load_p50_ms, load_p99_ms, load_requests_per_s)`
        with `concurrency` clients sending at once (six numbers in all).
    """
    answer_size, pool = _requests(path, 20, shots, queries, ways)
    serve = _make_serve(path, loader)

    def timed(i):
        start = time.perf_counter()
        classes = serve(pool[i % len(pool)])
        elapsed = time.perf_counter() - start
        if classes.shape != (answer_size,):
            raise RuntimeError(f"Unexpected answer shape {classes.shape}")
        return elapsed * 1000

    for i in range(warmup):
        timed(i)
    start = time.perf_counter()
    times = [timed(i) for i in range(requests)]
    single = (float(np.percentile(times, 50)), float(np.percentile(times, 99)),
              requests / (time.perf_counter() - start))
    if concurrency <= 1:
        return single
    with concurrent.futures.ThreadPoolExecutor(concurrency) as clients:
        list(clients.map(timed, range(warmup)))
        start = time.perf_counter()
        times = list(clients.map(timed, range(requests)))
        seconds = time.perf_counter() - start
    return single + (float(np.percentile(times, 50)), float(np.percentile(times, 99)), requests / seconds)


def _line(name, figures, concurrency) -> str:
    line = f"config={name} p50_ms={figures[0]:.2f} p99_ms={figures[1]:.2f} requests_per_s={figures[2]:.1f}"
    if len(figures) > 3:
        line += (f" concurrency={concurrency} load_p50_ms={figures[3]:.2f} load_p99_ms={figures[4]:.2f} "
                 f"load_requests_per_s={figures[5]:.1f}")
    return line


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    f = flags.FLAGS
    if f.model is not None:
        name = f.config or pathlib.Path(f.model).parent.name
        figures = measure(f.model, f.loader, f.requests, f.warmup, f.shots, f.queries, f.ways, f.concurrency)
        print(_line(name, figures, f.concurrency), flush=True)
        return
    check_configs(f.configs, CONFIGS)
    with tempfile.TemporaryDirectory(prefix="tfmeta-bench-") as tmp:
        for name in f.configs:
            path = _fresh_export(tmp, name)
            figures = measure(path, f.loader, f.requests, f.warmup, f.shots, f.queries, CONFIGS[name][2],
                              f.concurrency)
            print(_line(name, figures, f.concurrency), flush=True)


if __name__ == "__main__":
    app.run(main)
