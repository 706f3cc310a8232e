"""Classifies image files with a tfmeta export: prints each query's class name and probability.

    python -m trainers.predict --model=saved_models/<name>/<version> --support_dir=DIR --query=a.png --query=b.png

`--support_dir` (one sub-folder of images per class) is needed for a few-shot
export; an adapted classifier export knows its class names.
"""

from absl import flags

from tfmeta.export import load_few_shot
from trainers import common

flags.DEFINE_string("model", None, "An export's version directory: saved_models/<name>/<version>.", required=True)
flags.DEFINE_string("support_dir", None, "Folder with one sub-folder of images per class (few-shot exports).")
flags.DEFINE_multi_string("query", None, "Image file(s) to classify (repeat the flag).", required=True)


def main(argv):
    queries = list(flags.FLAGS.query) + list(argv[1:])  # Shell globs after the flags are queries too.
    predictor = load_few_shot(flags.FLAGS.model)
    for p in predictor.predict(queries, support_dir=flags.FLAGS.support_dir):
        print(f"{p.query}\t{p.class_name}\t{p.probability:.4f}", flush=True)


if __name__ == "__main__":
    common.main(main)
