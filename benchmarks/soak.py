"""Soak test of one loaded export: many concurrent requests, one in five invalid.

    python -m benchmarks.soak                                 # a fresh export of every kind, both loaders
    python -m benchmarks.soak --model=saved_models/omniglot_5way/1 --loader=session
    python -m benchmarks.soak --requests=2000 --threads=4

Each export is loaded once (`--loader=signature`: `tf.saved_model.load`;
`session`: the TF1 Session loader, as TF Serving's C++ server runs it) and served
`--requests` requests from `--threads` client threads at once. Every
`--invalid_every`-th request is invalid, cycling through the export kind's
faults (wrong shapes, labels out of range, NaN pixels, an empty support set, too
many classes, ...). The answers to the valid requests are first computed one at a
time (single-threaded); under load every valid request must get the same answer
(to float round-off) and every invalid one an `InvalidArgumentError` carrying its
fault's message. Resident memory is read after the first 1,000 requests and at the
end.

Prints one line per export and loader: requests, valid answered correctly, invalid
rejected correctly, failures (wrong answers, unexpected errors), errors by fault,
resident memory (MiB) after 1,000 requests and at the end, requests/s.

Request makers know the export kinds by their model card's `kind`
(`tfmeta.export.model_card`): `few_shot_classifier`, `few_shot_regressor`,
`adapted_classifier`, `recurrent_classifier` (MANN, LSTM on label-offset sequences),
`rl2_policy_step` (RL²);
`REQUESTS[kind]` is where a new kind adds its own.
"""

import concurrent.futures
import json
import pathlib
import tempfile
import threading
import time

import numpy as np
from absl import app, flags

from benchmarks.common import rss_mb

flags.DEFINE_string("model", None, "An export to soak instead of fresh exports of every kind.")
flags.DEFINE_list("loaders", ["signature", "session"], "How to load: signature (tf.saved_model.load), session (TF1).")
flags.DEFINE_integer("requests", 10000, "Requests per export and loader.")
flags.DEFINE_integer("threads", 8, "Concurrent client threads.")
flags.DEFINE_integer("invalid_every", 5, "Every n-th request is invalid.")
flags.DEFINE_integer("templates", 50, "Distinct valid requests (answers computed single-threaded first).")


# ------------------------------------------------------------------ requests


def _images(rng, n, shape):
    return rng.random((n, *shape), dtype=np.float32)


def _classifier_requests(card, rng, count):
    """Valid few-shot classification requests and the invalid ones built from them."""
    shape, ways = tuple(card["input"]["shape"]), int(card["ways"])
    request_ways = min(ways, 5)
    valid = []
    for _ in range(count):
        labels = rng.permutation(np.repeat(np.arange(request_ways, dtype=np.int32), 1 + rng.integers(2)))
        valid.append({"support_images": _images(rng, len(labels), shape), "support_labels": labels.astype(np.int32),
                      "query_images": _images(rng, 3 * request_ways, shape)})
    ok = valid[0]
    nan = ok["support_images"].copy()
    nan[0, 0, 0, 0] = np.nan
    too_many = max(ways, request_ways) + 1  # one class more than the export serves
    invalid = [
        ("wrong shape", {**ok, "query_images": _images(rng, 2, (shape[0] + 1,) + shape[1:])}, "must have shape"),
        ("label out of range", {**ok, "support_labels": np.where(ok["support_labels"] == 0, -1,
                                                                 ok["support_labels"]).astype(np.int32)},
         "must lie in"),
        ("NaN pixels", {**ok, "support_images": nan}, "must be finite"),
        ("empty support", {**ok, "support_images": np.zeros((0, *shape), np.float32),
                           "support_labels": np.zeros((0,), np.int32)}, "at least one example"),
        ("too many classes", {"support_images": _images(rng, too_many, shape),
                              "support_labels": np.arange(too_many, dtype=np.int32),
                              "query_images": _images(rng, 2, shape)}, "must lie in"),
    ]
    return valid, invalid


