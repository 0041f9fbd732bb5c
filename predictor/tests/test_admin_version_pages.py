"""The admin's model-version list and pages, as a reviewer reads them."""

import json
import re

import pytest
from django.conf import settings
from django.urls import reverse

from predictor.models import ModelVersion


@pytest.mark.django_db
def test_model_versions_are_listed_with_metrics_and_drawing_counts(admin_client, mixed):
    response = admin_client.get(reverse("admin:predictor_modelversion_changelist"))
    html = response.content.decode()
    assert response.status_code == 200
    assert "99.1%" in html and "95.0%" in html
    assert "50.0% (1/2)" in html  # accuracy on the two reviewed drawings
    assert response.context["cl"].result_list[0].judged == len(mixed)
    assert admin_client.get(reverse("admin:predictor_modelversion_add")).status_code == 403


@pytest.mark.django_db
def test_canvas_accuracy_measured_on_no_drawings_is_shown_as_unknown(admin_client, model_version):
    model_version.metrics = {"mnist_test_accuracy": 0.99, "canvas_val_accuracy": 0.0, "canvas_val_size": 0}
    model_version.save()
    html = admin_client.get(reverse("admin:predictor_modelversion_changelist")).content.decode()
    assert '<td class="field-canvas_val_accuracy">-</td>' in html


BASE_METRICS = json.loads((settings.BASE_DIR / "training" / "artifacts" / "base" / "metrics.json").read_text())


def retrained_version(parent, version=2, **metrics):
    """A version with the metrics and training data `manage.py retrain` records."""
    return ModelVersion.objects.create(
        version=version,
        tflite=f"v{version}/model.tflite",
        keras=f"v{version}/model.keras",
        parent=parent,
        metrics={
            "params": 141098,
            "tflite_bytes": 566208,
            "tflite_max_abs_diff": 5e-7,
            "seed": 1,
            "config": {"epochs": 5},
            "heldout_accuracy": 0.9,
            "mnist_test_accuracy": 0.9961,
            "train_accuracy": 0.97,
            "mnist_test_loss": 0.012,
            "per_class_accuracy": [0.99] * 10,
            "heldout_size": 10,
            "before": {"version": parent.version, "heldout_accuracy": 0.8, "mnist_test_accuracy": 0.9965},
            "gate": {
                "passed": True,
                "forced": False,
                "reasons": ["held-out reviewed drawings: 80.0% -> 90.0% (not worse)"],
                "mnist_margin": 0.002,
            },
            "tries": [
                {
                    "mix": "50% of each batch from the reviewed drawings",
                    "reviewed_share": 0.5,
                    "weight": 1.0,
                    "passed": True,
                    "heldout_accuracy": 0.9,
                    "mnist_test_accuracy": 0.9961,
                    "train_accuracy": 0.97,
                    "worst_class": 3,
                    "worst_class_delta": -0.002,
                    "fit_seconds": 41.2,
                }
            ],
            "fit_seconds": 41.2,
            "train_seconds": 63.9,
            **metrics,
        },
        training_data={
            "drawing_ids": ["a", "b"],
            "heldout_ids": ["c"],
            "skipped": [],
            "sizes": {"reviewed": 50, "skipped": 0, "train": 40, "heldout": 10, "replay": 5000, "mnist_test": 10000},
        },
        notes="Retrained from v1: gate passed.",
    )


def version_page(client, version) -> str:
    response = client.get(reverse("admin:predictor_modelversion_change", args=[version.id]))
    assert response.status_code == 200
    return response.content.decode()


def outside_details(html: str) -> str:
    return re.sub(r"<details.*?</details>", "", html, flags=re.DOTALL)


@pytest.mark.django_db
def test_base_version_page_shows_accuracies_curves_and_confusion_as_pictures(reviewer_client, model_version):
    model_version.metrics = BASE_METRICS
    model_version.save()
    html = version_page(reviewer_client, model_version)
    readable = outside_details(html)

    for shown in ("99.65%", "98.18%", "99.52%", "10,000", "5,000", "141,098", "566 KB", "12.5 min", "79,000"):
        assert shown in readable, shown
    assert readable.count('<svg class="chart" role="img"') == 4  # loss and accuracy curves, two confusion matrices
    assert "Loss per epoch" in readable and "kept: epoch 11" in readable
    assert "9965 of 10000 right" in readable  # the MNIST test confusion matrix, described in words
    assert "None: the gate judges a retrained version" in readable
    assert "nothing: trained from scratch" in readable
    # The raw record is there, in a closed <details>, and nowhere else.
    assert "&quot;per_class_accuracy_canvas&quot;" in html and "per_class_accuracy_canvas" not in readable
    assert re.search(r"<details>\s*<summary>.*Raw record", html, flags=re.DOTALL)


