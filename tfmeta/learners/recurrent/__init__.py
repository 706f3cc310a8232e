"""The recurrent family: meta-learners that keep what they learned about a task in a recurrent state."""

from tfmeta.learners.recurrent.rl2 import (
    RL2,
    GRUPolicy,
    Rollout,
    RL2Config,
    RL2Trainer,
    build_rl2,
    encode_inputs,
    gae,
    make_env,
    ppo_clipped_objective,
)

__all__ = ["GRUPolicy", "RL2", "RL2Config", "RL2Trainer", "Rollout", "build_rl2", "encode_inputs", "gae",
           "make_env", "ppo_clipped_objective"]
