import base64
import os
import uuid

import numpy as np
from django.conf import settings
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.core.validators import MaxValueValidator
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from predictor.imagefile import encode_png
from predictor.preprocessing import IMAGE_SIZE

DIGIT_CHOICES = [(digit, str(digit)) for digit in range(10)]


class ModelStorage(FileSystemStorage):
    """Model artefacts under DIGIT_MODEL_ROOT, read at use time so a changed setting takes effect."""

    @property
    def base_location(self):
        return self._value_or_setting(self._location, settings.DIGIT_MODEL_ROOT)  # type: ignore[attr-defined]

    @property
    def location(self):
        return os.path.abspath(self.base_location)


def model_storage() -> Storage:
    """Return the storage of model artefacts: STORAGES["models"] (local folder, or the bucket)."""
    return storages["models"]


def drawing_upload_to(drawing: "Drawing", filename: str) -> str:
    """Return a server-chosen path for a drawing; only the extension of `filename` is kept."""
    extension = filename.rsplit(".", 1)[-1].lower()
    return f"drawings/{timezone.now():%Y/%m/%d}/{drawing.id}.{extension}"


class ModelVersion(models.Model):
    version = models.PositiveIntegerField(
        _("version"), unique=True, help_text=_("The number the API reports as model_version.")
    )
    tflite = models.FileField(_("TFLite model"), storage=model_storage, max_length=255)
    keras = models.FileField(_("Keras model"), storage=model_storage, max_length=255)
    tflite_sha256 = models.CharField(
        _("TFLite SHA-256"),
        max_length=64,
        blank=True,
        help_text=_("Checked by every worker before it serves the file."),
    )
    keras_sha256 = models.CharField(_("Keras SHA-256"), max_length=64, blank=True)
    metrics = models.JSONField(_("metrics"), default=dict, blank=True)
    parent = models.ForeignKey(
        "self",
        verbose_name=_("parent version"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="children",
    )
    training_data = models.JSONField(
        _("training data"),
        default=dict,
        blank=True,
        help_text=_("What this version was trained on: drawing ids and dataset sizes."),
    )
    notes = models.TextField(_("notes"), blank=True)
    is_active = models.BooleanField(
        _("active"), default=False, help_text=_("The version that answers predictions. Exactly one is active.")
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    # Not stored: why services.model_version_register did not activate a version it was asked to.
    not_activated_reason = ""

    class Meta:
        verbose_name = _("model version")
        verbose_name_plural = _("model versions")
        ordering = ["-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_active"], condition=models.Q(is_active=True), name="one_active_model_version"
            )
        ]

    def __str__(self) -> str:
        return f"v{self.version}" + (" (active)" if self.is_active else "")