def _regressor_requests(card, rng, count):
    (dim,) = tuple(card["input"]["shape"])
    metadata_dim = card.get("metadata_dim")
    valid = []
    for _ in range(count):
        shots = 5 + int(rng.integers(5))
        request = {"support_x": rng.uniform(-5, 5, (shots, dim)).astype(np.float32),
                   "support_y": rng.uniform(-5, 5, (shots, 1)).astype(np.float32),
                   "query_x": rng.uniform(-5, 5, (10, dim)).astype(np.float32)}
        if metadata_dim:
            request["task_metadata"] = rng.normal(size=(metadata_dim,)).astype(np.float32)
        valid.append(request)
    ok = valid[0]
    nan = ok["support_y"].copy()
    nan[1, 0] = np.nan
    invalid = [
        ("wrong shape", {**ok, "query_x": np.zeros((3, dim + 1), np.float32)}, "must have shape"),
        ("NaN targets", {**ok, "support_y": nan}, "must be finite"),
        ("label count", {**ok, "support_y": ok["support_y"][:2]}, "one entry per example"),
        ("empty query", {**ok, "query_x": np.zeros((0, dim), np.float32)}, "at least one example"),
    ]
    if not metadata_dim:  # with a task description an empty support set is a zero-shot request
        invalid.append(("empty support", {**ok, "support_x": np.zeros((0, dim), np.float32),
                                          "support_y": np.zeros((0, 1), np.float32)}, "at least one example"))
    return valid, invalid


def _adapted_requests(card, rng, count):
    shape = tuple(card["input"]["shape"])
    valid = [{"images": _images(rng, 2 + int(rng.integers(6)), shape)} for _ in range(count)]
    nan = valid[0]["images"].copy()
    nan[0, 0, 0, 0] = np.nan
    invalid = [
        ("wrong shape", {"images": _images(rng, 2, shape[:-1] + (shape[-1] + 2,))}, "must have shape"),
        ("NaN pixels", {"images": nan}, "must be finite"),
        ("empty batch", {"images": np.zeros((0, *shape), np.float32)}, "at least one example"),
    ]
    return valid, invalid


def _recurrent_requests(card, rng, count):
    """Chunks of label-offset streams (MANN, LSTM) with a client-kept state of the card's shapes."""
    shape, ways = tuple(card["input"]["shape"]), int(card["ways"])
    state_shapes = {name: tuple(dims[1:]) for name, dims in card["recurrent"]["state"].items()}

    def request(batch, steps, labels=None):
        out = {"images": rng.random((batch, steps, *shape), dtype=np.float32),
               "previous_labels": rng.integers(-1, ways, (batch, steps)).astype(np.int32) if labels is None else labels}
        out.update({name: (0.1 * rng.standard_normal((batch, *dims))).astype(np.float32)
                    for name, dims in state_shapes.items()})
        return out

    valid = [request(1 + int(rng.integers(2)), 1 + int(rng.integers(3))) for _ in range(count)]
    ok = valid[0]
    nan = ok["images"].copy()
    nan[0, 0, 0, 0, 0] = np.nan
    other_batch = request(ok["images"].shape[0] + 1, ok["images"].shape[1])
    first_state = sorted(state_shapes)[0]
    invalid = [
        ("wrong shape", {**ok, "images": rng.random((1, 1, shape[0] + 1, *shape[1:]), dtype=np.float32),
                         "previous_labels": np.zeros((1, 1), np.int32)}, "must have shape"),
        ("label out of range", {**ok, "previous_labels": np.full_like(ok["previous_labels"], ways)}, "must lie in"),
        ("NaN pixels", {**ok, "images": nan}, "must be finite"),
        ("state of another batch", {**ok, first_state: other_batch[first_state]}, "must have shape"),
    ]
    return valid, invalid


def _policy_step_requests(card, rng, count):
    """RL² policy steps: a batch of environments' step and the client-kept GRU state."""
    actions, units, observation = int(card["num_actions"]), int(card["state_size"]), card["observation"]

    def request(batch):
        if observation["kind"] == "state index":
            obs = rng.integers(0, observation["num_states"], batch).astype(np.int32)
        else:
            obs = rng.normal(size=(batch, observation["size"])).astype(np.float32)
        return {"observation": obs, "previous_action": rng.integers(-1, actions, batch).astype(np.int32),
                "reward": rng.random(batch, dtype=np.float32), "done": rng.integers(0, 2, batch).astype(np.float32),
                "state": rng.uniform(-1, 1, (batch, units)).astype(np.float32)}

    valid = [request(1 + int(rng.integers(4))) for _ in range(count)]
    ok = valid[0]
    nan = ok["state"].copy()
    nan[0, 0] = np.nan
    invalid = [
        ("wrong shape", {**ok, "state": np.zeros((len(ok["reward"]), units + 1), np.float32)}, "must have shape"),
        ("action out of range", {**ok, "previous_action": np.full_like(ok["previous_action"], actions)}, "must lie in"),
        ("NaN state", {**ok, "state": nan}, "must be finite"),
        ("done not 0 or 1", {**ok, "done": np.full_like(ok["done"], 0.5)}, "must be 0 or 1"),
    ]
    return valid, invalid


