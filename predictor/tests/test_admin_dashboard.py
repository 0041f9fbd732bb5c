"""The admin's model dashboard, as a reviewer reads it: what each version judged and what retraining taught it."""

import re
import xml.etree.ElementTree as ET

import pytest
from django.urls import reverse

from predictor import services
from predictor.models import ModelVersion
from predictor.tests.drawings import canvas_png
from training import files

DASHBOARD = reverse("admin:predictor_dashboard")
# The reviewer and their permissions (3), the versions with their counts, the confusion cells and the
# totals: however many versions there are.
DASHBOARD_QUERIES = 6
SVG = "{http://www.w3.org/2000/svg}"


def retrain_metrics(*, parent: int, before: float, after: float, heldout: int) -> dict:
    """Return the metrics `manage.py retrain` records for a run with these held-out accuracies."""
    return {
        "params": 141098,
        "tflite_bytes": 566208,
        "heldout_accuracy": after,
        "mnist_test_accuracy": 0.9961,
        "train_accuracy": 0.98,
        "mnist_test_loss": 0.012,
        "per_class_accuracy": [0.99] * 10,
        "heldout_size": heldout,
        "before": {"version": parent, "heldout_accuracy": before, "mnist_test_accuracy": 0.9965, "train_accuracy": 0.6},
        "gate": {"passed": after >= before, "reasons": [], "forced": False, "mnist_margin": 0.002},
        "fit_seconds": 41.2,
        "train_seconds": 63.9,
    }


def register_retrained(parent: ModelVersion, *, activate: bool = True, **scores) -> ModelVersion:
    """Return a version registered as retrain registers one: the shipped artefacts, a retrain's record."""
    heldout = scores.get("heldout", 0)
    return services.model_version_register(
        tflite_path=files.BASE_DIR / files.TFLITE_FILE,
        keras_path=files.BASE_DIR / files.KERAS_FILE,
        metrics=retrain_metrics(parent=parent.version, **scores) if scores else {},
        parent=parent,
        training_data={
            "drawing_ids": [],
            "heldout_ids": [],
            "sizes": {"reviewed": 5 * heldout, "skipped": 0, "train": 4 * heldout, "heldout": heldout},
        },
        activate=activate,
        source="retrain",
    )


@pytest.fixture
def judge(mnist_train, reviewer):
    """Return a function: the active version reads MNIST digits drawn on a canvas, a reviewer labels each."""
    images, labels = mnist_train
    used = iter(range(len(images)))

    def judge_and_review(*, right: int, wrong: int = 0) -> None:
        for wanted_right in [True] * right + [False] * wrong:
            index = next(used)
            drawing = services.drawing_create(data=canvas_png(images[index]), visitor="visitor-a")
            if wanted_right:
                services.drawing_confirm(drawings=[drawing], reviewer=reviewer)
            else:
                other = (drawing.predicted_label + 1) % 10
                services.drawing_relabel(drawings=[drawing], true_label=other, reviewer=reviewer)

    return judge_and_review


def learning_rows(html: str) -> dict[str, list[str]]:
    """Return the dashboard's learning table as {"v2": [cell texts...]}, tags stripped and spaces squeezed."""
    table = re.search(r'<table class="learning-table">(.*?)</table>', html, flags=re.DOTALL).group(1)
    rows = {}
    for row in re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1], flags=re.DOTALL):
        cells = [
            " ".join(re.sub(r"<[^>]+>", " ", cell).split())
            for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, flags=re.DOTALL)
        ]
        rows[cells[0].split()[0]] = cells[1:]
    return rows


def learning_chart(html: str) -> ET.Element:
    """Return the dashboard's accuracy-by-version chart, parsed as XML."""
    svg = re.search(r'<svg class="chart".*?</svg>', html, flags=re.DOTALL).group(0)
    return ET.fromstring(svg.replace("<svg ", f'<svg xmlns="{SVG[1:-1]}" ', 1))


@pytest.mark.django_db
def test_dashboard_shows_each_retrain_gain_on_held_out_drawings_and_live_accuracy(reviewer_client, active_model, judge):
    judge(right=3, wrong=1)  # by v1, the shipped model
    second = register_retrained(active_model, before=0.8, after=0.9, heldout=10)
    judge(right=2)  # by v2
    third = register_retrained(second, before=0.9, after=0.85, heldout=20, activate=False)

    response = reviewer_client.get(DASHBOARD)
    html = response.content.decode()
    assert response.status_code == 200

    rows = learning_rows(html)
    assert list(rows) == ["v3", "v2", "v1"]  # newest first, as the versions below
    assert rows["v3"] == ["90.0% (v2)", "85.0%", "-5.0 points", "20", "—"]
    assert rows["v2"][:4] == ["80.0% (v1)", "90.0%", "+10.0 points", "10"]
    assert rows["v2"][4].startswith("100.0% ( 2/2")
    # The shipped model has no held-out run of its own: its figure from its child's run stands in.
    assert rows["v1"][:2] == ["—", "— 80.0% on the 10 drawings held out at v2's retrain"]
    assert rows["v1"][4].startswith("75.0% ( 3/4")
    drawings = reverse("admin:predictor_drawing_changelist")
    assert f'href="{drawings}?model_version__id__exact={active_model.id}&amp;dataset=yes"' in html
    assert f'href="{reverse("admin:predictor_modelversion_change", args=[third.id])}">v3</a>' in html

    chart = learning_chart(html)
    assert chart.get("role") == "img"
    label = chart.get("aria-label")
    assert label.startswith("Accuracy by model version.")
    assert "v1: live 75.0%" in label and "v2: held out 80.0% (v1) to 90.0%, live 100.0%" in label
    assert "v3: held out 90.0% (v2) to 85.0%" in label
    texts = [t.text for t in chart.iter(f"{SVG}text")]
    assert [t for t in texts if re.fullmatch(r"v\d+", t)] == ["v1", "v2", "v3"]
    assert "accuracy (%)" in texts and "model version" in texts
    points = [title.text for title in chart.iter(f"{SVG}title")][1:]  # after the chart's own title
    assert "v1 on the drawings held out from v2: 80.0%" in points
    assert "v3 on the drawings held out from it: 85.0%" in points
    assert "v2 live: 100.0% of 2 reviewed drawings read right" in points


