import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError
from django.utils import timezone
from django_tasks_db.management.commands.db_worker import Worker
from django_tasks_db.models import DBTaskResult

from predictor import services
from predictor.models import ModelVersion, RetrainRun
from predictor.tasks import retrain_run_execute, retrain_run_request
from training import runs
from training.tests.test_retrain import reviewed  # noqa: F401 (a fixture)

Status = RetrainRun.Status
# As training/tests/test_retrain.py's TINY, with two epochs so that Keras reports each one.
TINY_OPTIONS = {"epochs": 2, "replay": 200, "min_examples": 10, "mnist_margin": 0.02}


def retrain(*arguments):
    """Return the stdout of `manage.py retrain`."""
    out = io.StringIO()
    call_command("retrain", *arguments, stdout=out)
    return out.getvalue()


def running_run(*, silent_for=timedelta(0), host="trainer-2"):
    """Return a run running on `host` whose last sign of life was `silent_for` ago."""
    last = timezone.now() - silent_for
    return RetrainRun.objects.create(
        status=Status.RUNNING, source="admin", host=host, started_at=last, heartbeat_at=last
    )


def run_worker():
    """Execute every task that is due, as `manage.py db_worker --batch` does, in this process."""
    Worker(
        queue_names=["default"],
        interval=0,
        batch=True,
        backend_name="default",
        startup_delay=False,
        max_tasks=None,
        worker_id="test-worker",
        excluded_queue_names=[],
    ).run()


@pytest.mark.django_db(transaction=True)
def test_a_queued_run_is_executed_by_the_worker_and_ends_with_its_log_and_version(reviewed, monkeypatch):  # noqa: F811
    seen = []
    real_beat = runs.retrain_run_beat

    def beat(*, run, progress=None):
        seen.append(progress)
        real_beat(run=run, progress=progress)

    monkeypatch.setattr(runs, "retrain_run_beat", beat)
    # Committed at once (transaction=True), so the task is in the queue as after a real request.
    run = retrain_run_request(requested_by=None, source="admin", options=TINY_OPTIONS)
    task = DBTaskResult.objects.get()
    assert task.task_path == "predictor.tasks.retrain_run_execute" and task.args_kwargs["args"] == [run.pk]
    assert RetrainRun.objects.get(id=run.pk).status == Status.QUEUED

    run_worker()

    run.refresh_from_db()
    new = ModelVersion.objects.get(version=2)
    assert run.status == Status.PASSED and run.model_version == new and new.is_active
    assert run.host == runs.HOST and run.started_at <= run.heartbeat_at <= run.finished_at
    assert run.progress == "version 2 passed the gate and is served"
    # The command's report and Keras's epoch lines, without a progress bar's redraws.
    assert run.log.startswith(f"Retrain #{run.pk} on {runs.HOST} (admin).")
    assert "Epoch 2/2" in run.log and "Gate passed" in run.log and "Version 2 is now active" in run.log
    assert "\b" not in run.log and "\r" not in run.log
    assert [p for p in seen if p.startswith("fine-tuning")] == ["fine-tuning: epoch 1/2", "fine-tuning: epoch 2/2"]
    assert "evaluating the new model" in seen and "recording the new version" in seen
    task.refresh_from_db()
    assert task.status == "SUCCESSFUL" and task.return_value == Status.PASSED


@pytest.mark.django_db
def test_a_queued_run_that_cannot_train_ends_failed_and_says_why(make_drawing, admin_user):
    services.drawing_relabel(drawings=[make_drawing() for _ in range(3)], true_label=5, reviewer=admin_user)
    run = retrain_run_request(requested_by=admin_user, source="admin", options={})

    assert retrain_run_execute.call(run.pk) == Status.FAILED

    run.refresh_from_db()
    assert run.finished_at and run.model_version is None and ModelVersion.objects.get().is_active
    assert run.log.startswith(f"Retrain #{run.pk} on {runs.HOST} (admin, asked for by {admin_user.username}).")
    assert run.log.rstrip().endswith("or lower --min-examples.") and run.progress.startswith("Only 3 reviewed")


@pytest.mark.django_db
def test_a_queued_run_waits_while_another_is_running(model_version):
    running = running_run()
    queued = RetrainRun.objects.create(source="admin")

    answer = runs.retrain_run_execute(run_id=queued.pk)

    queued.refresh_from_db()
    assert answer.startswith("still queued") and queued.status == Status.QUEUED
    assert queued.progress.startswith(f"waiting: Another retrain is running: #{running.pk} on trainer-2")
    assert queued.log.count("Waiting:") == 1
    # Its task comes back after RETRY_AFTER.
    retry = DBTaskResult.objects.get()
    assert retry.args_kwargs["args"] == [queued.pk] and retry.run_after > timezone.now() + timedelta(seconds=30)
    runs.retrain_run_execute(run_id=queued.pk)
    queued.refresh_from_db()
    assert queued.log.count("Waiting:") == 1 and DBTaskResult.objects.count() == 2


@pytest.mark.django_db
def test_the_database_refuses_a_second_running_run(model_version):
    running_run()
    queued = RetrainRun.objects.create(source="admin")
    with pytest.raises(runs.AlreadyRunning, match="Another retrain is running"):
        runs.retrain_run_take(run=queued)
    assert RetrainRun.objects.get(id=queued.pk).status == Status.QUEUED
    # Whoever writes it: the rule is the database's partial unique index, not this code.
    with pytest.raises(IntegrityError):
        RetrainRun.objects.filter(id=queued.pk).update(status=Status.RUNNING)