REQUESTS = {  # model card kind -> (card, rng, count) -> (valid requests, [(fault, request, message)])
    "few_shot_classifier": _classifier_requests,
    "few_shot_regressor": _regressor_requests,
    "adapted_classifier": _adapted_requests,
    "recurrent_classifier": _recurrent_requests,
    "rl2_policy_step": _policy_step_requests,
}


# ------------------------------------------------------------------ serving


def load(path, loader: str):
    """`serve(request) -> {output: numpy}` for the export at `path`; thread-safe.

    Args:
        path: an export version directory.
        loader: `"signature"` (`tf.saved_model.load`) or `"session"` (the TF1
            Session loader, as TF Serving's C++ server).

    Returns:
        The serving function; it raises `tf.errors.InvalidArgumentError` on a
        request the export rejects.

    Raises:
        ValueError: on an unknown loader.
    """
    import tensorflow as tf  # noqa: PLC0415

    if loader == "signature":
        loaded = tf.saved_model.load(str(path))
        signature = loaded.signatures["serving_default"]

        def serve(request):
            return {k: v.numpy() for k, v in signature(**{k: tf.constant(v) for k, v in request.items()}).items()}

        serve.keep_alive = loaded
        return serve
    if loader == "session":
        graph = tf.Graph()
        session = tf.compat.v1.Session(graph=graph)
        with graph.as_default():
            meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(path))
        signature = meta_graph.signature_def["serving_default"]
        names = sorted(signature.outputs)
        fetches = [graph.get_tensor_by_name(signature.outputs[k].name)._as_tf_output() for k in names]
        inputs = {k: graph.get_tensor_by_name(v.name)._as_tf_output() for k, v in signature.inputs.items()}

        def serve(request):
            # Without the Python client's feed-shape checks, as TF Serving's C++ server feeds tensors.
            values = session._call_tf_sessionrun(None, {inputs[k]: v for k, v in request.items()}, fetches, [], None)
            return dict(zip(names, values))

        return serve
    raise ValueError(f"`loader` must be 'signature' or 'session'. Received: loader={loader!r}")


def soak(path, loader: str = "signature", requests: int = 10000, threads: int = 8, invalid_every: int = 5,
         templates: int = 50, seed: int = 0) -> dict:
    """Serves `requests` requests from `threads` threads to one loaded export; checks every answer.

    Args:
        path: an export version directory (its model card names its kind).
        loader: see `load`.
        requests: how many requests in all.
        threads: concurrent client threads.
        invalid_every: every n-th request is invalid (cycling through the kind's faults).
        templates: distinct valid requests; their answers are computed one at a
            time before the concurrent run and every concurrent answer must equal them.
        seed: seeds the requests.

    Returns:
        A dict: `requests`, `valid_ok`, `invalid_ok`, `failures` (a list of
        descriptions, empty when all is well), `errors_by_fault`,
        `rss_mib_at_1000`, `rss_mib_end`, `seconds`, `requests_per_second`.

    Raises:
        ValueError: if the export's kind has no request maker.
    """
    import tensorflow as tf  # noqa: PLC0415

    card = json.loads((pathlib.Path(path) / "assets" / "tfmeta.json").read_text())
    if card["kind"] not in REQUESTS:
        raise ValueError(f"No soak requests for exports of kind {card['kind']!r}; known: {sorted(REQUESTS)}. "
                         f"Received: {path}")
    valid, invalid = REQUESTS[card["kind"]](card, np.random.default_rng(seed), templates)
    serve = load(path, loader)
    expected = [serve(request) for request in valid]  # single-threaded answers
    lock = threading.Lock()
    report = {"requests": requests, "valid_ok": 0, "invalid_ok": 0, "failures": [],
              "errors_by_fault": {fault: 0 for fault, _, _ in invalid}, "rss_mib_at_1000": None}
    done = [0]

    def one(i):
        if (i + 1) % invalid_every == 0:
            fault, request, message = invalid[(i // invalid_every) % len(invalid)]
            try:
                serve(request)
                outcome = f"request {i} ({fault}): answered instead of rejected"
            except tf.errors.InvalidArgumentError as error:
                outcome = None if message in str(error) else f"request {i} ({fault}): wrong message {str(error)[:200]}"
            except Exception as error:  # noqa: BLE001 - any other failure is a finding
                outcome = f"request {i} ({fault}): {type(error).__name__} {str(error)[:200]}"
            key = "invalid_ok"
        else:
            fault, k = None, i % len(valid)
            try:
                out = serve(valid[k])
                same = all(np.allclose(out[name], expected[k][name], rtol=1e-5, atol=1e-6) for name in expected[k])
                outcome = None if same else f"request {i}: answer differs from the single-threaded one"
            except Exception as error:  # noqa: BLE001
                outcome = f"request {i}: {type(error).__name__} {str(error)[:200]}"
            key = "valid_ok"
        with lock:
            if outcome is None:
                report[key] += 1
                if fault is not None:
                    report["errors_by_fault"][fault] += 1
            else:
                report["failures"].append(outcome)
            done[0] += 1
            if done[0] == min(1000, requests):
                report["rss_mib_at_1000"] = rss_mb()

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(requests)))
    report["seconds"] = time.perf_counter() - start
    report["requests_per_second"] = requests / report["seconds"]
    report["rss_mib_end"] = rss_mb()
    return report


