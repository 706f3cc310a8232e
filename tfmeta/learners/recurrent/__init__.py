"""The recurrent family: meta-learners that keep what they learned about a task in a recurrent state.

`MANN` (Santoro et al. 2016; and its LSTM baseline): an external memory; `LSTMMetaLearner` (Ravi &
Larochelle 2017): a learned optimizer whose cell state is the network's weights; `RL2` (Duan et al.
2016): the hidden state of a policy that learns to explore.
"""

from tfmeta.learners.recurrent.lstm_meta import LSTMMetaLearner, preprocess
from tfmeta.learners.recurrent.mann import (
    MANN,
    MemoryNetwork,
    build_lstm_seq,
    build_mann,
    content_weights,
    cosine_similarity,
    least_used,
    lrua_step,
    memory_network,
)
from tfmeta.learners.recurrent.rl2 import (
    RL2,
    GRUPolicy,
    RL2Config,
    RL2Trainer,
    Rollout,
    build_rl2,
    encode_inputs,
    gae,
    make_env,
    ppo_clipped_objective,
)

__all__ = [
    "GRUPolicy",
    "LSTMMetaLearner",
    "MANN",
    "MemoryNetwork",
    "RL2",
    "RL2Config",
    "RL2Trainer",
    "Rollout",
    "build_lstm_seq",
    "build_mann",
    "build_rl2",
    "content_weights",
    "cosine_similarity",
    "encode_inputs",
    "gae",
    "least_used",
    "lrua_step",
    "make_env",
    "memory_network",
    "ppo_clipped_objective",
    "preprocess",
]
