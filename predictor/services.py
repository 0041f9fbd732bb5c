"""The operations the API, pages, admin and commands perform; the only code joining the ORM and the model."""

import logging
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.files import File
from django.core.files.base import ContentFile
from django.db import connection, transaction
from django.db.models import Max, QuerySet
from django.utils import timezone

from predictor.inference import Classifier, ModelLoadError
from predictor.models import Drawing, ModelVersion
from predictor.imagefile import image_header
from predictor.preprocessing import preprocess

VISITOR_SESSION_KEY = "visitor"

logger = logging.getLogger(__name__)


class ModelUnavailable(Exception):
    """No model can answer right now; str() says why and what to do."""


# Per process: the loaded classifiers by ModelVersion id, and when the active id was last checked.
_classifiers: dict[int, tuple[ModelVersion, Classifier]] = {}
_active = {"id": None, "checked_at": float("-inf")}
_lock = threading.Lock()


def visitor_for_session(session, *, create: bool) -> str | None:
    """Return the opaque visitor id kept in `session`, making one if asked to."""
    visitor = session.get(VISITOR_SESSION_KEY)
    if visitor is None and create:
        visitor = uuid.uuid4().hex
        session[VISITOR_SESSION_KEY] = visitor
    return visitor


def _active_version_id() -> int | None:
    """Return the id of the active ModelVersion, asking the database at most once per check interval."""
    # One indexed query per worker per interval: every worker follows the registry, the one source of
    # truth, within DIGIT_MODEL_CHECK_SECONDS of an activation, and never serves a rolled-back one.
    now = time.monotonic()
    if now - _active["checked_at"] >= settings.DIGIT_MODEL_CHECK_SECONDS:
        version_id = ModelVersion.objects.filter(is_active=True).values_list("id", flat=True).first()
        _active.update(id=version_id, checked_at=now)
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
            version = ModelVersion.objects.filter(id=version_id).first()
            if version is None:  # deleted since the last check: ask the database again next time
                _active.update(checked_at=float("-inf"))
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


def forget_loaded_models() -> None:
    """Drop this process's loaded classifiers and cached active version (used after registry changes in tests)."""
    with _lock:
        _classifiers.clear()
        _active.update(id=None, checked_at=float("-inf"))


def drawing_create(*, data: bytes, visitor: str) -> Drawing:
    """Return a new stored Drawing with the active model's prediction for the image bytes `data`."""
    started = time.perf_counter()
    # The header gives the file's extension and the size stored with the row; preprocess checks it again.
    extension, width, height = image_header(data)
    pixels = preprocess(data, max_pixels=settings.DIGIT_MAX_IMAGE_PIXELS)
    version, classifier = active_classifier()
    prediction = classifier.predict(pixels)
    drawing = Drawing(
        visitor=visitor,
        image_width=width,
        image_height=height,
        input_pixels=pixels.astype("uint8").tobytes(),
        model_version=version,
        predicted_label=prediction.predicted_label,
        confidence=prediction.confidence,
        probabilities=list(prediction.probabilities),
    )
    # The file is written first and the row committed after it, so a crash in between can leave an
    # unreferenced file (removed by `manage.py purge_orphan_files`) but never a row without its image.
    drawing.image.save(f"drawing.{extension}", ContentFile(data), save=False)
    try:
        drawing.processing_ms = (time.perf_counter() - started) * 1000
        with transaction.atomic():
            drawing.save(force_insert=True)
    except BaseException:
        drawing.image.delete(save=False)
        raise
    return drawing


def drawing_get(*, drawing_id, visitor: str | None, staff: bool = False) -> Drawing:
    """Return the drawing if this visitor made it (or `staff` may see it); Drawing.DoesNotExist otherwise."""
    drawings = Drawing.objects.select_related("model_version")
    if staff:
        return drawings.get(id=drawing_id)
    if visitor is None:
        raise Drawing.DoesNotExist
    return drawings.get(id=drawing_id, visitor=visitor)


def drawing_history(*, visitor: str | None) -> QuerySet[Drawing]:
    """Return this visitor's drawings, newest first."""
    if visitor is None:
        return Drawing.objects.none()
    return Drawing.objects.filter(visitor=visitor).select_related("model_version").order_by("-created_at")


