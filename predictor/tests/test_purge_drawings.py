"""Retention: `manage.py purge_drawings` deletes old unreviewed drawings, rows and files, and nothing else."""

import io
import uuid
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from predictor.models import Drawing, ModelVersion

PNG = b"\x89PNG\r\n\x1a\n" + bytes(992)  # the files are never decoded here; 1,000 bytes each


@pytest.fixture
def old_drawing(make_drawing):
    """Return a function that stores a drawing `days` old with its own image file."""

    def make(days, **fields):
        name = default_storage.save(f"drawings/old/{uuid.uuid4()}.png", ContentFile(PNG))
        return make_drawing(image=name, created_at=timezone.now() - timedelta(days=days), **fields)

    return make


@pytest.fixture
def purge(django_capture_on_commit_callbacks):
    """Return a function that runs the command and the after-commit file deletions; gives its output."""

    def run(*args):
        out = io.StringIO()
        with django_capture_on_commit_callbacks(execute=True):
            call_command("purge_drawings", *args, stdout=out, stderr=out)
        return out.getvalue()

    return run


def is_stored(drawing) -> bool:
    return Drawing.objects.filter(id=drawing.id).exists()


def has_file(drawing) -> bool:
    return default_storage.exists(drawing.image.name)


@pytest.mark.django_db(transaction=True)
def test_old_unreviewed_drawings_are_deleted_with_their_files(old_drawing):
    plain = old_drawing(100)
    # Neither the review queue (unsure, or disputed by the visitor) nor feedback keeps a drawing.
    unsure = old_drawing(100, confidence=0.3)
    disputed = old_drawing(100, predicted_label=5, feedback_label=3, feedback_at=timezone.now())
    confirmed_by_visitor = old_drawing(100, predicted_label=5, feedback_label=5, feedback_at=timezone.now())
    recent = old_drawing(89)

    # Real commits, as from cron: each batch's files go when its transaction commits, before the report.
    out = io.StringIO()
    call_command("purge_drawings", "--older-than", "90", stdout=out)
    output = out.getvalue()

    for gone in (plain, unsure, disputed, confirmed_by_visitor):
        assert not is_stored(gone) and not has_file(gone)
    assert is_stored(recent) and has_file(recent)
    assert "Deleted 4 unreviewed drawing(s)" in output
    assert "(2 of them in the review queue) and 4 stored file(s)" in output


@pytest.mark.django_db
def test_reviewed_and_excluded_drawings_are_kept_however_old(old_drawing, purge):
    labelled = old_drawing(1000, true_label=5)
    relabelled = old_drawing(1000, true_label=3)
    excluded = old_drawing(1000, is_excluded=True)

    assert "Deleted 0 unreviewed drawing(s)" in purge("--older-than", "1")

    for kept in (labelled, relabelled, excluded):
        assert is_stored(kept) and has_file(kept)


@pytest.mark.django_db
def test_drawings_a_model_was_trained_or_evaluated_on_are_kept(old_drawing, purge, model_version):
    # Labels sent back to the queue after a retrain: unreviewed now, but in that version's manifest.
    trained_on, held_out, other = old_drawing(200), old_drawing(200), old_drawing(200)
    ModelVersion.objects.create(
        version=2,
        tflite="v2/model.tflite",
        keras="v2/model.keras",
        parent=model_version,
        training_data={"drawing_ids": [str(trained_on.id)], "heldout_ids": [str(held_out.id)], "sizes": {}},
    )

    output = purge("--older-than", "90")

    assert is_stored(trained_on) and has_file(trained_on)
    assert is_stored(held_out) and has_file(held_out)
    assert not is_stored(other) and not has_file(other)
    assert "Kept 2 old unreviewed drawing(s) that a model version was trained or evaluated on." in output


@pytest.mark.django_db
def test_dry_run_counts_what_would_be_freed_and_changes_nothing(old_drawing, purge):
    doomed = [old_drawing(100) for _ in range(3)]
    missing = old_drawing(100)
    default_storage.delete(missing.image.name)
    recent = old_drawing(1)

    output = purge("--older-than", "90", "--dry-run")

    assert "Would delete 4 unreviewed drawing(s)" in output
    assert "and 3 stored file(s), freeing 3,000 bytes (0.0 MB)." in output
    assert "1 file(s) were already missing." in output
    assert Drawing.objects.count() == 5
    assert all(has_file(drawing) for drawing in [*doomed, recent])


@pytest.mark.django_db
def test_rows_are_deleted_in_batches_across_batch_boundaries(old_drawing, purge, model_version):
    old = [old_drawing(100 + n) for n in range(7)]
    # A protected row in the middle stays behind while the paging moves past it.
    model_version.training_data = {"drawing_ids": [str(old[3].id)]}
    model_version.save()
    recent = old_drawing(1)

    with CaptureQueriesContext(connection) as queries:
        output = purge("--older-than", "90", "--batch-size", "3")

    deletes = [query["sql"] for query in queries if query["sql"].startswith('DELETE FROM "predictor_drawing"')]
    assert len(deletes) == 3  # 7 candidates in pages of 3, 3 + 2 + 1 deleted
    assert "Deleted 6 unreviewed drawing(s)" in output
    assert set(Drawing.objects.values_list("id", flat=True)) == {old[3].id, recent.id}
    assert [has_file(drawing) for drawing in old] == [False, False, False, True, False, False, False]


@pytest.mark.django_db
def test_files_stay_until_the_deletion_of_their_rows_is_committed(old_drawing):
    drawing = old_drawing(100)

    with pytest.raises(RuntimeError), transaction.atomic():
        call_command("purge_drawings", "--older-than", "90", stdout=io.StringIO())
        assert not is_stored(drawing) and has_file(drawing)
        raise RuntimeError("the transaction that deleted the rows never commits")

    assert is_stored(drawing) and has_file(drawing)


@pytest.mark.django_db
def test_a_file_another_row_still_uses_is_kept(old_drawing, make_drawing, purge):
    drawing = old_drawing(100)
    twin = make_drawing(image=drawing.image.name, true_label=5, created_at=drawing.created_at)

    assert "Deleted 1 unreviewed drawing(s)" in purge("--older-than", "90")

    assert not is_stored(drawing)
    assert is_stored(twin) and has_file(twin)


@pytest.mark.django_db
def test_a_missing_file_is_not_an_error(old_drawing, purge):
    drawing = old_drawing(100)
    default_storage.delete(drawing.image.name)

    assert "Deleted 1 unreviewed drawing(s)" in purge("--older-than", "90")
    assert not is_stored(drawing)


@pytest.mark.django_db
def test_the_default_age_is_the_retention_setting(old_drawing, purge, settings):
    settings.DIGIT_RETENTION_DAYS = 30
    old, recent = old_drawing(31), old_drawing(29)

    purge()

    assert not is_stored(old)
    assert is_stored(recent)


@pytest.mark.django_db
def test_an_age_below_one_day_is_refused(old_drawing):
    drawing = old_drawing(0)
    with pytest.raises(CommandError, match="at least 1 day"):
        call_command("purge_drawings", "--older-than", "0", stdout=io.StringIO())
    assert is_stored(drawing)
