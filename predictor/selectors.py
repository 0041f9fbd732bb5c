"""Read-only queries: a visitor's drawings, the active model, the review queue, the dataset and the dashboard."""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import numpy as np
from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.db.models import Count, F, Q, QuerySet

from predictor.imagefile import STORED_MAX_SIDE
from predictor.inference import NUM_CLASSES
from predictor.models import Drawing, ModelVersion
from predictor.preprocessing import preprocess

# Each condition takes the path from the queried model to a Drawing: "" for Drawing itself,
# "drawings__" to count a ModelVersion's drawings, so every page counts with the same definitions.


def low_confidence_q(prefix: str = "") -> Q:
    """Return the condition "the model was less sure than the review threshold"."""
    return Q(**{f"{prefix}confidence__lt": settings.DIGIT_LOW_CONFIDENCE})


def disputed_q(prefix: str = "") -> Q:
    """Return the condition "the visitor says the prediction is wrong"."""
    claim = f"{prefix}feedback_label"
    return Q(**{f"{claim}__isnull": False}) & ~Q(**{claim: F(f"{prefix}predicted_label")})


def review_queue_q(prefix: str = "") -> Q:
    """Return the condition for "needs review": unreviewed, and unsure or disputed by the visitor."""
    unreviewed = Q(**{f"{prefix}true_label__isnull": True, f"{prefix}is_excluded": False})
    return unreviewed & (low_confidence_q(prefix) | disputed_q(prefix))


def finetuning_dataset_q(prefix: str = "") -> Q:
    """Return the condition for the fine-tuning dataset: a reviewer label and not excluded."""
    return Q(**{f"{prefix}true_label__isnull": False, f"{prefix}is_excluded": False})


def mistake_q(prefix: str = "") -> Q:
    """Return the condition "a reviewer's label differs from the prediction"."""
    return Q(**{f"{prefix}true_label__isnull": False}) & ~Q(**{f"{prefix}true_label": F(f"{prefix}predicted_label")})


def unreviewed_q(prefix: str = "") -> Q:
    """Return the condition "no reviewer has looked at it yet": no reviewer label and not excluded."""
    return Q(**{f"{prefix}true_label__isnull": True, f"{prefix}is_excluded": False})


def reviewed_q(prefix: str = "") -> Q:
    """Return the condition "a reviewer has decided": a reviewer label, or excluded as not a digit."""
    return Q(**{f"{prefix}true_label__isnull": False}) | Q(**{f"{prefix}is_excluded": True})


def drawing_review_queue(*, drawings: QuerySet[Drawing] | None = None) -> QuerySet[Drawing]:
    """Return the drawings (of `drawings`, default all) that need a reviewer, least confident first."""
    drawings = Drawing.objects.all() if drawings is None else drawings
    return drawings.filter(review_queue_q()).order_by("confidence", "id")


def finetuning_dataset(*, drawings: QuerySet[Drawing] | None = None) -> QuerySet[Drawing]:
    """Return the drawings (of `drawings`, default all) that form the fine-tuning dataset, ordered by id."""
    drawings = Drawing.objects.all() if drawings is None else drawings
    return drawings.filter(finetuning_dataset_q()).order_by("id")


def json_object(value) -> dict:
    """Return `value` if it is a dict (an object in stored JSON), else an empty one."""
    return value if isinstance(value, dict) else {}


def recorded_share(value) -> float | None:
    """Return a share (0 to 1) read from stored JSON, or None if it is missing or not one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        return None  # also NaN, which no comparison admits
    return float(value)


def recorded_count(value) -> int | None:
    """Return a count read from stored JSON, or None if it is missing or not a whole number of at least 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


@dataclass(frozen=True)
class HeldoutScore:
    """What one retrain recorded on the reviewed drawings it held out: the new version's accuracy and its parent's.

    Both were measured in the same run on the very same drawings, so the change is the run's gain.
    """

    version: int  # the version the run made
    parent: int | None  # the version it was fine-tuned from
    accuracy: float | None  # the new version on the held-out drawings
    before: float | None  # its parent on the same drawings
    size: int | None

    @property
    def accuracy_percent(self) -> float | None:
        """Return the new version's accuracy in percent, or None if not recorded."""
        return None if self.accuracy is None else 100 * self.accuracy

    @property
    def before_percent(self) -> float | None:
        """Return the parent's accuracy in percent, or None if not recorded."""
        return None if self.before is None else 100 * self.before

    @property
    def change_points(self) -> float | None:
        """Return the gain in percentage points (negative: a loss), or None unless both are recorded."""
        if self.accuracy is None or self.before is None:
            return None
        return 100 * (self.accuracy - self.before)


