"""What the API, pages, admin and commands do: every write, the visitor's id, and the health check.

The writes (drawings, reviews, the model registry) are atomic. Reads live in `predictor.selectors`, and
the classifier each process serves in `predictor.model_cache`.
"""

import logging
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.files import File
from django.core.files.base import ContentFile
from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone

from predictor import model_cache
from predictor.imagefile import encode_stored_png, image_header
from predictor.inference import Classifier
from predictor.model_cache import ModelUnavailable, active_classifier
from predictor.models import Drawing, ModelVersion
from predictor.preprocessing import preprocess_steps

VISITOR_SESSION_KEY = "visitor"

logger = logging.getLogger(__name__)


def visitor_for_session(session, *, create: bool) -> str | None:
    """Return the opaque visitor id kept in `session`, making one if asked to."""
    visitor = session.get(VISITOR_SESSION_KEY)
    if visitor is None and create:
        visitor = uuid.uuid4().hex
        session[VISITOR_SESSION_KEY] = visitor
    return visitor


def drawing_create(*, data: bytes, visitor: str) -> Drawing:
    """Return a new stored Drawing with the active model's prediction for the image bytes `data`.

    What is stored is not `data` but a PNG made from its pixels (`encode_stored_png`): no metadata, at
    most 256 KB, a drawing pixel for pixel. The row keeps the size as submitted.
    """
    started = time.perf_counter()
    steps = preprocess_steps(data, max_pixels=settings.DIGIT_MAX_IMAGE_PIXELS, max_side=settings.DIGIT_MAX_IMAGE_SIDE)
    _, width, height = image_header(data)
    version, classifier = active_classifier()
    prediction = classifier.predict(steps.centred)
    drawing = Drawing(
        visitor=visitor,
        image_width=width,
        image_height=height,
        input_pixels=steps.centred.astype("uint8").tobytes(),
        model_version=version,
        predicted_label=prediction.predicted_label,
        confidence=prediction.confidence,
        probabilities=list(prediction.probabilities),
    )
    # The file is written first and the row committed after it, so a crash in between can leave an
    # unreferenced file (removed by `manage.py purge_orphan_files`) but never a row without its image.
    drawing.image.save("drawing.png", ContentFile(encode_stored_png(steps.decoded)), save=False)
    try:
        drawing.processing_ms = (time.perf_counter() - started) * 1000
        with transaction.atomic():
            drawing.save(force_insert=True)
    except BaseException:
        drawing.image.delete(save=False)
        raise
    return drawing


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
    model_cache.check_active_version_now()
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
