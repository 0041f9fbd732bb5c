import numpy as np
import pytest
from django.contrib.auth.models import AnonymousUser, Group, User
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from predictor import selectors
from predictor.models import Drawing, ModelVersion
from predictor.preprocessing import preprocess
from predictor.tests.drawings import canvas_png


@pytest.fixture
def second_version(db):
    return ModelVersion.objects.create(version=2, tflite="v2/model.tflite", keras="v2/model.keras")


@pytest.mark.django_db
def test_review_queue_holds_unsure_and_disputed_unreviewed_drawings_least_confident_first(make_drawing):
    unsure = make_drawing(confidence=0.5)
    less_sure = make_drawing(confidence=0.2)
    disputed = make_drawing(predicted_label=4, confidence=0.99, feedback_label=9)
    make_drawing(confidence=0.99)
    make_drawing(predicted_label=4, confidence=0.99, feedback_label=4)
    make_drawing(confidence=0.3, true_label=5)
    make_drawing(confidence=0.3, is_excluded=True)

    assert list(selectors.drawing_review_queue()) == [less_sure, unsure, disputed]


@pytest.mark.django_db
def test_review_queue_threshold_comes_from_settings(make_drawing, settings):
    drawing = make_drawing(confidence=0.85)
    assert not selectors.drawing_review_queue().exists()
    settings.DIGIT_LOW_CONFIDENCE = 0.9
    assert list(selectors.drawing_review_queue()) == [drawing]


@pytest.mark.django_db
def test_finetuning_dataset_is_exactly_the_labelled_drawings_not_excluded(make_drawing):
    labelled = [make_drawing(true_label=label) for label in (3, 5, 5)]
    make_drawing()
    make_drawing(feedback_label=2)
    make_drawing(is_excluded=True)
    make_drawing(true_label=1, is_excluded=True)

    dataset = list(selectors.finetuning_dataset())
    assert set(dataset) == set(labelled)
    assert [d.id for d in dataset] == sorted(d.id for d in labelled)


@pytest.mark.django_db
def test_model_version_stats_give_accuracy_confusion_and_low_confidence_share(
    make_drawing, model_version, second_version, django_assert_num_queries
):
    make_drawing(predicted_label=3, confidence=0.5, true_label=3)
    make_drawing(predicted_label=3, confidence=0.9, true_label=8)
    make_drawing(predicted_label=7, confidence=0.95, true_label=7)
    make_drawing(predicted_label=1, confidence=0.4, feedback_label=7)
    make_drawing(predicted_label=0, confidence=0.3, is_excluded=True)
    make_drawing(predicted_label=2, confidence=0.99, true_label=2, model_version=second_version)

    with django_assert_num_queries(2):
        newest, oldest = selectors.model_version_stats()

    assert (newest.version, oldest.version) == (second_version, model_version)
    assert (oldest.judged, oldest.reviewed, oldest.correct, oldest.disputed, oldest.excluded) == (5, 3, 2, 1, 1)
    assert oldest.accuracy == pytest.approx(2 / 3)
    assert oldest.low_confidence_share == pytest.approx(3 / 5)
    expected = np.zeros((10, 10), int)
    expected[3, 3] = expected[8, 3] = expected[7, 7] = 1
    np.testing.assert_array_equal(oldest.confusion, expected)
    assert oldest.confusion_rows[8] == (8, 1, [(p, int(p == 3)) for p in range(10)])
    assert (newest.judged, newest.accuracy, newest.confusion[2][2]) == (1, 1.0, 1)


@pytest.mark.django_db
def test_model_version_without_drawings_has_no_accuracy(model_version):
    [stats] = selectors.model_version_stats()
    assert (stats.judged, stats.accuracy, stats.low_confidence_share) == (0, None, None)
    assert sum(map(sum, stats.confusion)) == 0


def retrained(parent, version, **metrics):
    """A version with a retrain's record of its held-out drawings (its files are never read)."""
    return ModelVersion.objects.create(
        version=version,
        tflite=f"v{version}/model.tflite",
        keras=f"v{version}/model.keras",
        parent=parent,
        metrics=metrics,
        training_data={"sizes": {"train": 40, "heldout": 10}},
    )


@pytest.mark.django_db
def test_heldout_score_reads_the_retrain_record_of_both_versions_on_the_same_drawings(model_version):
    version = retrained(
        model_version, 2, heldout_accuracy=0.9, heldout_size=12, before={"version": 1, "heldout_accuracy": 0.75}
    )
    score = selectors.heldout_score(version)
    assert score == selectors.HeldoutScore(version=2, parent=1, accuracy=0.9, before=0.75, size=12)
    assert (score.accuracy_percent, score.before_percent) == (90.0, 75.0)
    assert score.change_points == pytest.approx(15.0)


