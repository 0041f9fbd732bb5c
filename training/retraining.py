"""The plain parts of `manage.py retrain`: the dataset split by drawing id, the MNIST replay sample, the scores,
the promotion gate and the report. No Django and no TensorFlow, so a dry run loads neither model nor framework.
(One run at a time, and each run's record, are in training/runs.py.)
"""

import hashlib
import os
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from predictor.inference import NUM_CLASSES, Classifier
from predictor.preprocessing import IMAGE_SIZE
from training.evaluate import evaluate

HOLDOUT_BUCKETS = 5  # one reviewed drawing in five is held out to judge the retrained model
FEW_HELDOUT = 30  # below this many held-out drawings, one drawing moves accuracy by more than 3 points
# No digit may lose more than this share of its MNIST test accuracy (about 10 of its ~1,000 test images):
# a model can gain on the reviews and keep its overall MNIST accuracy while forgetting one digit.
CLASS_MARGIN = 0.01
# Above this total variation distance, the labels of the new reviews look unlike the parent's: at least
# this share of them would have to change digit to match. Reviews of one site drift slowly; a sudden
# jump is worth a look (a reviewer relabelling a whole digit, or deliberately skewed labels).
LABEL_SHIFT_LIMIT = 0.3


@dataclass(frozen=True)
class Mix:
    """One candidate model of a run: how the fine-tune mixes the reviewed drawings, and how far its result is taken."""

    reviewed_share: float  # FinetuneConfig.reviewed_share: share of each batch from the reviewed drawings, 0 = pooled
    weight: float = 1.0  # the served weights: weight x the fine-tuned ones + (1 - weight) x the starting model's

    @property
    def name(self) -> str:
        """Return the mix in words, as the report and a version's notes give it."""
        if self.reviewed_share <= 0:
            name = "reviewed drawings pooled with the replay digits"
        else:
            name = f"{self.reviewed_share:.0%} of each batch from the reviewed drawings"
        if self.weight < 1:
            name += f", {self.weight:.0%} of the way from the starting weights to the fine-tune's"
        return name


# The candidates a run tries in turn, each only if the gate refused the one before. Half of every batch
# from the reviewed drawings learns a new hand best, but on a hand far from MNIST it can cost MNIST more
# than the gate allows; most of what it learnt stays, at about half the cost, 70% of the way from the
# starting weights (no second fit: the same fine-tune, averaged with its start); pooled with the replay,
# the reviewed drawings cost MNIST least. docs/retraining.md measures all three.
MIXES = (Mix(0.5), Mix(0.5, 0.7), Mix(0.0))


class Reviewed(Protocol):
    """What the dataset reads of a reviewed drawing (a predictor.models.Drawing)."""

    id: Any
    true_label: int | None


@dataclass(frozen=True)
class Part:
    """Reviewed drawings as model inputs: their ids, uint8 (N, 28, 28) pixels and labels."""

    ids: list[str]
    x: np.ndarray
    y: np.ndarray


@dataclass(frozen=True)
class Dataset:
    """The usable reviewed drawings of one run, split by id into a training and a held-out part, and the skipped ones."""

    train: Part
    heldout: Part
    skipped: list[tuple[str, str]]  # (drawing id, why it cannot be used)

    @property
    def reviewed(self) -> int:
        """Return the number of usable reviewed drawings."""
        return len(self.train.ids) + len(self.heldout.ids)

    def sizes(self) -> dict[str, int]:
        """Return the counts a version records: usable reviewed, skipped, training part and held-out part."""
        return {
            "reviewed": self.reviewed,
            "skipped": len(self.skipped),
            "train": len(self.train.ids),
            "heldout": len(self.heldout.ids),
        }

    def label_counts(self, *, excluding: Collection[str] = frozenset()) -> list[int]:
        """Return how many usable drawings, except those whose id is in `excluding`, carry each label."""
        labels = [
            label
            for part in (self.train, self.heldout)
            for drawing_id, label in zip(part.ids, part.y)
            if drawing_id not in excluding
        ]
        return np.bincount(np.array(labels, dtype=np.int64), minlength=NUM_CLASSES).tolist()


@dataclass(frozen=True)
class Score:
    """How one model does on one evaluation set."""

    size: int
    accuracy: float | None  # None when the set is empty
    loss: float | None = None
    per_class: list[float | None] | None = None  # accuracy per true digit
    confusion: list[list[int]] | None = None  # counts: row = true digit, column = predicted


