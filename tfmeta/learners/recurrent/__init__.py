"""The recurrent family: learners whose task state is a recurrent state (a memory, a hidden state)."""

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

__all__ = [
    "MANN",
    "MemoryNetwork",
    "build_lstm_seq",
    "build_mann",
    "content_weights",
    "cosine_similarity",
    "least_used",
    "lrua_step",
    "memory_network",
]
