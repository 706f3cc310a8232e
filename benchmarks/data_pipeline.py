"""Throughput of the episodic data pipeline alone (no model), on real Omniglot.

    python -m benchmarks.data_pipeline --data_dir=../shared/data/omniglot

Source: the Omniglot meta-train alphabets with rotations (183 x 4 = 732 classes,
28x28x1). Configurations:
- `5w1s`: 5-way 1-shot, 15 queries per class, meta-batches of 32 tasks;
- `20w5s`: 20-way 5-shot, 15 queries per class, meta-batches of 16 tasks (MAML's
  20-way meta-batch size).

After a warm-up, counts episodes (tasks) pulled from the iterator during several timed
windows and prints one line per configuration with the median rate:
`config=<name> episodes_per_sec=<number> peak_rss_mb=<number>`. `peak_rss_mb` is the
process's peak resident memory so far (`resource.getrusage`), data source included.
"""

import os
import pathlib
import resource
import statistics
import time

from absl import app, flags

from benchmarks.common import check_configs
from tfmeta.data import ClassDataset, episode_dataset
from tfmeta.data.splits import omniglot_sample_split

CONFIGS = {  # name: (ways, shots, queries, meta_batch_size)
    "5w1s": (5, 1, 15, 32),
    "20w5s": (20, 5, 15, 16),
}

_DEFAULT_DATA_DIR = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"
flags.DEFINE_string(
    "data_dir",
    os.environ.get("TFMETA_DATA_DIR", str(_DEFAULT_DATA_DIR)),
    "Folder holding the Omniglot zips (or the unpacked tree).",
)
flags.DEFINE_list("configs", list(CONFIGS), f"Configurations to run, among {list(CONFIGS)}.")
flags.DEFINE_float("warmup_seconds", 2.0, "Untimed pulling first.")
flags.DEFINE_float("window_seconds", 1.0, "Length of each timed window.")
flags.DEFINE_integer("windows", 5, "Timed windows; the median rate is printed.")


def measure(dataset, tasks_per_element: int, warmup: float, window: float, windows: int) -> float:
    """Median episodes per second over `windows` windows of `window` seconds, after `warmup`."""
    iterator = iter(dataset)
    deadline = time.perf_counter() + warmup
    while time.perf_counter() < deadline:
        next(iterator)
    rates = []
    for _ in range(windows):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < window:
            next(iterator)
            count += tasks_per_element
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def main(argv):
    del argv
    flag = flags.FLAGS
    check_configs(flag.configs, CONFIGS)
    source = omniglot_sample_split(ClassDataset.from_omniglot(flag.data_dir)).train  # the trainer's training classes
    for name in flag.configs:
        ways, shots, queries, batch = CONFIGS[name]
        dataset = episode_dataset(source, ways, shots, queries, meta_batch_size=batch, seed=0)
        rate = measure(dataset, batch, flag.warmup_seconds, flag.window_seconds, flag.windows)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        print(f"config={name} episodes_per_sec={rate:.0f} peak_rss_mb={peak_mb:.0f}", flush=True)


if __name__ == "__main__":
    app.run(main)