@dataclass(frozen=True)
class Scores:
    """How one model does on each evaluation set of a run."""

    heldout: Score  # the held-out reviewed drawings
    mnist: Score  # MNIST test
    train: Score  # the training part of the reviewed drawings

    def accuracies(self) -> dict[str, float | None]:
        """Return the accuracies under their keys in a version's metrics."""
        return {
            "heldout_accuracy": self.heldout.accuracy,
            "mnist_test_accuracy": self.mnist.accuracy,
            "train_accuracy": self.train.accuracy,
        }


@dataclass(frozen=True)
class LabelShift:
    """How far the labels of the reviews new since the parent's run are from the labels that run trained on."""

    since: str  # the parent, e.g. "v3"
    reference: str  # what the new labels were compared with: the parent ("v3"), or "uniform" if it recorded none
    new_reviews: int
    distance: float | None  # total variation distance, 0 (same shares) to 1; None without new reviews
    limit: float
    warning: str | None  # set when distance > limit

    def describe(self) -> str:
        """Return one line giving the figure and what it was measured against."""
        if self.distance is None:
            return f"label shift: no reviews new since {self.since}, nothing to compare"
        return (
            f"label shift: the labels of the {self.new_reviews} reviews new since {self.since} are "
            f"{self.distance:.2f} (total variation) from {reference_name(self)}; the warning limit is {self.limit:.2f}"
        )


@dataclass(frozen=True)
class Decision:
    """Whether a retrained model may be served, why, and the figures it was decided on."""

    reasons: tuple[str, ...]  # every check's outcome, in order
    refusals: tuple[str, ...]  # those of the reasons that refuse the model; none: it passes
    class_deltas: tuple[float | None, ...]  # MNIST test accuracy change per digit, after - before
    worst_class: int | None  # the digit whose MNIST test accuracy fell most (None if none fell)
    label_shift: LabelShift | None = None

    @property
    def passed(self) -> bool:
        """Return True if no check refused the model."""
        return not self.refusals

    @property
    def worst_class_delta(self) -> float | None:
        """Return the MNIST test accuracy change of the digit that fell most (None if none fell)."""
        return None if self.worst_class is None else self.class_deltas[self.worst_class]

    @property
    def warnings(self) -> tuple[str, ...]:
        """Return what deserves a look even though it does not decide the verdict."""
        return () if self.label_shift is None or self.label_shift.warning is None else (self.label_shift.warning,)

    def to_metrics(self) -> dict[str, Any]:
        """Return the decision as JSON-ready values for the "gate" part of a version's metrics."""
        return {
            "passed": self.passed,
            "reasons": list(self.reasons),
            "warnings": list(self.warnings),
            "class_deltas": list(self.class_deltas),
            "worst_class": self.worst_class,
            "worst_class_delta": self.worst_class_delta,
            "label_shift": None if self.label_shift is None else asdict(self.label_shift),
        }