@pytest.mark.django_db
def test_a_stale_running_run_is_marked_failed_and_the_queued_one_takes_over():
    slow = running_run(silent_for=runs.STALE_AFTER - timedelta(minutes=1))
    assert runs.fail_stale_runs() == [] and RetrainRun.objects.get(id=slow.pk).status == Status.RUNNING
    slow.delete()
    stale = running_run(silent_for=runs.STALE_AFTER + timedelta(minutes=1))
    queued = RetrainRun.objects.create(source="admin")

    taken = runs.retrain_run_take(run=queued)

    stale.refresh_from_db()
    assert stale.status == Status.FAILED and stale.progress == "worker stopped" and stale.finished_at
    assert "Worker stopped: no sign of life from trainer-2 since" in stale.log
    assert taken.status == Status.RUNNING and taken.host == runs.HOST and taken.started_at == taken.heartbeat_at


@pytest.mark.django_db
def test_a_run_marked_stopped_stops_at_its_next_sign_of_life():
    run = running_run()
    runs.retrain_run_beat(run=run, progress="fine-tuning: epoch 1/5")
    assert RetrainRun.objects.get(id=run.pk).progress == "fine-tuning: epoch 1/5"
    # Another host found it silent for too long and failed it; the process was only slow.
    RetrainRun.objects.filter(id=run.pk).update(status=Status.FAILED)
    with pytest.raises(runs.RunStopped, match="marked failed by another host"):
        runs.retrain_run_beat(run=run, progress="fine-tuning: epoch 2/5")


@pytest.mark.django_db
def test_the_worker_leaves_a_run_that_is_no_longer_queued_alone():
    done = RetrainRun.objects.create(source="admin", status=Status.PASSED)
    answer = runs.retrain_run_execute(run_id=done.pk)
    assert answer == f"Retrain #{done.pk} is no longer queued (passed the gate): nothing to do."
    assert RetrainRun.objects.get(id=done.pk).status == Status.PASSED


def reviewed_at(drawings, moment):
    for drawing in drawings:
        drawing.reviewed_at = moment
        drawing.save(update_fields=["reviewed_at"])


@pytest.mark.django_db
def test_if_new_retrains_only_after_enough_reviews_since_the_last_finished_run(make_drawing, admin_user):
    started = timezone.now() - timedelta(days=1)
    last = RetrainRun.objects.create(
        source="schedule", status=Status.FAILED_GATE, started_at=started, finished_at=started + timedelta(minutes=3)
    )
    old = [make_drawing() for _ in range(4)]
    new = [make_drawing() for _ in range(2)]
    services.drawing_relabel(drawings=old + new, true_label=5, reviewer=admin_user)
    reviewed_at(old, started - timedelta(hours=1))
    make_drawing()  # not reviewed: not a review

    output = retrain("--if-new", "3")
    assert f"2 new reviews since retrain #{last.pk} started" in output and "not retraining" in output
    assert RetrainRun.objects.count() == 1

    # Enough: it starts (and here stops at once for want of examples), recorded as scheduled.
    with pytest.raises(CommandError, match="Label more"):
        retrain("--if-new", "2", "--min-examples", "100")
    attempt = RetrainRun.objects.exclude(id=last.pk).get()
    assert attempt.source == "schedule" and attempt.status == Status.FAILED
    # A failed run is not a finished one: the same two reviews are still new.
    assert runs.reviews_since_last_run() == (2, last)


@pytest.mark.django_db
def test_if_new_counts_every_review_before_any_run_and_waits_for_a_pending_one(make_drawing, admin_user):
    services.drawing_relabel(drawings=[make_drawing() for _ in range(3)], true_label=1, reviewer=admin_user)
    assert "3 new reviews in all (no run has finished yet); --if-new asks for 4" in retrain("--if-new", "4")
    queued = RetrainRun.objects.create(source="admin")
    assert f"Retrain #{queued.pk} is queued: not starting another." in retrain("--if-new", "1")
    assert RetrainRun.objects.count() == 1


@pytest.mark.django_db
def test_queue_option_queues_the_run_for_the_worker(model_version, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        output = retrain("--queue", "--epochs", "3", "--seed", "0", "--no-activate")
    run = RetrainRun.objects.get()
    assert output.strip() == f"Queued retrain #{run.pk}: the task worker (manage.py db_worker) executes it."
    assert run.status == Status.QUEUED and run.source == "command"
    assert run.options == {"epochs": 3, "seed": 0, "no_activate": True}  # a 0 given is kept
    assert DBTaskResult.objects.get().args_kwargs["args"] == [run.pk]
    with pytest.raises(CommandError, match=f"Retrain #{run.pk} is already queued"):
        retrain("--queue")


@pytest.mark.django_db
def test_run_log_keeps_each_line_as_a_terminal_last_showed_it():
    run = running_run()
    echo, lines = io.StringIO(), []
    with runs.RunLog(run, echo=echo, on_line=lines.append) as log:
        log.write("\x1b[32;1mGate passed:\x1b[0m\n  - held-out")
        log.write(" reviewed drawings\nEpoch 1/2\n")
        log.write("1/3 [=====>....]\b\b\b\b\b\b\b\b\b\b\b\b\b\b\b\r3/3 [==========] - loss: 0.1\n")
        log.write("unfinished")
        assert RetrainRun.objects.get(id=run.pk).log.endswith("3/3 [==========] - loss: 0.1\n")
    assert echo.getvalue().startswith("\x1b[32;1mGate passed:")  # the terminal gets exactly what was written
    assert RetrainRun.objects.get(id=run.pk).log == (
        "Gate passed:\n  - held-out reviewed drawings\nEpoch 1/2\n3/3 [==========] - loss: 0.1\nunfinished\n"
    )
    assert lines == ["Gate passed:", "  - held-out reviewed drawings", "Epoch 1/2", "3/3 [==========] - loss: 0.1"]
