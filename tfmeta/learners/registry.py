"""One registry of learners: the name a trainer, a config or `build` takes -> how to build it.

```python
learner = tfmeta.learners.build("maml++", tfmeta.models.conv4(ways=5), inner_steps=5, inner_lr=0.1)
tfmeta.learners.names()              # ('anil', 'fomaml', 'maml', 'maml++', 'metasgd', 'reptile', ...)
tfmeta.learners.register("my_learner", "metric", MyLearner, "what it does")
```
"""

import dataclasses
from typing import Callable

from tfmeta.learners.amortized import build_cnp, build_hypernet
from tfmeta.learners.base import Learner
from tfmeta.learners.gradient import ANIL, MAML, MetaSGD, Reptile
from tfmeta.learners.metric import PrototypicalNetwork
from tfmeta.learners.metric import MatchingNetwork, RelationNetwork
from tfmeta.learners.metric import FineTuneBaseline
from tfmeta.learners.recurrent.lstm_meta import LSTMMetaLearner
from tfmeta.learners.recurrent.mann import build_lstm_seq, build_mann
from tfmeta.learners.recurrent.rl2 import build_rl2
from tfmeta.models.batchnorm import batch_norm_layers

FAMILIES = ("gradient", "metric", "amortized", "recurrent")
# What a learner's `task_loss` trains on: few-shot episodes (labels 0..ways-1 within each task), or
# mini-batches of all training classes with their global labels as the query set and an empty
# support set (`tfmeta.data.class_batch_dataset`: learners pre-trained as classifiers), or
# label-offset sequences as the support set, with an empty query set (`tfmeta.data.sequence_dataset`:
# the recurrent classifiers, trained by `tfmeta.training.sequences.run_sequences`), or rollouts in
# environments (RL²: trained by its own trainer, `trainers.rl2`, not by the runner).
EPISODES, CLASS_BATCHES, SEQUENCES, ENVIRONMENTS = "episodes", "class_batches", "sequences", "environments"
TRAINING_DATA = (EPISODES, CLASS_BATCHES, SEQUENCES, ENVIRONMENTS)

# The published MAML++ options; any can be overridden through `build`'s kwargs.
# Per-step BatchNorm weights apply to networks with BatchNorm layers only;
# derivative-order annealing (`first_order_steps`) depends on the run's length,
# so the trainer sets it (the first third of the meta-updates, as in the paper).
MAML_PLUS_PLUS_DEFAULTS = {
    "learn_inner_lr": True, "multi_step_loss": True, "per_step_bn_stats": True, "per_step_bn_weights": True,
}


@dataclasses.dataclass(frozen=True)
class Entry:
    """A registered learner.

    Attributes:
        name: the registry name.
        family: one of `FAMILIES`.
        build: `(model, **kwargs) -> Learner`.
        description: one line for `--help` and the README.
        training_data: what its `task_loss` trains on, `EPISODES`,
            `CLASS_BATCHES` (the runner builds that stream; a learner of
            `CLASS_BATCHES` takes `num_classes`, the number of training classes)
            or `SEQUENCES` (label-offset sequences, `run_sequences`).
    """

    name: str
    family: str
    build: Callable
    description: str
    training_data: str = EPISODES


def _fomaml(model, **kwargs) -> MAML:
    if kwargs.get("first_order", True) is not True:
        raise ValueError(f"'fomaml' is first order. Received: first_order={kwargs['first_order']!r}")
    return MAML(model, **{**kwargs, "first_order": True, "name": "fomaml"})


def _maml_plus_plus(model, **kwargs) -> MAML:
    defaults = dict(MAML_PLUS_PLUS_DEFAULTS)
    if not batch_norm_layers(model):
        defaults["per_step_bn_weights"] = False
    return MAML(model, **{**defaults, **kwargs, "name": "maml++"})


_REGISTRY = {}


def register(name: str, family: str, build: Callable, description: str = "", training_data: str = EPISODES) -> Entry:
    """Adds a learner to the registry (trainers, configs and `build` then know it).

    Args:
        name: the registry name.
        family: one of `FAMILIES`.
        build: `(model, **kwargs) -> Learner`.
        description: one line.
        training_data: `EPISODES` (few-shot tasks) or `CLASS_BATCHES` (pre-training
            on all training classes; `build` then takes `num_classes`).

    Returns:
        The new `Entry`.

    Raises:
        ValueError: if `name` is taken, or `family` or `training_data` unknown.

    Example:

    ```python
    register("protonet_cosine", "metric", functools.partial(ProtoNet, distance="cosine"))
    ```
    """
    if name in _REGISTRY:
        raise ValueError(f"A learner is already registered as {name!r}. Received: name={name!r}")
    if family not in FAMILIES:
        raise ValueError(f"`family` must be one of {FAMILIES}. Received: family={family!r}")
    if training_data not in TRAINING_DATA:
        raise ValueError(f"`training_data` must be one of {TRAINING_DATA}. Received: training_data={training_data!r}")
    entry = Entry(name, family, build, description, training_data)
    _REGISTRY[name] = entry
    return entry


