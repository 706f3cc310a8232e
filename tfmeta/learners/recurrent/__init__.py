"""The recurrent family: learners that keep what they learned about a task in a recurrent state.

`LSTMMetaLearner` (Ravi & Larochelle 2017): a learned optimizer whose cell state is the network's weights.
"""

from tfmeta.learners.recurrent.lstm_meta import LSTMMetaLearner, preprocess

__all__ = ["LSTMMetaLearner", "preprocess"]
