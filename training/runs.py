"""Retrain runs from start to end: taking one, its progress, heartbeat and log, and its outcome.

`manage.py retrain` records every run it executes as a RetrainRun, and the task worker executes
queued ones (`retrain_run_execute`, called by `predictor.tasks.retrain_run_execute`) through that
same command. One run at a time on every host: the database refuses a second running RetrainRun
(the partial unique index `one_running_retrain`). A run whose process died stays "running"; once its
last sign of life is older than STALE_AFTER, the next run to start marks it failed ("worker
stopped") and takes its place.
"""

import contextlib
import re
import socket
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from django.core.management import CommandError, call_command
from django.db import IntegrityError, transaction
from django.db.models import Q, TextField, Value
from django.db.models.functions import Concat
from django.utils import timezone

from predictor import selectors, tasks
from predictor.models import RetrainRun

# A run writes a sign of life at each step and each line it reports: reading the reviewed drawings
# (every 500), loading, scoring, every epoch, exporting, evaluating, recording. On a 2-core machine
# the longest of those (an epoch, or scoring 10,000 MNIST digits) takes well under a minute with
# the default settings, and a few minutes with 100,000 reviewed drawings; a quarter of an hour of
# silence means the process is gone.
STALE_AFTER = timedelta(minutes=15)
# While another run is running, a queued run's task is tried again after this long.
RETRY_AFTER = timedelta(minutes=1)
HEARTBEAT_EVERY = 500  # reviewed drawings read between two signs of life
HOST = socket.gethostname()
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

Status = RetrainRun.Status


class AlreadyRunning(RuntimeError):
    """Another run is running, on this host or another."""


class NotQueued(RuntimeError):
    """The run asked for is no longer queued: another worker took it, or it ended."""


class RunStopped(RuntimeError):
    """This run went stale and another host marked it failed: it must stop."""


def when(moment: datetime | None) -> str:
    """Return a moment as "2026-12-02 11:40:05 UTC", or "never"."""
    return "never" if moment is None else f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def log_with(text: str) -> Concat:
    """Return a run's log with `text` appended, as an expression: the database appends, so no line is lost to a race."""
    return Concat("log", Value(text), output_field=TextField())


def describe_running() -> str:
    """Return why a run cannot start now: which run is running, where, and since when."""
    running = RetrainRun.objects.filter(status=Status.RUNNING).first()
    if running is None:  # it ended between the refusal and this read
        return "Another retrain was running; try again."
    return (
        f"Another retrain is running: #{running.pk} on {running.host or 'an unknown host'}, started "
        f"{when(running.started_at)}, last sign of life {when(running.heartbeat_at)}. Wait for it to end; "
        f"if its process is gone, it is marked failed {int(STALE_AFTER.total_seconds() // 60)} minutes after "
        "its last sign of life."
    )


def fail_stale_runs(*, now: datetime | None = None) -> list[int]:
    """Return the ids of the running runs silent for longer than STALE_AFTER, now marked failed ("worker stopped")."""
    now = now or timezone.now()
    cutoff = now - STALE_AFTER
    stale = RetrainRun.objects.filter(status=Status.RUNNING).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff)
    )
    failed = []
    for run in stale:
        note = (
            f"\nWorker stopped: no sign of life from {run.host or 'its host'} since {when(run.heartbeat_at)}; "
            f"marked failed by {HOST} at {when(now)}.\n"
        )
        # Still running and still silent: only one of two hosts doing this at once writes the note.
        if RetrainRun.objects.filter(id=run.pk, status=Status.RUNNING, heartbeat_at=run.heartbeat_at).update(
            status=Status.FAILED, finished_at=now, progress="worker stopped", log=log_with(note)
        ):
            failed.append(run.pk)
    return failed


def retrain_run_take(*, run: RetrainRun) -> RetrainRun:
    """Return `run`, taken from the queue: running on this host.

    Raises AlreadyRunning if another run is running (a stale one is marked failed first), NotQueued
    if `run` is no longer queued.
    """
    now = timezone.now()
    with transaction.atomic():
        fail_stale_runs(now=now)
        try:
            with transaction.atomic():
                taken = RetrainRun.objects.filter(id=run.pk, status=Status.QUEUED).update(
                    status=Status.RUNNING, started_at=now, heartbeat_at=now, host=HOST[:255], progress="starting"
                )
        except IntegrityError:
            # The partial unique index one_running_retrain: the database's word, whichever host asked.
            raise AlreadyRunning(describe_running()) from None
    run.refresh_from_db()
    if not taken:
        raise NotQueued(f"Retrain #{run.pk} is no longer queued ({run.get_status_display()}): nothing to do.")
    return run


def retrain_run_begin(*, source: str, options: dict[str, Any]) -> RetrainRun:
    """Return a new run, already running on this host (a command executing in-process); raise AlreadyRunning if refused."""
    with transaction.atomic():
        run = RetrainRun.objects.create(source=source, options=options)
        # Refused, the whole block rolls back: a refused command leaves no row behind.
        return retrain_run_take(run=run)


