"""Adapts a meta-trained model once to your classes and exports a plain classifier SavedModel.

    python -m trainers.adapt --workdir=runs/maml_omniglot --support_dir=DIR --name=my_classes
    python -m trainers.adapt --model=saved_models/<few-shot>/<version> --support_dir=DIR --name=my_classes

The export (`<export_root>/<name>/<version>/`) has a `serving_default` taking
`images` and returning `logits`, `probabilities` and `classes`; the class names
(the sub-folder names of `--support_dir`, sorted) are in its `assets/tfmeta.json`.
"""

from absl import app, flags

from tfmeta.export import adapt_export
from tfmeta.workdir import adapt_workdir
from trainers import common

flags.DEFINE_string("workdir", None, "A meta-training run directory (config.json, checkpoints/).")
flags.DEFINE_string("model", None, "Or: a few-shot classifier export's version directory.")
flags.DEFINE_string("support_dir", None, "Folder with one sub-folder of images per class.", required=True)
flags.DEFINE_string("export_root", "saved_models", "Root of the exports.")
flags.DEFINE_string("name", "adapted_classifier", "Name of the new export.")
flags.DEFINE_string("data_dir", None, "Runs from before config.json recorded the input shape: their data directory.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    f = flags.FLAGS
    if (f.workdir is None) == (f.model is None):
        raise app.UsageError(
            f"Give exactly one of --workdir and --model. Received: workdir={f.workdir!r}, model={f.model!r}"
        )
    if f.model is not None:
        path = adapt_export(f.model, f.support_dir, f.export_root, f.name)
    else:
        path = adapt_workdir(f.workdir, f.support_dir, f.export_root, f.name, data_dir=f.data_dir)
    print(f"exported {path}", flush=True)


if __name__ == "__main__":
    common.main(main)
