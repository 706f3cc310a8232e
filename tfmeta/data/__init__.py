"""Episodic data: sources of labelled examples, episode sampling and tf.data pipelines."""

from tfmeta.data.augment import AUGMENTATIONS, Augmentation, augment_episode
from tfmeta.data.completion import CompletionEpisode, image_completion_tasks
from tfmeta.data.episode import Episode, TaskEpisode, as_episode
from tfmeta.data.gp import GPEpisode, gp_log_likelihood, gp_posterior, gp_tasks, gp_test_tasks
from tfmeta.data.pipeline import class_batch_dataset, episode_dataset
from tfmeta.data.sequences import SequenceSampler, presentation_indices, previous_labels, sequence_dataset
from tfmeta.data.regression import sinusoid_tasks
from tfmeta.data.sampling import ClassBatchSampler, EpisodeSampler
from tfmeta.data.sharding import TaskShard
from tfmeta.data.sources import ClassDataset, read_image_files

__all__ = [
    "AUGMENTATIONS",
    "Augmentation",
    "ClassBatchSampler",
    "ClassDataset",
    "CompletionEpisode",
    "Episode",
    "EpisodeSampler",
    "GPEpisode",
    "TaskEpisode",
    "TaskShard",
    "as_episode",
    "augment_episode",
    "class_batch_dataset",
    "episode_dataset",
    "gp_log_likelihood",
    "gp_posterior",
    "gp_tasks",
    "gp_test_tasks",
    "image_completion_tasks",
    "read_image_files",
    "SequenceSampler",
    "presentation_indices",
    "previous_labels",
    "sequence_dataset",
    "sinusoid_tasks",
]
