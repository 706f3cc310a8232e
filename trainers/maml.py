"""Meta-trains MAML (or a variant) and tests it on unseen tasks.

With no flags: second-order MAML on sinusoid regression (Finn et al., 2017),
a few CPU minutes; prints the test MSE after 0/1/5/10 inner steps ± 95% CI
over 600 unseen tasks.

    python -m trainers.maml
    python -m trainers.maml --dataset=omniglot --data_dir=../shared/data/omniglot \
        --ways=5 --shots=1 --queries=1 --meta_batch_size=32 --inner_lr=0.4 --eval_inner_steps=3

Distributed (`--meta_batch_size` is global: each replica gets its share of the tasks):

    python -m trainers.maml --strategy=mirrored ...                      # all local GPUs
    python -m trainers.maml --strategy=mirrored --devices=GPU:0,GPU:1 ...
    TF_CONFIG='{"cluster": {"worker": ["h1:2222", "h2:2222"]}, "task": {"type": "worker", "index": 0}}' \
        python -m trainers.maml --strategy=multi_worker --workdir=/shared/runs/x ...   # on every host
    python -m trainers.maml --mixed_precision=mixed_bfloat16 ...

FiLM-conditioned MAML on sinusoids (amplitude and phase modulate the initialisation; with
`--min_shots` the support sets have 0..shots real points):

    python -m trainers.maml --task_metadata --metadata_noise=0.1 --min_shots=0
"""

from absl import app

from tfmeta.training import run
from trainers import common

common.define_flags(common.COMMON_FIELDS + common.GRADIENT_FIELDS + common.METADATA_FIELDS)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    common.configure_threads()
    run(common.config_from_flags())


if __name__ == "__main__":
    common.main(main)
