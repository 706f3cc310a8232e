"""Reinforcement-learning task families for RL² (Duan et al., 2016) and their classical baselines.

* `bandits`: Bernoulli multi-armed bandits (`BernoulliBandit`, `bandit_tasks`).
* `mdps`: random tabular MDPs (`TabularMDP`, `mdp_tasks`).
* `bandit_baselines`, `gittins`: random, greedy, epsilon-greedy, UCB1, Thompson
  sampling and Gittins-index policies, and the paper's Table 1.
* `mdp_baselines`: PSRL, random and optimal policies, and the paper's Table 2.

The environments are pure TensorFlow functions over a batch of tasks (for the
learners, inside `tf.function`); the baselines are numpy policies that step the same
environments.
"""

from tfmeta.data.rl.bandits import BanditState, BernoulliBandit, bandit_tasks
from tfmeta.data.rl.mdps import MDPParams, MDPState, TabularMDP, mdp_tasks
from tfmeta.data.rl.stream import RLTasks

__all__ = [
    "BanditState",
    "BernoulliBandit",
    "MDPParams",
    "MDPState",
    "RLTasks",
    "TabularMDP",
    "bandit_tasks",
    "mdp_tasks",
]
