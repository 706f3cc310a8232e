"""Throughput of the episodic data pipeline alone (no model), on real Omniglot and miniImageNet-shaped data.

    python -m benchmarks.data_pipeline --data_dir=../shared/data/omniglot
    python -m benchmarks.data_pipeline --configs=mini_5w1s,mini_5w1s_memory

Configurations:
- `5w1s`: Omniglot meta-train alphabets with rotations (161 x 4 = 644 classes,
  28x28x1, float32 in memory), 5-way 1-shot, 15 queries per class, meta-batches of
  32 tasks;
- `20w5s`: the same classes, 20-way 5-shot, 15 queries per class, meta-batches of 16
  tasks (MAML's 20-way meta-batch size);
- `mini_5w1s`: miniImageNet-shaped data, generated (`--mini_classes` x
  `--mini_images_per_class` random 84x84x3 uint8 images, 64 x 600 = 813 MB by
  default) and written once as a `.npy` in `--mini_dir`, streamed from its memory map
  as `tfmeta.data.standard` streams its caches: 5-way 1-shot, 15 queries per class,
  meta-batches of 4 tasks (MAML's miniImageNet meta-batch size);
- `mini_5w1s_memory`: the same array copied into memory first.

After a warm-up, counts episodes (tasks) pulled from the iterator during several timed
windows and prints one line per configuration with the median rate:
`config=<name> episodes_per_sec=<number> peak_rss_mb=<number>`. `peak_rss_mb` is the
process's peak resident memory so far (`resource.getrusage`), data source included
(configurations run in the order given; for `mini_5w1s` it counts the pages of the
memory-mapped file read so far, which the kernel can drop, not memory of the process's own).
"""

import os
import pathlib
import resource
import shutil
import statistics
import tempfile
import time

import numpy as np
from absl import app, flags

from benchmarks.common import check_configs
from tfmeta.data import ClassDataset, episode_dataset
from tfmeta.data.sources import Preprocessing
from tfmeta.data.splits import omniglot_sample_split

CONFIGS = {  # name: (source, ways, shots, queries, meta_batch_size)
    "5w1s": ("omniglot", 5, 1, 15, 32),
    "20w5s": ("omniglot", 20, 5, 15, 16),
    "mini_5w1s": ("mini_mapped", 5, 1, 15, 4),
    "mini_5w1s_memory": ("mini_memory", 5, 1, 15, 4),
}

_DEFAULT_DATA_DIR = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"
flags.DEFINE_string(
    "data_dir",
    os.environ.get("TFMETA_DATA_DIR", str(_DEFAULT_DATA_DIR)),
    "Folder holding the Omniglot zips (or the unpacked tree).",
)
flags.DEFINE_list("configs", list(CONFIGS), f"Configurations to run, among {list(CONFIGS)}.")
flags.DEFINE_string("mini_dir", None, "Folder for the generated miniImageNet-shaped array (default: a temporary "
                    "folder, removed at the end; a given folder keeps it for the next run).")
flags.DEFINE_integer("mini_classes", 64, "Classes of the generated miniImageNet-shaped data.")
flags.DEFINE_integer("mini_images_per_class", 600, "Images per class of the generated miniImageNet-shaped data.")
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


def mini_imagenet_shaped(folder: pathlib.Path, classes: int, per_class: int) -> ClassDataset:
    """A memory-mapped `ClassDataset` of random 84x84x3 uint8 images, generated once into `folder`."""
    path = folder / f"mini_{classes}x{per_class}.npy"
    if not path.exists():
        partial = folder / f".{path.name}.tmp-{os.getpid()}"
        pixels = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(classes * per_class, 84, 84, 3))
        rng = np.random.default_rng(0)
        for start in range(0, len(pixels), 2048):  # bounded memory
            pixels[start : start + 2048] = rng.integers(0, 256, pixels[start : start + 2048].shape, dtype=np.uint8)
        pixels.flush()
        del pixels
        os.replace(partial, path)
    offsets = np.arange(0, classes * per_class + 1, per_class)
    return ClassDataset(np.load(path, mmap_mode="r"), offsets, [f"n{c:08d}" for c in range(classes)],
                        preprocessing=Preprocessing((84, 84), 3, False))


def main(argv):
    del argv
    flag = flags.FLAGS
    check_configs(flag.configs, CONFIGS)
    temporary = None if flag.mini_dir else tempfile.mkdtemp(prefix="tfmeta_mini_")
    sources = {}

    def source(kind: str) -> ClassDataset:
        if kind not in sources:
            if kind == "omniglot":  # the trainer's training classes
                sources[kind] = omniglot_sample_split(ClassDataset.from_omniglot(flag.data_dir)).train
            else:
                folder = pathlib.Path(flag.mini_dir or temporary)
                folder.mkdir(parents=True, exist_ok=True)
                mapped = mini_imagenet_shaped(folder, flag.mini_classes, flag.mini_images_per_class)
                sources[kind] = mapped.in_memory() if kind == "mini_memory" else mapped
        return sources[kind]

    try:
        for name in flag.configs:
            kind, ways, shots, queries, batch = CONFIGS[name]
            dataset = episode_dataset(source(kind), ways, shots, queries, meta_batch_size=batch, seed=0)
            rate = measure(dataset, batch, flag.warmup_seconds, flag.window_seconds, flag.windows)
            peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
            print(f"config={name} episodes_per_sec={rate:.0f} peak_rss_mb={peak_mb:.0f}", flush=True)
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)


if __name__ == "__main__":
    app.run(main)
