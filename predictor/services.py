"""What the API, pages, admin and commands do: every write, the visitor's id, and the health check.

The writes (drawings, reviews, the model registry) are atomic. Reads live in `predictor.selectors`, and
the classifier each process serves in `predictor.model_cache`.
"""

import hashlib
import logging
import os
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Literal, overload

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.core.files.base import ContentFile
from django.db import IntegrityError, connection, transaction
from django.db.models import Max
from django.utils import timezone

from predictor import model_cache
from predictor.imagefile import image_header, stored_png
from predictor.model_cache import ModelUnavailable, active_classifier
from predictor.models import Drawing, ModelActivation, ModelVersion
from predictor.preprocessing import preprocess_steps

VISITOR_SESSION_KEY = "visitor"

logger = logging.getLogger(__name__)


@overload
def visitor_for_session(session, *, create: Literal[True]) -> str: ...
@overload
def visitor_for_session(session, *, create: bool) -> str | None: ...
def visitor_for_session(session, *, create: bool) -> str | None:
    """Return the opaque visitor id kept in `session`, making one if asked to."""
    visitor = session.get(VISITOR_SESSION_KEY)
    if visitor is None and create:
        visitor = uuid.uuid4().hex
        session[VISITOR_SESSION_KEY] = visitor
    return visitor


