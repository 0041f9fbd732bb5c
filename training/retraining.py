"""The plain parts of `manage.py retrain`: the held-out split, the MNIST replay sample, the promotion gate,
the report and the one-run-at-a-time lock. No Django and no TensorFlow, so a dry run loads neither model nor framework.
"""

import fcntl
import hashlib
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HOLDOUT_BUCKETS = 5  # one reviewed drawing in five is held out to judge the retrained model
FEW_HELDOUT = 30  # below this many held-out drawings, one drawing moves accuracy by more than 3 points


class AlreadyRunning(RuntimeError):
    """Another retrain holds the lock."""


@dataclass(frozen=True)
class Score:
    """How one model does on one evaluation set."""

    size: int
    accuracy: float | None  # None when the set is empty
    loss: float | None = None
    per_class: list[float | None] | None = None  # accuracy per true digit


@dataclass(frozen=True)
class Decision:
    """Whether a retrained model may be served, and why."""

    passed: bool
    reasons: tuple[str, ...]


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


def replay_sample(x: np.ndarray, y: np.ndarray, size: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return `size` (x, y) pairs drawn without replacement; the same seed gives the same sample."""
    size = max(0, min(size, len(x)))
    pick = np.sort(np.random.default_rng(seed).choice(len(x), size=size, replace=False))
    return x[pick], y[pick]


def gate(*, heldout_before: Score, heldout_after: Score, mnist_before: Score, mnist_after: Score, mnist_margin: float) -> Decision:
    """Return whether the retrained model passes: not worse on held-out drawings, MNIST within the margin."""
    reasons = []
    passed = True
    if heldout_after.size == 0:
        reasons.append("no held-out reviewed drawings: only the MNIST check applies (label more drawings)")
    else:
        drop = heldout_before.accuracy - heldout_after.accuracy
        # Same drawings on both sides, so equal accuracies mean the same number right: no rounding slack needed.
        if drop > 0:
            passed = False
            reasons.append(
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
    change = mnist_after.accuracy - mnist_before.accuracy
    within = change >= -mnist_margin - 1e-12
    passed = passed and within
    reasons.append(
        f"MNIST test: {percent(mnist_before.accuracy, 2)} -> {percent(mnist_after.accuracy, 2)} "
        f"({100 * change:+.2f} points; the limit is -{100 * mnist_margin:.2f}), "
        + ("within the margin" if within else "dropped too far")
    )
    return Decision(passed, tuple(reasons))


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


def dataset_summary(sizes: dict[str, int], label_counts: Sequence[int]) -> list[str]:
    """Return lines describing what a run trains on: reviewed, skipped, train, held-out and replay counts."""
    labels = ", ".join(f"{digit}: {count}" for digit, count in enumerate(label_counts))
    return [
        f"reviewed drawings: {sizes['reviewed']} usable, {sizes['skipped']} skipped",
        f"  training part: {sizes['train']}   held out: {sizes['heldout']}   (by drawing id, one in {HOLDOUT_BUCKETS})",
        f"  labels: {labels}",
        f"MNIST replay digits mixed in: {sizes['replay']}",
    ]


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` for the block; raise AlreadyRunning if another process has it.

    The operating system drops a flock() when its process ends, however it ends, so a crashed run
    never leaves the lock behind. It only excludes processes on this machine.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "unknown"
            raise AlreadyRunning(
                f"Another retrain is running (process {holder}); wait for it to finish. "
                f"The lock ({path}) is released as soon as that process ends."
            ) from None
        file.seek(0)
        file.truncate()
        file.write(f"{os.getpid()}\n")
        file.flush()
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)
