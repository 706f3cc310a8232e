"""Export to TF Serving: few-shot ("adapt and predict") and adapted SavedModels."""

from tfmeta.export.predictor import FewShotPredictor, Prediction, load_few_shot
from tfmeta.export.model_card import MODEL_CARD_PATH, read_model_card
from tfmeta.export.saved_model import (
    SIGNATURE_KEY,
    export_adapted_classifier,
    export_few_shot_classifier,
    export_few_shot_regressor,
)
from tfmeta.export.versioning import existing_versions, next_version

__all__ = [
    "FewShotPredictor",
    "MODEL_CARD_PATH",
    "Prediction",
    "SIGNATURE_KEY",
    "existing_versions",
    "export_adapted_classifier",
    "export_few_shot_classifier",
    "export_few_shot_regressor",
    "load_few_shot",
    "next_version",
    "read_model_card",
]