def drawing_create(*, data: bytes, visitor: str) -> Drawing:
    """Return a new stored Drawing with the active model's prediction for the image bytes `data`.

    What is stored is a PNG of its pixels and nothing else (`stored_png`: the submitted PNG's own image
    chunks when they hold exactly its pixels, as a canvas's export does; else one made from the pixels):
    no metadata, at most 256 KB, a drawing pixel for pixel. The row keeps the size as submitted.
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
    drawing.image.save("drawing.png", ContentFile(stored_png(data, steps.decoded)), save=False)
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


# Where an activation came from, as ModelActivation.source records it.
ACTIVATION_SOURCES = ("admin", "command", "retrain", "register")
# Inserting a version number another registration took first is retried this many times.
VERSION_NUMBER_ATTEMPTS = 10


class ActivationRefused(Exception):
    """The version was not activated and nothing changed; str() says why."""


class FailedGateNotConfirmed(ActivationRefused):
    """The version failed its promotion gate and activating it anyway was not confirmed."""

    def __init__(self, version: ModelVersion, reasons: list[str]) -> None:
        self.version = version
        self.reasons = reasons
        super().__init__(
            f"Version {version.version} failed its promotion gate when it was trained: "
            + ("; ".join(reasons) or "no reason recorded")
            + ". Activating it needs a confirmation."
        )


def model_version_gate_failures(*, version: ModelVersion) -> list[str] | None:
    """Return the reasons the version failed its promotion gate, or None if it passed or never met one."""
    gate = version.metrics.get("gate") if isinstance(version.metrics, dict) else None
    if not isinstance(gate, dict) or gate.get("passed") is not False:
        return None
    reasons = gate.get("reasons")
    return [str(reason) for reason in reasons] if isinstance(reasons, list) else []


@transaction.atomic
def model_version_register(
    *,
    tflite_path: str | os.PathLike,
    keras_path: str | os.PathLike,
    metrics: dict,
    notes: str = "",
    parent: ModelVersion | None = None,
    training_data: dict | None = None,
    activate: bool,
    activated_by: User | None = None,
    source: str = "register",
) -> ModelVersion:
    """Return a new ModelVersion whose artefacts are copied into model storage with their SHA-256, activated if asked.

    With `activate` and a `parent`, the version is activated only if the parent is still the active
    version when the row is written (checked under a lock in the same transaction); otherwise it is
    registered without activating, `is_active` is False and `not_activated_reason` (also added to the
    notes) says why. `activate` serves a version whose recorded gate failed: the caller asked for it
    (retrain --force), and the activation's note says so. Raises ModelUnavailable, keeping nothing, if
    the stored .tflite cannot be loaded.
    """
    tflite, keras = Path(tflite_path).read_bytes(), Path(keras_path).read_bytes()
    version = ModelVersion(
        metrics=metrics,
        notes=notes,
        parent=parent,
        training_data=training_data or {},
        # Of the very bytes copied below: what every worker checks before it serves the file.
        tflite_sha256=hashlib.sha256(tflite).hexdigest(),
        keras_sha256=hashlib.sha256(keras).hexdigest(),
    )
    version.not_activated_reason = ""
    _model_version_insert(version)
    try:
        version.tflite.save(f"v{version.version}/model.tflite", ContentFile(tflite), save=False)
        version.keras.save(f"v{version.version}/model.keras", ContentFile(keras), save=False)
        # Read back through storage and checked as a worker would: fail here, and keep nothing, if the
        # stored copy cannot be served.
        model_cache.load_classifier(version, from_storage=True)
        version.save(update_fields=["tflite", "keras"])
        if activate:
            active = _active_version_locked()
            if parent is not None and (active is None or active.id != parent.id):
                now_active = f"version {active.version} is" if active else "none is"
                version.not_activated_reason = (
                    f"Not activated: it was trained from version {parent.version}, which is no longer the "
                    f"active version ({now_active}). To serve it: manage.py activate_model {version.version}"
                )
                version.notes = "\n".join(filter(None, [notes, version.not_activated_reason]))
                version.save(update_fields=["notes"])
            else:
                model_version_activate(
                    version=version, activated_by=activated_by, source=source, confirm_failed_gate=True
                )
    except BaseException:
        for artefact in (version.tflite, version.keras):
            if artefact.name:
                artefact.delete(save=False)
        raise
    return version


def _model_version_insert(version: ModelVersion) -> ModelVersion:
    """Return `version` inserted with the next free version number, before its files exist."""
    # The unique version column is the arbiter on every database: a registration that took the same
    # number first makes this insert fail (on PostgreSQL, once that one commits), and this one takes the
    # next. A lock cannot do it: SELECT MAX(...) FOR UPDATE locks no row, and there may be none to lock.
    for _attempt in range(VERSION_NUMBER_ATTEMPTS):
        version.version = (ModelVersion.objects.aggregate(n=Max("version"))["n"] or 0) + 1
        try:
            with transaction.atomic():
                version.save(force_insert=True)
            return version
        except IntegrityError:
            if ModelVersion.objects.filter(version=version.version).exists():
                continue  # taken meanwhile: try the next number
            raise
    raise IntegrityError(f"No free version number after {VERSION_NUMBER_ATTEMPTS} attempts.")


def _active_version_locked() -> ModelVersion | None:
    """Return the active ModelVersion with its row locked until the transaction ends, or None if none is."""
    active = ModelVersion.objects.select_for_update().filter(is_active=True).first()
    if active is None:
        # On PostgreSQL, a row deactivated while this waited for its lock is skipped, and the version
        # activated instead is visible only to a new statement: look once more.
        active = ModelVersion.objects.select_for_update().filter(is_active=True).first()
    return active


@transaction.atomic
def model_version_activate(
    *,
    version: ModelVersion,
    activated_by: User | None = None,
    source: str,
    confirm_failed_gate: bool = False,
) -> ModelVersion:
    """Return `version`, now the one active model; every worker switches to it within a check interval.

    Raises FailedGateNotConfirmed for a version whose recorded gate failed unless `confirm_failed_gate`,
    and ActivationRefused if its .tflite in model storage cannot be loaded or does not match its
    SHA-256; either way nothing changes. Each switch is recorded as a ModelActivation.
    """
    if source not in ACTIVATION_SOURCES:
        raise ValueError(f"Unknown activation source {source!r}; one of {', '.join(ACTIVATION_SOURCES)}.")
    # Locked first, so two activations run one after the other and each records the version it replaced.
    previous = _active_version_locked()
    if previous is not None and previous.id == version.id:
        version.is_active = True
        return version
    failures = model_version_gate_failures(version=version)
    if failures is not None and not confirm_failed_gate:
        raise FailedGateNotConfirmed(version, failures)
    try:
        # From storage, not from this host's copy: every other host will read it there.
        model_cache.load_classifier(version, from_storage=True)
    except ModelUnavailable as error:
        raise ActivationRefused(f"{error} Version {version.version} was not activated; nothing changed.") from error
    ModelVersion.objects.filter(is_active=True).exclude(id=version.id).update(is_active=False)
    ModelVersion.objects.filter(id=version.id).update(is_active=True)
    note = ""
    if failures is not None:
        note = "activated although it failed its gate: " + ("; ".join(failures) or "no reason recorded")
    ModelActivation.objects.create(
        model_version=version, previous=previous, activated_by=activated_by, source=source, note=note
    )
    version.is_active = True
    # This process looks again at once (its own connection already sees the switch) and again once it is
    # committed (its other threads see it then); other workers within DIGIT_MODEL_CHECK_SECONDS.
    model_cache.check_active_version_now()
    transaction.on_commit(model_cache.check_active_version_now)
    return version


def health_status(*, user: User | AnonymousUser) -> dict:
    """Return {"status", "database", "model_version"} and, when unhealthy, a "detail" sentence.

    The detail says which part is down; why (a driver's error, a broken model file) goes to the log,
    and into the detail only for a staff `user`, who can be recognised only while the database answers.
    """
    status = {"status": "ok", "database": "ok", "model_version": None}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as error:  # any driver error means the database cannot serve us
        logger.error("Health check: the database is unavailable: %s", error)
        detail = "The database is unavailable; the reason is in the server log."
        return {**status, "status": "unavailable", "database": "unavailable", "detail": detail}
    try:
        version, _ = active_classifier()
    except ModelUnavailable as error:
        logger.error("Health check: the model is unavailable: %s", error)
        detail = str(error) if user.is_staff else "The model is unavailable; the reason is in the server log."
        return {**status, "status": "unavailable", "detail": detail}
    return {**status, "model_version": version.version}


def _drawings_save_review(drawings: list[Drawing], *, reviewer: User) -> list[Drawing]:
    """Return the drawings with their review fields stored, stamped with `reviewer` and the time."""
    reviewed_at = timezone.now()
    for drawing in drawings:
        drawing.reviewed_by = reviewer
        drawing.reviewed_at = reviewed_at
    fields = ["true_label", "is_excluded", "reviewed_by", "reviewed_at"]
    Drawing.objects.bulk_update(drawings, fields, batch_size=500)
    return drawings


@transaction.atomic
def drawing_relabel(*, drawings: Iterable[Drawing], true_label: int | None, reviewer: User) -> list[Drawing]:
    """Return the drawings labelled `true_label` by `reviewer` (None sends them back to the review queue)."""
    # Evaluated once: a caller's filter (say, "needs review") no longer matches after the update.
    drawings = list(drawings)
    for drawing in drawings:
        drawing.true_label = true_label
        drawing.is_excluded = False
    return _drawings_save_review(drawings, reviewer=reviewer)


@transaction.atomic
def drawing_confirm(*, drawings: Iterable[Drawing], reviewer: User) -> list[Drawing]:
    """Return the drawings, each labelled with its own prediction: `reviewer` says the model was right."""
    drawings = list(drawings)
    for drawing in drawings:
        drawing.true_label = drawing.predicted_label
        drawing.is_excluded = False
    return _drawings_save_review(drawings, reviewer=reviewer)


@transaction.atomic
def drawing_exclude(*, drawings: Iterable[Drawing], reviewer: User) -> list[Drawing]:
    """Return the drawings marked "not a digit" by `reviewer`: no label, never used for training."""
    drawings = list(drawings)
    for drawing in drawings:
        drawing.true_label = None
        drawing.is_excluded = True
    return _drawings_save_review(drawings, reviewer=reviewer)
