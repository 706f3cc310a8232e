"""Meta-trains a memory-augmented neural network (Santoro et al. 2016), or its LSTM baseline, on Omniglot.

    python -m trainers.mann --data_dir=../shared/data/omniglot                  # MANN, 5 classes x 10 instances
    python -m trainers.mann --data_dir=../shared/data/omniglot --variant=lstm   # the LSTM baseline
    python -m trainers.mann --data_dir=../shared/data/omniglot --ways=15 --instances=10

Each task is a label-offset sequence (`tfmeta.data.sequence_dataset`): `--ways` classes
with `--instances` images each, shuffled, labels reshuffled per sequence; at step t the
network sees image t and the label of step t-1 and predicts the label of image t. Images
are downsampled to `--image_size` (20, as the paper); `--crop_padding` adds random
translations to the training images. Classes: the Omniglot sample's split (train on 5
alphabets with rotations as new classes, select on Early_Aramaic, test on Sanskrit and
Tagalog). The test prints accuracy by instance (1st, 2nd, 3rd, 4th, 5th, 10th
presentation of a class), mean ± 95% CI over `--eval_episodes` test sequences, beside
Santoro et al.'s figures; the export serves one step of the recurrence
(`tfmeta.export.export_recurrent_classifier`).
"""

from absl import app, flags

from tfmeta.training.config import MetaTrainConfig
from tfmeta.training.sequences import run_sequences
from trainers import common

flags.DEFINE_enum("variant", "mann", ["mann", "lstm"], "mann: LSTM controller + LRUA memory; lstm: no memory.")
flags.DEFINE_integer("ways", 5, "Classes per sequence (the paper: 5 or 15).", lower_bound=2)
flags.DEFINE_integer("instances", 10, "Images of each class in a sequence (the paper: 10).", lower_bound=1)
flags.DEFINE_string("data_dir", None, "The Omniglot archives (or an unpacked tree), e.g. ../shared/data/omniglot.")
flags.DEFINE_integer("image_size", 20, "Side of the images (the paper: 20).", lower_bound=8)
flags.DEFINE_integer("crop_padding", 0, "Random translations of the training images by up to this many pixels.",
                     lower_bound=0)
flags.DEFINE_integer("meta_batch_size", 16, "Sequences per meta-update (the paper: 16).", lower_bound=1)
flags.DEFINE_float("meta_lr", 1e-3, "Adam learning rate.")
flags.DEFINE_integer("num_iterations", 20000, "Meta-updates.", lower_bound=1)
flags.DEFINE_integer("eval_every", 1000, "Steps between validations and checkpoints.", lower_bound=1)
flags.DEFINE_integer("eval_episodes", 600, "Validation and test sequences.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of the initialisation and of the task streams.", lower_bound=0)
flags.DEFINE_string("workdir", None, "Checkpoints and config (default runs/<variant>_omniglot_<ways>way).")
flags.DEFINE_string("export_dir", "saved_models", "Export root ('' for no export).")
flags.DEFINE_enum("select", "best", ["best", "last"], "Test the checkpoint with the best validation accuracy, or "
                  "the last one.")
flags.DEFINE_integer("controller_units", 200, "LSTM units (the paper: 200).", lower_bound=1)
flags.DEFINE_integer("memory_slots", 128, "Memory rows (the paper: 128).", lower_bound=1)
flags.DEFINE_integer("memory_width", 40, "Size of a memory row (the paper: 40).", lower_bound=1)
flags.DEFINE_integer("read_heads", 4, "Read heads (the paper: 4).", lower_bound=1)
common.define_thread_flags()

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    common.configure_threads()
    variant = "mann" if FLAGS.variant == "mann" else "lstm_seq"
    config = MetaTrainConfig(
        variant=variant, dataset="omniglot", data_dir=FLAGS.data_dir, ways=FLAGS.ways, shots=FLAGS.instances,
        queries=1, meta_batch_size=FLAGS.meta_batch_size, meta_lr=FLAGS.meta_lr, num_iterations=FLAGS.num_iterations,
        eval_every=FLAGS.eval_every, eval_episodes=FLAGS.eval_episodes, seed=FLAGS.seed,
        workdir=FLAGS.workdir or f"runs/{variant}_omniglot_{FLAGS.ways}way", export_dir=FLAGS.export_dir,
        export_name=f"{variant}_omniglot_{FLAGS.ways}way", image_size=FLAGS.image_size,
        crop_padding=FLAGS.crop_padding, select=FLAGS.select)
    network = {"controller_units": FLAGS.controller_units}
    if variant == "mann":
        network.update(memory_slots=FLAGS.memory_slots, memory_width=FLAGS.memory_width, read_heads=FLAGS.read_heads)
    run_sequences(config, network_kwargs=network)


if __name__ == "__main__":
    common.main(main)