class Drawing(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    visitor = models.CharField(
        _("visitor"),
        max_length=32,
        db_index=True,
        help_text=_("Opaque id kept in the visitor's session; only that visitor sees the drawing."),
    )
    # The size is read from the image header when the drawing is stored, not by the field: an
    # ImageField with width_field/height_field opens the file every time a row without them is loaded.
    image = models.ImageField(_("image"), upload_to=drawing_upload_to)
    image_width = models.PositiveIntegerField(_("width"), null=True, editable=False)
    image_height = models.PositiveIntegerField(_("height"), null=True, editable=False)
    input_pixels = models.BinaryField(
        _("model input"), help_text=_("The 28x28 greyscale image the model saw, 784 bytes, row by row.")
    )
    model_version = models.ForeignKey(
        ModelVersion, verbose_name=_("model version"), on_delete=models.PROTECT, related_name="drawings"
    )
    predicted_label = models.PositiveSmallIntegerField(_("predicted label"), choices=DIGIT_CHOICES)
    confidence = models.FloatField(_("confidence"), db_index=True)
    probabilities = models.JSONField(_("probabilities"))
    processing_ms = models.FloatField(_("processing time (ms)"))
    created_at = models.DateTimeField(_("created"), default=timezone.now, db_index=True)
    feedback_label = models.PositiveSmallIntegerField(
        _("visitor feedback"),
        choices=DIGIT_CHOICES,
        null=True,
        blank=True,
        validators=[MaxValueValidator(9)],
        help_text=_("What the visitor says the digit is: a claim for a reviewer, not a training label."),
    )
    feedback_at = models.DateTimeField(_("feedback given"), null=True, blank=True)
    true_label = models.PositiveSmallIntegerField(
        _("reviewer label"),
        choices=DIGIT_CHOICES,
        null=True,
        blank=True,
        validators=[MaxValueValidator(9)],
        help_text=_("The digit according to a reviewer; reviewed, non-excluded drawings are the fine-tuning dataset."),
    )
    is_excluded = models.BooleanField(
        _("not a digit"), default=False, help_text=_("Excluded by a reviewer: never used for training.")
    )
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("reviewed by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    reviewed_at = models.DateTimeField(_("reviewed"), null=True, blank=True)

    class Meta:
        verbose_name = _("drawing")
        verbose_name_plural = _("drawings")
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["visitor", "-created_at"], name="drawing_visitor_recent")]

    def __str__(self) -> str:
        return f"{self.predicted_label} ({self.confidence:.0%}) {self.created_at:%Y-%m-%d %H:%M}"

    @property
    def input_array(self) -> np.ndarray:
        """Return the 28x28 uint8 image the model saw."""
        return np.frombuffer(bytes(self.input_pixels), dtype=np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE)

    @property
    def input_image_data_url(self) -> str:
        """Return the 28x28 model input as a PNG data URL."""
        return "data:image/png;base64," + base64.b64encode(encode_png(self.input_array)).decode("ascii")

    @property
    def is_reviewed(self) -> bool:
        return self.true_label is not None or self.is_excluded

    @property
    def is_mistake(self) -> bool:
        return self.true_label is not None and self.true_label != self.predicted_label


class ModelActivation(models.Model):
    """One switch of the served model version: which, by whom, from where, and why."""

    model_version = models.ForeignKey(
        ModelVersion, verbose_name=_("model version"), on_delete=models.PROTECT, related_name="activations"
    )
    previous = models.ForeignKey(
        ModelVersion,
        verbose_name=_("previously active"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    activated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("activated by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    source = models.CharField(_("source"), max_length=20, help_text=_("admin, command, retrain or register."))
    note = models.TextField(_("note"), blank=True, help_text=_("For example that the version failed its gate."))
    created_at = models.DateTimeField(_("activated"), default=timezone.now, db_index=True)

    class Meta:
        verbose_name = _("model activation")
        verbose_name_plural = _("model activations")
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"v{self.model_version.version} activated {self.created_at:%Y-%m-%d %H:%M}"


class RetrainRun(models.Model):
    """One retraining job: asked for from the admin or the command line, executed by a worker."""

    class Status(models.TextChoices):
        QUEUED = "queued", _("queued")
        RUNNING = "running", _("running")
        PASSED = "passed", _("passed the gate")
        FAILED_GATE = "failed_gate", _("failed the gate")
        FAILED = "failed", _("failed")

    status = models.CharField(_("status"), max_length=12, choices=Status.choices, default=Status.QUEUED)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("requested by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    source = models.CharField(_("source"), max_length=20, help_text=_("admin, command or schedule."))
    options = models.JSONField(_("options"), default=dict, blank=True)
    created_at = models.DateTimeField(_("queued"), default=timezone.now, db_index=True)
    started_at = models.DateTimeField(_("started"), null=True, blank=True)
    heartbeat_at = models.DateTimeField(
        _("last sign of life"), null=True, blank=True, help_text=_("A running run whose worker stopped goes stale.")
    )
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)
    host = models.CharField(_("host"), max_length=255, blank=True, help_text=_("The machine that executed it."))
    progress = models.CharField(_("progress"), max_length=255, blank=True)
    log = models.TextField(_("log"), blank=True)
    model_version = models.ForeignKey(
        ModelVersion,
        verbose_name=_("resulting version"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="retrain_runs",
    )

    class Meta:
        verbose_name = _("retrain run")
        verbose_name_plural = _("retrain runs")
        ordering = ["-created_at", "-id"]
        permissions = [("start_retrainrun", _("Can start a retrain run"))]
        constraints = [
            # The database itself refuses a second running run, on every host.
            models.UniqueConstraint(fields=["status"], condition=models.Q(status="running"), name="one_running_retrain")
        ]

    def __str__(self) -> str:
        return f"retrain #{self.pk} ({self.get_status_display()})"
