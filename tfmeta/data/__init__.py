"""Episodic data: sources of labelled examples, episode sampling and tf.data pipelines."""

from tfmeta.data.episode import Episode
from tfmeta.data.pipeline import episode_dataset
from tfmeta.data.regression import sinusoid_tasks
from tfmeta.data.sampling import EpisodeSampler
from tfmeta.data.sources import ClassDataset

__all__ = ["ClassDataset", "Episode", "EpisodeSampler", "episode_dataset", "sinusoid_tasks"]