def heldout_score(version: ModelVersion) -> HeldoutScore | None:
    """Return what the retrain that made `version` measured on its held-out drawings, or None if it recorded nothing.

    Reads the keys `manage.py retrain` writes; the parent's number comes from the record, else from
    `version.parent` (select it with the version). A set of no drawings measured nothing.
    """
    metrics = json_object(version.metrics)
    before = json_object(metrics.get("before"))
    size = recorded_count(metrics.get("heldout_size"))
    if size is None:
        size = recorded_count(json_object(json_object(version.training_data).get("sizes")).get("heldout"))
    accuracy, earlier = recorded_share(metrics.get("heldout_accuracy")), recorded_share(before.get("heldout_accuracy"))
    if size == 0 or (accuracy is None and earlier is None):
        return None
    parent = recorded_count(before.get("version"))
    if parent is None and version.parent is not None:
        parent = version.parent.version
    return HeldoutScore(version=version.version, parent=parent, accuracy=accuracy, before=earlier, size=size)


@dataclass
class ModelVersionStats:
    """How one model version did on the drawings it judged."""

    version: ModelVersion
    judged: int
    reviewed: int
    correct: int
    low_confidence: int
    disputed: int
    excluded: int
    # confusion[true_label][predicted_label] counts reviewed drawings.
    confusion: list[list[int]] = field(default_factory=lambda: [[0] * NUM_CLASSES for _ in range(NUM_CLASSES)])
    # Its own retrain's record on the drawings held out from it; None for the base model.
    heldout: HeldoutScore | None = None
    # The records of the runs fine-tuned from it: how it did on the drawings each of them held out.
    heldout_as_parent: list[HeldoutScore] = field(default_factory=list)

    @property
    def accuracy(self) -> float | None:
        """Return the share of reviewed drawings predicted right, or None before any review."""
        return self.correct / self.reviewed if self.reviewed else None

    @property
    def low_confidence_share(self) -> float | None:
        """Return the share of judged drawings below the review threshold, or None without drawings."""
        return self.low_confidence / self.judged if self.judged else None

    @property
    def accuracy_percent(self) -> float | None:
        """Return the accuracy on reviewed drawings in percent, or None before any review."""
        return None if self.accuracy is None else 100 * self.accuracy

    @property
    def low_confidence_percent(self) -> float | None:
        """Return the share of low-confidence predictions in percent, or None without drawings."""
        return None if self.low_confidence_share is None else 100 * self.low_confidence_share

    @property
    def mnist_test_percent(self) -> float | None:
        """Return the version's recorded MNIST test accuracy in percent, or None if it has none."""
        accuracy = recorded_share(json_object(self.version.metrics).get("mnist_test_accuracy"))
        return None if accuracy is None else 100 * accuracy

    @property
    def confusion_rows(self) -> list[tuple[int, int, list[tuple[int, int]]]]:
        """Return (true_label, row total, [(predicted_label, count), ...]) for each row of the confusion matrix."""
        return [(label, sum(row), list(enumerate(row))) for label, row in enumerate(self.confusion)]


def model_versions_with_counts(*, versions: QuerySet[ModelVersion] | None = None) -> QuerySet[Any]:
    """Return model versions annotated with counts of their drawings, in one query.

    judged: all; reviewed and correct: in the fine-tuning dataset, and predicted right; low_confidence,
    disputed (the visitor says wrong) and excluded.
    """
    versions = ModelVersion.objects.all() if versions is None else versions
    return versions.annotate(
        judged=Count("drawings"),
        reviewed=Count("drawings", filter=finetuning_dataset_q("drawings__")),
        correct=Count("drawings", filter=finetuning_dataset_q("drawings__") & ~mistake_q("drawings__")),
        low_confidence=Count("drawings", filter=low_confidence_q("drawings__")),
        disputed=Count("drawings", filter=disputed_q("drawings__")),
        excluded=Count("drawings", filter=Q(drawings__is_excluded=True)),
    )


