"""The classifier this process serves: loaded once per model version, swapped when another is activated.

Each worker asks the registry which version is active at most once per DIGIT_MODEL_CHECK_SECONDS, so
every worker follows an activation within about that long, without a restart. Nothing broken is kept:
a version that cannot be loaded is tried again on the next request.
"""

import logging
import threading
import time

from django.conf import settings

from predictor import selectors
from predictor.inference import Classifier, ModelLoadError
from predictor.models import ModelVersion

logger = logging.getLogger(__name__)


class ModelUnavailable(Exception):
    """No model can answer right now; str() says why and what to do."""


# Per process: the loaded classifier by ModelVersion id, and the active id with when it was last checked.
_classifiers: dict[int, tuple[ModelVersion, Classifier]] = {}
_active = {"id": None, "checked_at": float("-inf")}
_lock = threading.Lock()


def _active_version_id() -> int | None:
    """Return the id of the active ModelVersion, asking the database at most once per check interval."""
    # One indexed query per worker per interval: every worker follows the registry, the one source of
    # truth, within DIGIT_MODEL_CHECK_SECONDS of an activation, and never serves a rolled-back one.
    now = time.monotonic()
    if now - _active["checked_at"] >= settings.DIGIT_MODEL_CHECK_SECONDS:
        _active.update(id=selectors.model_version_active_id(), checked_at=now)
    return _active["id"]


def active_classifier() -> tuple[ModelVersion, Classifier]:
    """Return the active ModelVersion and its Classifier, loading it once per process and version."""
    version_id = _active_version_id()
    if version_id is None:
        raise ModelUnavailable(
            "No model version is active. Register the shipped model with "
            "`python manage.py register_base_model` or activate one with `python manage.py activate_model N`."
        )
    loaded = _classifiers.get(version_id)
    if loaded is not None:
        return loaded
    with _lock:
        if version_id not in _classifiers:
            version = selectors.model_version_get(version_id=version_id)
            if version is None:  # deleted since the last check: ask the database again next time
                check_active_version_now()
                raise ModelUnavailable("The active model version was removed; retry in a moment.")
            try:
                classifier = Classifier(version.tflite.path)
            except ModelLoadError as error:
                logger.error("Model version %s cannot be loaded: %s", version.version, error)
                # The public reason names the file as stored (v1/model.tflite), not the server's path.
                reason = str(error).replace(version.tflite.path, version.tflite.name)
                raise ModelUnavailable(f"Model version {version.version} cannot be loaded: {reason}") from error
            # Keep only the newly active classifier: old versions are not served again until reactivated.
            _classifiers.clear()
            _classifiers[version_id] = (version, classifier)
        return _classifiers[version_id]


def check_active_version_now() -> None:
    """Make this process ask the registry which version is active on its next prediction."""
    _active.update(checked_at=float("-inf"))


def forget_loaded_models() -> None:
    """Drop this process's loaded classifiers and cached active version (used after registry changes in tests)."""
    with _lock:
        _classifiers.clear()
        _active.update(id=None, checked_at=float("-inf"))
