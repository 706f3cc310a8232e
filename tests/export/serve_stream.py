"""Serves a stream of requests from one loaded export; never imports tfmeta.

Usage: python serve_stream.py EXPORT_DIR REQUESTS.pkl  -> prints one JSON line.
Each request is `{"inputs": {...numpy...}, "logits": expected or None,
"error": expected message fragment or None}`.
"""

import json
import os
import pickle
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(path, requests_path):
    with open(requests_path, "rb") as f:
        requests = pickle.load(f)
    serve = tf.saved_model.load(path).signatures["serving_default"]
    report = {"valid_ok": 0, "invalid_ok": 0, "failures": [], "rss_mib": []}
    warmup = len(requests) // 5
    for i, request in enumerate(requests):
        try:
            out = serve(**{k: tf.constant(v) for k, v in request["inputs"].items()})
            if request["error"] is not None:
                report["failures"].append(f"{i}: expected error {request['error']!r}, got an answer")
            elif np.allclose(out["logits"].numpy(), request["logits"], atol=1e-4) and np.array_equal(
                out["classes"].numpy(), np.argmax(request["logits"], axis=-1)
            ):
                report["valid_ok"] += 1
            else:
                report["failures"].append(f"{i}: wrong answer")
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as error:
            if request["error"] is not None and request["error"] in str(error):
                report["invalid_ok"] += 1
            else:
                report["failures"].append(f"{i}: unexpected {type(error).__name__}: {str(error)[:200]}")
        if i == warmup or i == len(requests) - 1:
            report["rss_mib"].append(rss_mib())
    report["imported_tfmeta"] = "tfmeta" in sys.modules
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