# ------------------------------------------------------------------ fresh exports


def fresh_exports(root) -> dict:
    """A small export of every kind (freshly initialised learners), by name: path."""
    import keras  # noqa: PLC0415

    from tfmeta import learners  # noqa: PLC0415
    from tfmeta.export import export_adapted_classifier, export_few_shot_classifier, export_few_shot_regressor  # noqa: PLC0415,E501
    from tfmeta.export import export_recurrent_classifier  # noqa: PLC0415
    from tfmeta.export.rl2 import export_rl2_policy  # noqa: PLC0415
    from tfmeta.learners.recurrent import build_rl2, make_env, memory_network  # noqa: PLC0415
    from tfmeta.models import conv4, mlp  # noqa: PLC0415

    keras.utils.set_random_seed(0)
    shape = (28, 28, 1)
    maml = learners.MAML(conv4(ways=5, input_shape=shape), inner_steps=5, inner_lr=0.4)
    proto = learners.PrototypicalNetwork(conv4(ways=None, input_shape=shape))
    rng = np.random.default_rng(1)
    state = maml.adapt(rng.random((5, *shape), dtype=np.float32), np.arange(5, dtype=np.int32))
    return {
        "maml_5step": export_few_shot_classifier(maml, root, "maml_5step"),
        "protonet": export_few_shot_classifier(proto, root, "protonet", max_ways=20),
        "adapted_maml": export_adapted_classifier(maml, state, [f"c{i}" for i in range(5)], root, "adapted_maml"),
        "maml_sinusoid": export_few_shot_regressor(
            learners.MAML(mlp(), task="regression", inner_lr=0.01), root, "maml_sinusoid"),
        "cnp": export_few_shot_regressor(learners.build("cnp", None, task="regression"), root, "cnp"),
        "mann": export_recurrent_classifier(learners.build("mann", memory_network(5, (20, 20, 1), seed=0)), root,
                                            "mann"),
        "rl2_bandit": export_rl2_policy(build_rl2(env=make_env("bandit", num_arms=10)[0]), root, "rl2_bandit"),
    }


def _line(name, loader, report) -> str:
    faults = ",".join(f"{k.replace(' ', '_')}:{v}" for k, v in report["errors_by_fault"].items())
    return (f"export={name} loader={loader} requests={report['requests']} valid_ok={report['valid_ok']} "
            f"invalid_ok={report['invalid_ok']} failures={len(report['failures'])} rejected_by_fault={faults} "
            f"rss_mib_1000={report['rss_mib_at_1000']:.0f} rss_mib_end={report['rss_mib_end']:.0f} "
            f"requests_per_s={report['requests_per_second']:.0f}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    f = flags.FLAGS
    with tempfile.TemporaryDirectory(prefix="tfmeta-soak-") as tmp:
        exports = {pathlib.Path(f.model).parent.name: f.model} if f.model else fresh_exports(tmp)
        for name, path in exports.items():
            for loader in f.loaders:
                report = soak(path, loader, f.requests, f.threads, f.invalid_every, f.templates)
                print(_line(name, loader, report), flush=True)
                for failure in report["failures"][:5]:
                    print(f"  failure: {failure}", flush=True)


if __name__ == "__main__":
    app.run(main)