def retrain_run_beat(*, run: RetrainRun, progress: str | None = None) -> None:
    """Record a sign of life of `run` (and its progress, if given); raise RunStopped if it was marked failed meanwhile."""
    fields: dict[str, Any] = {"heartbeat_at": timezone.now()}
    if progress is not None:
        fields["progress"] = progress[:255]
    if not RetrainRun.objects.filter(id=run.pk, status=Status.RUNNING).update(**fields):
        raise RunStopped(
            f"Retrain #{run.pk} was marked failed by another host (no sign of life for {STALE_AFTER}): stopping."
        )


def retrain_run_append(*, run: RetrainRun, text: str) -> None:
    """Append `text` to the log of `run`, a sign of life too."""
    RetrainRun.objects.filter(id=run.pk).update(log=log_with(text), heartbeat_at=timezone.now())


def retrain_run_finish(*, run: RetrainRun, status: str, progress: str = "", version: Any = None) -> RetrainRun:
    """Return `run` ended with `status` (passed, failed_gate or failed), its resulting version and a last progress line."""
    # Written even if the run was marked stale meanwhile: what it really did matters more.
    RetrainRun.objects.filter(id=run.pk).update(
        status=status, finished_at=timezone.now(), progress=progress[:255], model_version=version
    )
    run.refresh_from_db()
    return run


def retrain_run_wait(*, run: RetrainRun, reason: str) -> None:
    """Leave `run` queued and try its task again after RETRY_AFTER, saying why in its progress (and once in its log)."""
    progress = f"waiting: {reason}"[:255]
    if run.progress != progress:
        RetrainRun.objects.filter(id=run.pk, status=Status.QUEUED).update(
            progress=progress, log=log_with(f"Waiting: {reason}\n")
        )
    tasks.retrain_run_execute.using(run_after=timezone.now() + RETRY_AFTER).enqueue(run.pk)


def retrain_run_execute(*, run_id: int, stdout: TextIO | None = None) -> str:
    """Return the status the queued run `run_id` ended with, having executed it with `manage.py retrain` here.

    Another run running leaves this one queued and tries again later; one no longer queued is left alone.
    """
    run = RetrainRun.objects.get(id=run_id)
    try:
        run = retrain_run_take(run=run)
    except NotQueued as error:
        return str(error)
    except AlreadyRunning as error:
        retrain_run_wait(run=run, reason=str(error))
        return f"still queued: {error}"
    # A failure the command explains (too few reviewed drawings, say) is in the run's log and status: the
    # task did its work. Anything unexpected propagates, and the task result keeps its traceback.
    with contextlib.suppress(CommandError):
        # The same code as a run from the command line; it records its output, progress and end in the run.
        call_command("retrain", run=run.pk, stdout=stdout or sys.stdout, **run.options)
    run.refresh_from_db()
    return run.status


def reviews_since_last_run() -> tuple[int, RetrainRun | None]:
    """Return how many drawings of the fine-tuning dataset were reviewed since the last finished run started, and that run.

    A finished run is one that passed or failed the gate; with none, every review counts. A review
    counts by when it was made, so a relabelled drawing counts again.
    """
    last = (
        RetrainRun.objects.filter(status__in=[Status.PASSED, Status.FAILED_GATE], started_at__isnull=False)
        .order_by("-started_at")
        .first()
    )
    reviews = selectors.finetuning_dataset()
    if last is not None:
        # From its start, not its end: reviews made while it ran were not in its dataset.
        reviews = reviews.filter(reviewed_at__gte=last.started_at)
    return reviews.count(), last


def clean_line(line: str) -> str:
    """Return a line of terminal output as a log keeps it: no colour codes, only the last state of a progress bar."""
    line = ANSI_ESCAPE.sub("", line).replace("\b", "")
    return line.rsplit("\r", 1)[-1]


class RunLog:
    """A text stream that echoes what is written and appends each complete line to the log of a run.

    `on_line`, if given, is called with each complete line (the command reads Keras's "Epoch 3/5"
    lines from it to report progress). Not an io.TextIOBase, whose finaliser would close it, and
    so write to the database, whenever it happened to be garbage-collected.
    """

    def __init__(self, run: RetrainRun, *, echo: TextIO, on_line: Callable[[str], None] | None = None) -> None:
        self.run = run
        self.echo = echo
        self.on_line = on_line
        self.pending = ""

    def isatty(self) -> bool:
        # Lets the command colour what a terminal shows; the log itself gets the text without colour codes.
        return bool(getattr(self.echo, "isatty", lambda: False)())

    def write(self, text: str) -> int:
        self.echo.write(text)
        self.pending += text
        if "\n" in self.pending:
            complete, _, self.pending = self.pending.rpartition("\n")
            lines = [clean_line(line) for line in complete.split("\n")]
            retrain_run_append(run=self.run, text="".join(f"{line}\n" for line in lines))
            if self.on_line is not None:
                for line in lines:
                    self.on_line(line)
        return len(text)

    def flush(self) -> None:
        self.echo.flush()

    def close(self) -> None:
        """Append what is left of an unfinished last line."""
        if self.pending:
            retrain_run_append(run=self.run, text=clean_line(self.pending) + "\n")
            self.pending = ""

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