@pytest.mark.django_db
def test_retrained_version_page_compares_with_its_parent_and_links_its_ancestry(reviewer_client, model_version):
    second = retrained_version(model_version)
    third = retrained_version(
        second,
        version=3,
        heldout_accuracy=0.85,
        gate={"passed": False, "forced": True, "reasons": ["held-out: 90.0% -> 85.0% (worse)"]},
    )
    html = outside_details(version_page(reviewer_client, third))

    assert "before (v2)" in html  # its parent, as the retrain command recorded it
    assert "+5.00 points" in html and "-0.04 points" in html
    assert "Failed, and served anyway (--force)." in html and "<li>held-out: 90.0% -&gt; 85.0% (worse)</li>" in html
    lineage = re.search(r'<span class="lineage">(.*?)</span>', html).group(1)
    links = re.findall(r'<a href="([^"]+)">(v\d[^<]*)</a>', lineage)
    assert links == [
        (reverse("admin:predictor_modelversion_change", args=[second.id]), "v2"),
        (reverse("admin:predictor_modelversion_change", args=[model_version.id]), "v1 (active)"),
    ]
    for shown in ("reviewed drawings held out to judge it", "5,000", "41 s", "64 s"):
        assert shown in html, shown
    assert html.count("Not recorded for this version.") == 2  # a record from before retrain kept its curves


@pytest.mark.django_db
def test_retrained_version_page_draws_its_epochs_and_its_held_out_confusion(reviewer_client, model_version):
    identity = [[10 if row == column else 0 for column in range(10)] for row in range(10)]
    version = retrained_version(
        model_version,
        history={"loss": [0.4, 0.3], "accuracy": [0.9, 0.93], "val_loss": [0.5, 0.45], "val_accuracy": [0.8, 0.9]},
        confusion=[[1000 if row == column else 0 for column in range(10)] for row in range(10)],
        confusion_heldout=identity,
    )
    html = outside_details(version_page(reviewer_client, version))

    assert html.count('<svg class="chart" role="img"') == 4  # loss and accuracy curves, two confusion matrices
    assert "held-out reviewed" in html and "Held-out reviewed drawings" in html
    assert "100 of 100 right" in html  # the held-out confusion matrix, described in words
    assert "Not recorded for this version." not in html


@pytest.mark.django_db
def test_version_page_copes_with_missing_odd_and_hostile_metrics(admin_client, model_version):
    model_version.metrics = {}
    model_version.save()
    assert "Not recorded for this version." in version_page(admin_client, model_version)

    model_version.metrics = {
        "history": {"loss": "much", "<b>val</b>": [1, None, "2"]},
        "confusion": [[1, 2], [3]],
        "confusion_canvas": [[1, -2], [3, 4]],
        "mnist_test_accuracy": "high",
        "gate": {"passed": False, "reasons": ["<script>alert(1)</script>"]},
        "before": [],
        "tflite_bytes": None,
        "tries": [{"mix": "<script>alert(2)</script>", "worst_class": "7", "fit_seconds": "slow"}, "a try", 3],
    }
    model_version.notes = "<img src=x onerror=alert(1)>"
    model_version.save()
    html = version_page(admin_client, model_version)
    assert "<script>alert(1)" not in html and "<img src=x" not in html and "<b>val</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in outside_details(html)
    assert "<script>alert(2)" not in html and "&lt;script&gt;alert(2)&lt;/script&gt;" in outside_details(html)
    assert outside_details(html).count('<svg class="chart"') == 0  # nothing drawable: no half-drawn pictures


@pytest.mark.django_db
def test_version_list_and_page_cope_with_a_record_that_is_not_a_json_object(admin_client, model_version):
    ModelVersion.objects.filter(id=model_version.id).update(metrics=["0.99"], training_data="all of them")
    listing = admin_client.get(reverse("admin:predictor_modelversion_changelist"))
    assert listing.status_code == 200
    html = outside_details(version_page(admin_client, model_version))
    assert "Not recorded for this version." in html and "None: the gate judges a retrained version" in html


@pytest.mark.django_db
def test_retrained_version_page_lists_the_candidates_its_run_tried(reviewer_client, model_version):
    half = "50% of each batch from the reviewed drawings"
    tries = [
        {
            "mix": half,
            "reviewed_share": 0.5,
            "weight": 1.0,
            "passed": False,
            "heldout_accuracy": 0.95,
            "mnist_test_accuracy": 0.9943,
            "train_accuracy": 0.99,
            "worst_class": 7,
            "worst_class_delta": -0.0156,
            "fit_seconds": 41.0,
        },
        {
            "mix": half + ", 70% of the way from the starting weights to the fine-tune's",
            "reviewed_share": 0.5,
            "weight": 0.7,
            "passed": True,
            "heldout_accuracy": 0.94,
            "mnist_test_accuracy": 0.9961,
            "train_accuracy": 0.98,
            "worst_class": None,
            "worst_class_delta": None,
            "fit_seconds": 0.0,
        },
    ]
    html = outside_details(version_page(reviewer_client, retrained_version(model_version, tries=tries)))

    table = re.search(r'<table class="facts candidates">(.*?)</table>', html, flags=re.DOTALL).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", table, flags=re.DOTALL)
    cells = [re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row) for row in rows]
    assert cells[0] == ["mix", "held-out reviewed", "MNIST test", "MNIST digit that fell most", "fit", "gate"]
    assert cells[1] == [half, "95.0%", "99.43%", "7: -1.56 points", "41 s", "refused"]
    assert cells[2] == [
        half + ", 70% of the way from the starting weights to the fine-tune&#x27;s",
        "94.0%",
        "99.61%",
        "none fell",
        "none: the fit above",
        "passed",
    ]
    assert "None: it was trained from scratch." in outside_details(version_page(reviewer_client, model_version))