@pytest.mark.django_db
def test_heldout_score_falls_back_on_the_registry_and_the_training_data(model_version):
    version = retrained(model_version, 2, heldout_accuracy=0.8, before={"version": "one", "heldout_accuracy": 1.2})
    assert selectors.heldout_score(version) == selectors.HeldoutScore(
        version=2, parent=1, accuracy=0.8, before=None, size=10
    )
    assert selectors.heldout_score(version).change_points is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    "metrics",
    [
        {},
        {"mnist_test_accuracy": 0.99},
        {"heldout_accuracy": None, "before": {"heldout_accuracy": None}},
        {"heldout_accuracy": "90%", "before": [0.8]},
        {"heldout_accuracy": True},
        {"heldout_accuracy": 0.0, "heldout_size": 0},  # measured on no drawings: nothing measured
        ["not", "an", "object"],
    ],
)
def test_heldout_score_is_none_without_a_usable_record(model_version, metrics):
    version = retrained(model_version, 2)
    ModelVersion.objects.filter(id=version.id).update(metrics=metrics)  # as stored, whatever its shape
    version.refresh_from_db()
    assert selectors.heldout_score(version) is None


@pytest.mark.django_db
def test_model_version_stats_give_each_version_its_run_and_the_runs_started_from_it(
    model_version, django_assert_num_queries
):
    second = retrained(model_version, 2, heldout_accuracy=0.9, before={"heldout_accuracy": 0.8})
    retrained(second, 3, heldout_accuracy=0.85, before={"heldout_accuracy": 0.9})
    retrained(second, 4, heldout_accuracy=0.95, before={"heldout_accuracy": 0.92})

    with django_assert_num_queries(2):
        fourth, third, second_stats, first = selectors.model_version_stats()

    assert first.heldout is None
    assert [(run.version, run.before) for run in first.heldout_as_parent] == [(2, 0.8)]
    assert (second_stats.heldout.accuracy, second_stats.heldout.parent) == (0.9, 1)
    assert [(run.version, run.before) for run in second_stats.heldout_as_parent] == [(3, 0.9), (4, 0.92)]
    assert (third.heldout_as_parent, fourth.heldout_as_parent) == ([], [])


@pytest.mark.django_db
def test_review_counts(make_drawing):
    make_drawing(confidence=0.2)
    make_drawing(true_label=1)
    make_drawing()
    assert selectors.review_counts() == {"drawings": 3, "needs_review": 1, "dataset": 1}


@pytest.mark.django_db
def test_drawing_inputs_recompute_from_stored_images_and_report_bad_ones(make_drawing, mnist_train):
    images, _ = mnist_train
    png = canvas_png(images[3])
    good = make_drawing(image=default_storage.save("drawings/good.png", ContentFile(png)))
    missing = make_drawing(image="drawings/gone.png")
    corrupt = make_drawing(image=default_storage.save("drawings/corrupt.png", ContentFile(b"\x89PNG broken")))

    inputs = selectors.drawing_inputs([good, missing, corrupt])
    results = {drawing.id: (pixels, reason) for drawing, pixels, reason in inputs}

    pixels, reason = results[good.id]
    assert reason == "" and pixels.dtype == np.uint8 and pixels.shape == (28, 28)
    np.testing.assert_array_equal(pixels, preprocess(png))
    assert results[missing.id][0] is None and "gone.png" in results[missing.id][1]
    assert results[corrupt.id][0] is None and results[corrupt.id][1]


@pytest.mark.django_db
def test_history_lists_only_the_visitors_drawings_newest_first(make_drawing):
    first = make_drawing(visitor="a")
    make_drawing(visitor="b")
    second = make_drawing(visitor="a")
    assert list(selectors.drawing_history(visitor="a")) == [second, first]
    assert list(selectors.drawing_history(visitor=None)) == []


@pytest.mark.django_db
def test_a_drawing_is_for_its_visitor_and_for_staff_allowed_to_view_drawings(make_drawing):
    drawing = make_drawing(visitor="a")
    reviewer = User.objects.create_user("reviewer", is_staff=True)
    reviewer.groups.add(Group.objects.get(name="Reviewers"))
    staff_without_permission = User.objects.create_user("clerk", is_staff=True)
    superuser_not_staff = User.objects.create_user("owner", is_superuser=True)

    assert selectors.drawing_get(drawing_id=drawing.id, visitor="a") == drawing
    assert selectors.drawing_get(drawing_id=drawing.id, visitor=None, user=reviewer) == drawing
    for visitor, user in [
        ("b", None),
        (None, None),
        (None, AnonymousUser()),
        ("b", staff_without_permission),
        (None, superuser_not_staff),
    ]:
        with pytest.raises(Drawing.DoesNotExist):
            selectors.drawing_get(drawing_id=drawing.id, visitor=visitor, user=user)


@pytest.mark.django_db
def test_the_active_model_version_is_looked_up_by_id(model_version, second_version):
    assert selectors.model_version_active_id() == model_version.id
    assert selectors.model_version_get(version_id=second_version.id) == second_version
    ModelVersion.objects.update(is_active=False)
    assert selectors.model_version_active_id() is None
    assert selectors.model_version_get(version_id=second_version.id + 100) is None