def model_version_stats() -> list[ModelVersionStats]:
    """Return the review statistics and held-out records of every model version, newest first, in two queries."""
    versions = model_versions_with_counts(versions=ModelVersion.objects.select_related("parent"))
    stats = {
        version.id: ModelVersionStats(
            version=version,
            judged=version.judged,
            reviewed=version.reviewed,
            correct=version.correct,
            low_confidence=version.low_confidence,
            disputed=version.disputed,
            excluded=version.excluded,
            heldout=heldout_score(version),
        )
        for version in versions.order_by("-version")
    }
    for child in reversed(stats.values()):  # oldest first, so each parent lists its runs in order
        if child.heldout is not None and child.version.parent_id in stats:
            stats[child.version.parent_id].heldout_as_parent.append(child.heldout)
    cells = (
        finetuning_dataset()
        .order_by()
        .values_list("model_version_id", "true_label", "predicted_label")
        .annotate(count=Count("id"))
    )
    for version_id, true_label, predicted_label, count in cells:
        stats[version_id].confusion[true_label][predicted_label] = count
    return list(stats.values())


def review_counts() -> dict[str, int]:
    """Return {"drawings", "needs_review", "dataset"}: the sizes of everything, the queue and the dataset."""
    return Drawing.objects.aggregate(
        drawings=Count("id"),
        needs_review=Count("id", filter=review_queue_q()),
        dataset=Count("id", filter=finetuning_dataset_q()),
    )


def drawing_inputs(drawings: Iterable[Drawing]) -> Iterator[tuple[Drawing, np.ndarray | None, str]]:
    """Yield (drawing, its 28x28 uint8 input recomputed from the stored image, "") or (drawing, None, reason).

    The input comes from the stored image through the current preprocessing, exactly as serving would
    compute it today; a missing or unreadable image gives a reason instead of stopping the caller.
    """
    for drawing in drawings:
        try:
            with drawing.image.open("rb") as image:
                data = image.read()
            # A stored file was checked when it was accepted (or re-encoded from an older, larger one):
            # the stored copy's own bound applies, not today's limits on what a stranger may send.
            pixels = preprocess(data, max_pixels=STORED_MAX_SIDE**2, max_side=STORED_MAX_SIDE)
        except OSError as error:
            yield drawing, None, f"image {drawing.image.name!r} cannot be read ({error.strerror or error})"
        except ValueError as error:  # PreprocessingError, or a row without an image name
            yield drawing, None, str(error)
        else:
            yield drawing, pixels.astype(np.uint8), ""


def drawing_get(*, drawing_id: UUID | str, visitor: str | None, user: User | AnonymousUser | None = None) -> Drawing:
    """Return the drawing to the visitor who made it, or to `user` if staff with predictor.view_drawing.

    Anyone else gets Drawing.DoesNotExist, as if it did not exist: who made which drawing is not told.
    """
    drawings = Drawing.objects.select_related("model_version")
    if user is not None and user.is_staff and user.has_perm("predictor.view_drawing"):
        return drawings.get(id=drawing_id)
    if visitor is None:
        raise Drawing.DoesNotExist("A visitor without drawings asked for one.")
    return drawings.get(id=drawing_id, visitor=visitor)


def drawing_history(*, visitor: str | None) -> QuerySet[Drawing]:
    """Return this visitor's drawings, newest first."""
    if visitor is None:
        return Drawing.objects.none()
    return Drawing.objects.filter(visitor=visitor).select_related("model_version").order_by("-created_at")


def model_version_ancestors(*, version: ModelVersion) -> list[ModelVersion]:
    """Return the versions `version` was retrained from: its parent first, the first version of its line last.

    One query however deep the line; each has only id, version, is_active and parent_id loaded.
    """
    versions = ModelVersion.objects.only("id", "version", "is_active", "parent_id").in_bulk()
    chain: list[ModelVersion] = []
    seen = {version.id}
    parent_id = version.parent_id
    while parent_id is not None and parent_id in versions and parent_id not in seen:
        seen.add(parent_id)
        chain.append(versions[parent_id])
        parent_id = versions[parent_id].parent_id
    return chain


def model_version_active_id() -> int | None:
    """Return the id of the active ModelVersion (one indexed query), or None when none is active."""
    return ModelVersion.objects.filter(is_active=True).values_list("id", flat=True).first()


def model_version_get(*, version_id: int) -> ModelVersion | None:
    """Return the ModelVersion with this id, or None if it no longer exists."""
    return ModelVersion.objects.filter(id=version_id).first()