def is_held_out(drawing_id: object) -> bool:
    """Return True if the drawing belongs to the held-out part; the answer never changes for an id."""
    # A hash of the id, not a random draw: a drawing stays on its side of the split in every run,
    # so a model is never judged on a drawing an earlier version was trained on.
    digest = hashlib.sha256(str(drawing_id).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % HOLDOUT_BUCKETS == 0


def split_by_id(ids: Sequence[object]) -> tuple[np.ndarray, np.ndarray]:
    """Return (train indices, held-out indices) into `ids`."""
    held_out = np.array([is_held_out(drawing_id) for drawing_id in ids], dtype=bool)
    return np.flatnonzero(~held_out), np.flatnonzero(held_out)


def build_dataset(inputs: Iterable[tuple[Reviewed, np.ndarray | None, str]]) -> Dataset:
    """Return the Dataset of (drawing, uint8 28x28 input or None, reason) triples, as selectors.drawing_inputs yields."""
    ids, images, labels, skipped = [], [], [], []
    for drawing, pixels, reason in inputs:
        if pixels is None:
            skipped.append((str(drawing.id), reason))
            continue
        ids.append(str(drawing.id))
        images.append(pixels)
        labels.append(drawing.true_label)
    x = np.stack(images) if images else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    y = np.array(labels, dtype=np.uint8)
    train, heldout = split_by_id(ids)
    return Dataset(
        train=Part([ids[i] for i in train], x[train], y[train]),
        heldout=Part([ids[i] for i in heldout], x[heldout], y[heldout]),
        skipped=skipped,
    )


def replay_sample(x: np.ndarray, y: np.ndarray, size: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return `size` (x, y) pairs drawn without replacement; the same seed gives the same sample."""
    size = max(0, min(size, len(x)))
    pick = np.sort(np.random.default_rng(seed).choice(len(x), size=size, replace=False))
    return x[pick], y[pick]


def score(tflite: Path, dataset: Dataset, x_test: np.ndarray, y_test: np.ndarray) -> Scores:
    """Return the Scores of a .tflite model, run as it is served, on the dataset's two parts and MNIST test."""
    classifier = _served(tflite)
    return Scores(
        heldout=_score(classifier, dataset.heldout.x, dataset.heldout.y),
        mnist=_score(classifier, x_test, y_test),
        train=_score(classifier, dataset.train.x, dataset.train.y),
    )


def score_mnist(tflite: Path, x_test: np.ndarray, y_test: np.ndarray) -> Score:
    """Return the Score of a .tflite model, run as it is served, on MNIST test alone."""
    return _score(_served(tflite), x_test, y_test)


def _served(tflite: Path) -> Classifier:
    """Return the model of a .tflite file as the site serves it."""
    return Classifier(tflite, num_threads=os.cpu_count() or 1)


def _score(classifier: Classifier, x: np.ndarray, y: np.ndarray) -> Score:
    """Return how `classifier` does on x and y (an empty Score when there are none)."""
    if len(y) == 0:
        return Score(0, None)
    result = evaluate(classifier, x, y)
    return Score(len(y), result["accuracy"], result["loss"], result["per_class_accuracy"], result["confusion"])


def measure_label_shift(
    new_counts: Sequence[int], previous_counts: Sequence[int] | None, *, since: str, limit: float = LABEL_SHIFT_LIMIT
) -> LabelShift:
    """Return the LabelShift of the new reviews' label counts from the parent's (from a uniform spread when None).

    The distance is half the sum over digits of the difference in shares: the share of the new
    labels that would have to move to another digit for the two spreads to match.
    """
    new = np.asarray(new_counts, dtype=np.float64)
    reference = "uniform" if previous_counts is None else since
    if new.sum() == 0:
        return LabelShift(since, reference, 0, None, limit, None)
    expected = np.ones(NUM_CLASSES) if previous_counts is None else np.asarray(previous_counts, dtype=np.float64)
    new_share, expected_share = new / new.sum(), expected / expected.sum()
    distance = float(np.abs(new_share - expected_share).sum() / 2)
    shift = LabelShift(since, reference, int(new.sum()), distance, limit, None)
    if distance <= limit:
        return shift
    digit = int(np.argmax(new_share - expected_share))
    where = "a uniform spread" if previous_counts is None else f"{since}'s labels"
    warning = (
        f"label shift {distance:.2f} > {limit:.2f}: {digit} is {percent(new_share[digit])} of the "
        f"{shift.new_reviews} reviews new since {since}, against {percent(expected_share[digit])} in {where}; "
        "check those labels before trusting this model"
    )
    return replace(shift, warning=warning)


def reference_name(shift: LabelShift) -> str:
    """Return what the new labels of `shift` were compared with, in words."""
    if shift.reference == "uniform":
        return f"a uniform spread ({shift.since} recorded no label counts)"
    return f"{shift.reference}'s labels"


def gate(
    *,
    heldout_before: Score,
    heldout_after: Score,
    mnist_before: Score,
    mnist_after: Score,
    mnist_margin: float,
    class_margin: float = CLASS_MARGIN,
    label_shift: LabelShift | None = None,
    mnist_first: Score | None = None,
    first_name: str = "the first version",
) -> Decision:
    """Return whether the retrained model passes: not worse on held-out drawings, MNIST and each digit within margins.

    The MNIST checks are made against the current model (`mnist_before`) and, when given, against the
    first version of its line (`mnist_first`, named `first_name`), so that retrain after retrain cannot
    each take a little of MNIST until much is gone. A sharp label shift (`label_shift.warning`) is
    reported with the decision but does not decide it.
    """
    reasons, refusals = [], []

    def refuse(reason: str) -> None:
        reasons.append(reason)
        refusals.append(reason)

    if heldout_after.size == 0:
        reasons.append("no held-out reviewed drawings: only the MNIST checks apply (label more drawings)")
    else:
        drop = heldout_before.accuracy - heldout_after.accuracy
        # Same drawings on both sides, so equal accuracies mean the same number right: no rounding slack needed.
        if drop > 0:
            refuse(
                f"held-out reviewed drawings: {percent(heldout_before.accuracy)} -> {percent(heldout_after.accuracy)}, "
                f"worse than the current model"
            )
        else:
            reasons.append(
                f"held-out reviewed drawings: {percent(heldout_before.accuracy)} -> {percent(heldout_after.accuracy)}, "
                f"not worse"
            )
        if heldout_after.size < FEW_HELDOUT:
            reasons.append(
                f"only {heldout_after.size} held-out drawings: one drawing moves their accuracy by "
                f"{100 / heldout_after.size:.1f} points, so this check says little yet"
            )
    deltas, worst = _mnist_checks(mnist_before, mnist_after, mnist_margin, class_margin, "", reasons, refuse)
    if mnist_first is not None:
        _mnist_checks(mnist_first, mnist_after, mnist_margin, class_margin, f" against {first_name}", reasons, refuse)
    return Decision(tuple(reasons), tuple(refusals), deltas, worst, label_shift)


def _mnist_checks(
    before: Score,
    after: Score,
    margin: float,
    class_margin: float,
    against: str,
    reasons: list[str],
    refuse: Callable[[str], None],
) -> tuple[tuple[float | None, ...], int | None]:
    """Add the MNIST test checks of `after` against `before` to `reasons` (refusing through `refuse`).

    Return the change of each digit and the digit that fell most (None if none fell).
    """
    change = after.accuracy - before.accuracy
    overall = (
        f"MNIST test{against}: {percent(before.accuracy, 2)} -> {percent(after.accuracy, 2)} "
        f"({100 * change:+.2f} points; the limit is -{100 * margin:.2f}), "
    )
    if change >= -margin - 1e-12:
        reasons.append(overall + "within the margin")
    else:
        refuse(overall + "dropped too far")

    # Reviews labelled to teach one digit as another can raise held-out accuracy (the held-out reviews
    # carry the same labels) while MNIST overall hardly moves; the digit they take from does fall.
    deltas = tuple(
        None if was is None or now is None else now - was for was, now in zip(before.per_class, after.per_class)
    )
    fell = {digit: delta for digit, delta in enumerate(deltas) if delta is not None and delta < 0}
    worst = min(fell, key=fell.get) if fell else None
    too_far = [digit for digit, delta in fell.items() if delta < -class_margin - 1e-12]
    for digit in too_far:
        refuse(
            f"MNIST test digit {digit}{against}: {percent(before.per_class[digit], 2)} -> "
            f"{percent(after.per_class[digit], 2)} ({100 * deltas[digit]:+.2f} points; the limit per digit "
            f"is -{100 * class_margin:.2f}), dropped too far"
        )
    if not too_far:
        largest = (
            "no digit fell"
            if worst is None
            else f"the largest fall is digit {worst}, {100 * deltas[worst]:+.2f} points"
        )
        reasons.append(
            f"MNIST test per digit{against}: {largest} (the limit is -{100 * class_margin:.2f}), within the margin"
        )
    return deltas, worst


def percent(value: float | None, digits: int = 1) -> str:
    """Return a share as a percentage, or a dash when it is unknown."""
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def score_table(rows: Sequence[tuple[str, Score, Score | None]], *, before_name: str) -> list[str]:
    """Return aligned lines comparing each evaluation set before and after (after None: not trained yet)."""
    header = f"{'evaluation set':<28}{'size':>7}{before_name:>12}{'after':>10}{'change':>10}"
    lines = [header]
    for name, before, after in rows:
        digits = 2 if before.size >= 1000 else 1
        line = f"{name:<28}{before.size:>7}{percent(before.accuracy, digits):>12}"
        if after is not None:
            line += f"{percent(after.accuracy, digits):>10}"
            if before.accuracy is not None and after.accuracy is not None:
                line += f"{100 * (after.accuracy - before.accuracy):>+9.{digits}f}p"
        lines.append(line)
    return lines


def dataset_summary(dataset: Dataset, *, replay: int) -> list[str]:
    """Return lines describing what a run trains on: reviewed, skipped, train, held-out, labels and replay."""
    sizes = dataset.sizes()
    labels = ", ".join(f"{digit}: {count}" for digit, count in enumerate(dataset.label_counts()))
    return [
        f"reviewed drawings: {sizes['reviewed']} usable, {sizes['skipped']} skipped",
        f"  training part: {sizes['train']}   held out: {sizes['heldout']}   (by drawing id, one in {HOLDOUT_BUCKETS})",
        f"  labels: {labels}",
        f"MNIST replay digits mixed in: {replay}",
    ]