@transaction.atomic
def drawing_give_feedback(*, drawing: Drawing, label: int) -> Drawing:
    """Return the drawing with the visitor's claimed label stored (replacing any earlier claim)."""
    drawing.feedback_label = label
    drawing.feedback_at = timezone.now()
    drawing.save(update_fields=["feedback_label", "feedback_at"])
    return drawing


@transaction.atomic
def model_version_register(
    *,
    tflite_path: Path,
    keras_path: Path,
    metrics: dict,
    notes: str = "",
    parent: ModelVersion | None = None,
    training_data: dict | None = None,
    activate: bool,
) -> ModelVersion:
    """Return a new ModelVersion whose artefacts are copied into model storage, activated if asked."""
    number = (ModelVersion.objects.select_for_update().aggregate(n=Max("version"))["n"] or 0) + 1
    version = ModelVersion(
        version=number, metrics=metrics, notes=notes, parent=parent, training_data=training_data or {}
    )
    with open(tflite_path, "rb") as tflite, open(keras_path, "rb") as keras:
        version.tflite.save(f"v{number}/model.tflite", File(tflite), save=False)
        version.keras.save(f"v{number}/model.keras", File(keras), save=False)
    try:
        # Fail here, before the row exists, if the copied artefact cannot be served.
        Classifier(version.tflite.path)
        version.save()
        if activate:
            model_version_activate(version=version)
    except BaseException:
        version.tflite.delete(save=False)
        version.keras.delete(save=False)
        raise
    return version


@transaction.atomic
def model_version_activate(*, version: ModelVersion) -> ModelVersion:
    """Return `version`, now the one active model; every worker switches to it within a check interval."""
    ModelVersion.objects.filter(is_active=True).exclude(id=version.id).update(is_active=False)
    ModelVersion.objects.filter(id=version.id).update(is_active=True)
    version.is_active = True
    # This process looks again at once; other workers within DIGIT_MODEL_CHECK_SECONDS.
    _active.update(checked_at=float("-inf"))
    return version


def health_status() -> dict:
    """Return {"status", "database", "model_version"} and, when unhealthy, a "detail" reason."""
    status = {"status": "ok", "database": "ok", "model_version": None}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as error:  # any driver error means the database cannot serve us
        return {**status, "status": "unavailable", "database": "unavailable", "detail": f"Database error: {error}"}
    try:
        version, _ = active_classifier()
    except ModelUnavailable as error:
        return {**status, "status": "unavailable", "detail": str(error)}
    return {**status, "model_version": version.version}


def _drawings_save_review(drawings: list[Drawing], *, reviewer: AbstractBaseUser) -> list[Drawing]:
    """Return the drawings with their review fields stored, stamped with `reviewer` and the time."""
    reviewed_at = timezone.now()
    for drawing in drawings:
        drawing.reviewed_by = reviewer
        drawing.reviewed_at = reviewed_at
    fields = ["true_label", "is_excluded", "reviewed_by", "reviewed_at"]
    Drawing.objects.bulk_update(drawings, fields, batch_size=500)
    return drawings


@transaction.atomic
def drawing_relabel(
    *, drawings: Iterable[Drawing], true_label: int | None, reviewer: AbstractBaseUser
) -> list[Drawing]:
    """Return the drawings labelled `true_label` by `reviewer` (None sends them back to the review queue)."""
    # Evaluated once: a caller's filter (say, "needs review") no longer matches after the update.
    drawings = list(drawings)
    for drawing in drawings:
        drawing.true_label = true_label
        drawing.is_excluded = False
    return _drawings_save_review(drawings, reviewer=reviewer)


@transaction.atomic
def drawing_confirm(*, drawings: Iterable[Drawing], reviewer: AbstractBaseUser) -> list[Drawing]:
    """Return the drawings, each labelled with its own prediction: `reviewer` says the model was right."""
    drawings = list(drawings)
    for drawing in drawings:
        drawing.true_label = drawing.predicted_label
        drawing.is_excluded = False
    return _drawings_save_review(drawings, reviewer=reviewer)


@transaction.atomic
def drawing_exclude(*, drawings: Iterable[Drawing], reviewer: AbstractBaseUser) -> list[Drawing]:
    """Return the drawings marked "not a digit" by `reviewer`: no label, never used for training."""
    drawings = list(drawings)
    for drawing in drawings:
        drawing.true_label = None
        drawing.is_excluded = True
    return _drawings_save_review(drawings, reviewer=reviewer)