@pytest.mark.django_db
def test_dashboard_with_only_the_shipped_model_says_there_is_nothing_to_plot(
    reviewer_client, active_model, judge, django_assert_max_num_queries
):
    judge(right=1)
    with django_assert_max_num_queries(DASHBOARD_QUERIES):
        html = reviewer_client.get(DASHBOARD).content.decode()

    assert "Only one model version so far: nothing to plot yet." in html
    assert '<svg class="chart"' not in html
    assert learning_rows(html) == {"v1": ["—", "—", "—", "—", "100.0% ( 1/1 reviewed drawings judged by version 1 )"]}


@pytest.mark.django_db
def test_dashboard_without_any_version_says_so(reviewer_client):
    html = reviewer_client.get(DASHBOARD).content.decode()
    assert "No model version is registered yet." in html
    assert '<table class="learning-table">' not in html and "nothing to plot" not in html


@pytest.mark.django_db
def test_dashboard_shows_what_it_can_of_missing_odd_and_hostile_metrics(reviewer_client, active_model):
    second = register_retrained(active_model)  # a record without any accuracy
    third = register_retrained(second, before=0.7, after=0.75, heldout=8)
    fourth = register_retrained(third, before=0.75, after=0.8, heldout=4)
    ModelVersion.objects.filter(id=active_model.id).update(metrics=["not", "an", "object"], training_data="odd")
    ModelVersion.objects.filter(id=third.id).update(
        metrics={"heldout_accuracy": "high", "before": [0.7], "heldout_size": True, "mnist_test_accuracy": "<b>1</b>"}
    )
    ModelVersion.objects.filter(id=fourth.id).update(
        metrics={
            "heldout_accuracy": 1.5,
            "before": {"heldout_accuracy": 0.75, "version": "<script>"},
            "heldout_size": -4,
        }
    )

    response = reviewer_client.get(DASHBOARD)
    html = response.content.decode()
    assert response.status_code == 200
    assert "<script>" not in html and "<b>1</b>" not in html
    rows = learning_rows(html)
    # The parent's number from the registry and the size from the training data, where the record is unusable.
    assert rows["v4"] == ["75.0% (v3)", "—", "—", "4", "—"]
    assert rows["v3"] == ["—", "— 75.0% on the 4 drawings held out at v4's retrain", "—", "—", "—"]
    assert rows["v2"] == ["—", "—", "—", "—", "—"]
    assert rows["v1"] == ["—", "—", "—", "—", "—"]
    assert learning_chart(html).get("aria-label").endswith("v4: held out 75.0% (v3) to ?.")


@pytest.mark.django_db
def test_dashboard_of_twenty_versions_names_each_in_as_few_queries_as_for_one(
    reviewer_client, active_model, judge, django_assert_max_num_queries
):
    judge(right=1)
    parent = active_model
    for step in range(19):
        parent = register_retrained(parent, before=0.5 + step * 0.02, after=0.52 + step * 0.02, heldout=10 + step)

    with django_assert_max_num_queries(DASHBOARD_QUERIES):
        html = reviewer_client.get(DASHBOARD).content.decode()

    assert len(learning_rows(html)) == 20
    chart = learning_chart(html)
    assert [f"v{n}" for n in range(1, 21)] == [
        t.text for t in chart.iter(f"{SVG}text") if re.fullmatch(r"v\d+", t.text)
    ]
    assert int(chart.get("width")) <= 880
    assert "v20: held out 86.0% (v19) to 88.0%" in chart.get("aria-label")


@pytest.mark.django_db
def test_dashboard_shows_accuracy_confusion_and_dataset_size(reviewer_client, mixed, make_drawing):
    make_drawing(predicted_label=5, confidence=0.9, true_label=5)
    response = reviewer_client.get(DASHBOARD)
    html = response.content.decode()

    assert response.status_code == 200
    [stats] = response.context["stats"]
    assert (stats.judged, stats.reviewed, stats.correct, stats.excluded) == (9, 3, 2, 1)
    assert stats.confusion[6][5] == 1 and stats.confusion[4][4] == 1 and stats.confusion[5][5] == 1
    assert response.context["counts"] == {"drawings": 9, "needs_review": 3, "dataset": 3}
    assert "66.7% (2/3)" in html and "99.10%" in html
    assert "true_label__exact=6&amp;predicted_label__exact=5" in html
    assert "Confusion matrix" in html
