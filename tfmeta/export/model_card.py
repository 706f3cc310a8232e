"""The model card `assets/tfmeta.json` carried by every tfmeta export."""

import datetime
import json
import pathlib

MODEL_CARD_PATH = "assets/tfmeta.json"
# Format 2: few-shot exports save `adapt_task` / `predict_task` (any learner's task
# state); format 1 (tfmeta 0.1) saved MAML's `adapt_weights` / `predict_with_weights`.
MODEL_CARD_FORMAT = "tfmeta.model_card/2"
MODEL_CARD_FORMAT_1 = "tfmeta.model_card/1"
RESERVED_KEYS = ("format", "kind", "signature", "created")


def _jsonable(value, where):
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as error:
        raise ValueError(f"`{where}` must be JSON-serialisable ({error}). Received: {where}={value!r}") from None


def check_model_card(extra: dict | None) -> dict:
    """Validates the caller's model-card fields; returns a JSON round-tripped copy.

    Raises:
        ValueError: if `extra` is not a JSON-serialisable dict or sets a reserved key.
    """
    extra = {} if extra is None else extra
    if not isinstance(extra, dict):
        raise ValueError(f"`model_card` must be a dict. Received: model_card={type(extra).__name__}")
    reserved = sorted(set(extra) & set(RESERVED_KEYS))
    if reserved:
        raise ValueError(f"`model_card` must not set the reserved keys {list(RESERVED_KEYS)}. Received: {reserved}")
    return _jsonable(extra, "model_card")


def build_model_card(kind: str, signature: dict, computed: dict, extra: dict | None) -> dict:
    """Assembles a model card.

    Args:
        kind: `"few_shot_classifier"`, `"few_shot_regressor"` or `"adapted_classifier"`.
        signature: `{"inputs": {...}, "outputs": {...}}` of `serving_default`.
        computed: fields the exporter derives (algorithm, input, ways, inner steps, ...).
        extra: the caller's fields (training configuration, evaluation results with
            confidence intervals, preprocessing, shots, ...); they take precedence over
            `computed`, nested dicts are merged one level deep.

    Returns:
        The card as a JSON-serialisable dict.

    Raises:
        ValueError: if `extra` is not a JSON-serialisable dict or uses a reserved key.
    """
    extra = check_model_card(extra)
    card = {
        "format": MODEL_CARD_FORMAT,
        "kind": kind,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "signature": signature,
    }
    card.update(_jsonable(computed, "computed"))
    extra = dict(extra)
    if "preprocessing" in extra and isinstance(card.get("input"), dict):
        # Shorthand: model_card={"preprocessing": {"invert": True}} refines input.preprocessing.
        card["input"]["preprocessing"] = {**card["input"].get("preprocessing", {}), **extra.pop("preprocessing")}
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(card.get(key), dict):
            card[key] = {**card[key], **value}
        else:
            card[key] = value
    return card


def write_model_card(export_dir, card: dict) -> pathlib.Path:
    """Writes `card` to `<export_dir>/assets/tfmeta.json` and returns that path."""
    path = pathlib.Path(export_dir) / MODEL_CARD_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    return path


def read_model_card(export_dir) -> dict:
    """Reads the model card of an export.

    Raises:
        FileNotFoundError: if `export_dir` holds no `assets/tfmeta.json`.
    """
    path = pathlib.Path(export_dir) / MODEL_CARD_PATH
    if not path.is_file():
        raise FileNotFoundError(f"No model card at {path}: is {export_dir} a tfmeta export (<root>/<name>/<version>)?")
    return json.loads(path.read_text())
