"""Export to TF Serving: few-shot ("adapt and predict") and adapted SavedModels.

One path (`exporter.save_export`) writes every kind; each kind is a small module:
`few_shot.py` (`export_few_shot_classifier`, `export_few_shot_regressor`) and
`adapted.py` (`export_adapted_classifier`, `adapt_export`), `recurrent.py`
(`export_recurrent_classifier`: one step of a MANN's recurrence, served online). `FewShotPredictor`
is the Python client. Nothing here imports `tfmeta.training`.
"""

from tfmeta.export.adapted import adapt_export, export_adapted_classifier
from tfmeta.export.exporter import SIGNATURE_KEY
from tfmeta.export.few_shot import export_few_shot_classifier, export_few_shot_regressor
from tfmeta.export.model_card import MODEL_CARD_PATH, read_model_card
from tfmeta.export.predictor import FewShotPredictor, Prediction, load_few_shot
from tfmeta.export.recurrent import export_recurrent_classifier
from tfmeta.export.versioning import existing_versions, next_version

__all__ = [
    "FewShotPredictor",
    "MODEL_CARD_PATH",
    "Prediction",
    "SIGNATURE_KEY",
    "adapt_export",
    "existing_versions",
    "export_adapted_classifier",
    "export_few_shot_classifier",
    "export_few_shot_regressor",
    "export_recurrent_classifier",
    "load_few_shot",
    "next_version",
    "read_model_card",
]
