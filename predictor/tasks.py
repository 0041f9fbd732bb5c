"""Retraining as a queued job: any host asks for a run, the one task worker executes it.

`retrain_run_request` records a queued RetrainRun and enqueues `retrain_run_execute`, which
`manage.py db_worker` (django-tasks-db: the queue is a table of the site's database) executes on a
host with the training packages installed. How a run is taken, watched and ended is in
`training/runs.py`.
"""

from functools import partial
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django_tasks import task

from predictor.models import RetrainRun

# What a queued run may ask of `manage.py retrain`: its option names as they arrive in handle().
RUN_OPTIONS = frozenset(
    {
        "epochs",
        "replay",
        "reviewed_share",
        "min_examples",
        "mnist_margin",
        "class_margin",
        "seed",
        "start",
        "no_activate",
        "force",
    }
)


class RetrainAlreadyQueued(Exception):
    """A run is already waiting for the worker."""


@transaction.atomic
def retrain_run_request(*, requested_by: User | None, source: str, options: dict[str, Any]) -> RetrainRun:
    """Return a new queued RetrainRun, whose task is enqueued when the transaction commits.

    Refused (RetrainAlreadyQueued) while another run waits: it will train on every review made
    before it starts, so a second one would only repeat it.
    """
    unknown = set(options) - RUN_OPTIONS
    if unknown:
        raise ValueError(f"Unknown retrain options: {', '.join(sorted(unknown))}.")
    if options.get("force") and options.get("no_activate"):
        raise ValueError("force and no_activate cannot be combined.")
    waiting = RetrainRun.objects.filter(status=RetrainRun.Status.QUEUED).first()
    if waiting is not None:
        raise RetrainAlreadyQueued(
            f"Retrain #{waiting.pk} is already queued; it will train on every review made before it starts."
        )
    run = RetrainRun.objects.create(requested_by=requested_by, source=source, options=options)
    # After the commit: a worker must never take a task whose run it cannot see yet.
    transaction.on_commit(partial(retrain_run_execute.enqueue, run.pk))
    return run


@task()
def retrain_run_execute(run_id: int) -> str:
    """Return the status the queued retrain run `run_id` ended with (or why it did not start), having executed it."""
    # The training code is imported when a worker executes the task, never when this module is
    # imported: predictor does not depend on training, so the admin and the web workers (the serving
    # install, without TensorFlow) can enqueue a run, and only the worker's host needs the training packages.
    from training import runs

    return runs.retrain_run_execute(run_id=run_id)
