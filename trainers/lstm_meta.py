"""Meta-trains the LSTM meta-learner (Ravi & Larochelle 2017): a learned optimizer whose cell state is the weights.

    python -m trainers.lstm_meta --data_dir=../shared/data/omniglot                  # 5-way 1-shot, Conv-4
    python -m trainers.lstm_meta --data_dir=../shared/data/omniglot --shots=5 --inner_steps=5
    python -m trainers.lstm_meta --data_dir=../shared/data/omniglot --lstm_hidden_size=0   # gates only, ~5x cheaper

Defaults (`tfmeta.training.presets.TRAINER_DEFAULTS["lstm_meta"]`): Omniglot 5-way 1-shot,
15 queries per class, 4 tasks per meta-update, 5 updates of the coordinate-wise LSTM
(`--inner_steps`) starting as SGD with step `--inner_lr` (0.1), Adam 1e-3. The test
reports the accuracy after 0, 1 and `--eval_inner_steps` updates; the export is MAML's
adapt-and-predict SavedModel (the LSTM's updates run inside the served graph).
"""

from absl import app

from tfmeta.training import run
from tfmeta.training.presets import TRAINER_DEFAULTS
from trainers import common

common.define_flags(common.COMMON_FIELDS + common.LSTM_META_FIELDS, TRAINER_DEFAULTS["lstm_meta"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    common.configure_threads()
    run(common.config_from_flags(trainer="lstm_meta", variant="lstm_meta"))


if __name__ == "__main__":
    common.main(main)