for _name, _build, _description in (
    ("maml", MAML, "MAML (Finn et al. 2017): all weights adapt, second order (nested tapes)"),
    ("fomaml", _fomaml, "first-order MAML: the same inner loop, inner gradients under stop_gradient"),
    ("anil", ANIL, "ANIL (Raghu et al. 2020): only the head adapts; the body is meta-learned"),
    ("metasgd", MetaSGD, "Meta-SGD (Li et al. 2017): learned per-parameter inner learning rates"),
    ("maml++", _maml_plus_plus, "MAML++ (Antoniou et al. 2019): LSLR, multi-step loss, per-step BatchNorm"),
    ("reptile", Reptile, "Reptile (Nichol et al. 2018): SGD on the support set, step towards the result"),
):
    register(_name, "gradient", _build, _description)

register("protonet", "metric", PrototypicalNetwork,
         "Prototypical Networks (Snell et al. 2017): nearest class mean of the embeddings")
register("matching", "metric", MatchingNetwork,
         "Matching Networks (Vinyals et al. 2016): cosine attention over the support set, optional FCE")
register("relation", "metric", RelationNetwork,
         "Relation Networks (Sung et al. 2018): a learned relation module scores class/query feature maps")
register("finetune", "metric", FineTuneBaseline,
         "fine-tuning baselines (Chen et al. 2019, Tian et al. 2020): pre-trained classifier, new head per task",
         training_data=CLASS_BATCHES)
register("cnp", "amortized", build_cnp,
         "Conditional Neural Process (Garnelo et al. 2018); attention=True: the Attentive NP's attention (Kim et al. 2019)")
register("hypernet", "amortized", build_hypernet,
         "HyperNetwork: the support set generates a network's weights (all, the head, or FiLM layers)")
register("lstm_meta", "recurrent", LSTMMetaLearner,
         "LSTM meta-learner (Ravi & Larochelle 2017): a coordinate-wise LSTM whose cell state is the weights")
register("mann", "recurrent", build_mann,
         "Memory-augmented network (Santoro et al. 2016): LSTM controller, LRUA memory, label-offset sequences",
         training_data=SEQUENCES)
register("lstm_seq", "recurrent", build_lstm_seq,
         "LSTM on label-offset sequences: the MANN's controller without memory (Santoro et al.'s baseline)",
         training_data=SEQUENCES)
register("rl2", "recurrent", build_rl2,
         "RL² (Duan et al. 2016): a GRU policy whose hidden state carries over a trial's episodes, trained with PPO",
         training_data=ENVIRONMENTS)


def names(family: str | None = None) -> tuple:
    """Sorted registry names (of one family, or all)."""
    return tuple(sorted(name for name, entry in _REGISTRY.items() if family is None or entry.family == family))


def entry(name: str) -> Entry:
    """The registry entry of `name`.

    Raises:
        ValueError: if `name` is not registered.
    """
    if name not in _REGISTRY:
        raise ValueError(f"Unknown learner; expected one of {list(names())}. Received: {name!r}")
    return _REGISTRY[name]


def build(name: str, model, **kwargs) -> Learner:
    """Builds the learner registered as `name` around `model`.

    Args:
        name: a registry name (`names()`): `"maml"`, `"fomaml"`, `"anil"`,
            `"metasgd"`, `"maml++"` (MAML with LSLR, multi-step loss, per-step
            BatchNorm statistics and, for networks with BatchNorm, per-step
            BatchNorm weights and biases), `"reptile"`, ...
        model: the learner's network, a built `keras.Model`.
        **kwargs: passed to the learner (`task`, `inner_steps`, `inner_lr`, ...).

    Returns:
        The `Learner`.

    Raises:
        ValueError: if `name` is unknown.

    Example:

    ```python
    learner = build("maml++", tfmeta.models.conv4(ways=5), inner_steps=5, inner_lr=0.1)
    learner.name   # "maml++"
    ```
    """
    return entry(name).build(model, **kwargs)
