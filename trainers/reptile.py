"""Meta-trains Reptile (Nichol et al., 2018) and tests it on unseen tasks.

The same flags as `trainers.maml`, with the variant fixed to `reptile`:

    python -m trainers.reptile --inner_steps=5 --inner_lr=0.02
"""

from absl import app, flags

from tfmeta.training import run
from trainers import common

common.define_flags()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if flags.FLAGS["variant"].present and flags.FLAGS.variant != "reptile":
        raise app.UsageError(f"trainers.reptile trains Reptile only. Received: variant={flags.FLAGS.variant!r}")
    common.configure_threads()
    run(common.config_from_flags(trainer="reptile", variant="reptile"))


if __name__ == "__main__":
    common.main(main)
