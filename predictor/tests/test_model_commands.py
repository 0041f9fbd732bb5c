import io
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from predictor import services
from predictor.models import ModelActivation, ModelVersion
from predictor.tests.drawings import data_url


@pytest.fixture(autouse=True)
def local_model_copies(settings, tmp_path):
    settings.DIGIT_MODEL_CACHE = tmp_path / "model-cache"


@pytest.fixture
def second_version(active_model):
    """Version 2, a copy of the shipped model as a retrain would record it, active; version 1 is the parent."""
    return services.model_version_register(
        tflite_path=Path(active_model.tflite.path),
        keras_path=Path(active_model.keras.path),
        metrics={"mnist_test_accuracy": 0.9921, "heldout_accuracy": 0.9, "gate": {"passed": True, "reasons": []}},
        parent=active_model,
        training_data={"sizes": {"train": 80, "heldout": 20}},
        notes="Retrained from v1: gate passed.",
        activate=True,
    )


def run(command, *arguments) -> str:
    out = io.StringIO()
    call_command(command, *arguments, stdout=out)
    return out.getvalue()


def served_version(api_client, digit_png) -> int:
    png, _ = digit_png
    response = api_client.post(reverse("predictor:prediction-create"), {"image": data_url(png)}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["model_version"]


@pytest.mark.django_db
def test_activate_model_rolls_back_and_forward_without_restart(second_version, api_client, digit_png):
    assert served_version(api_client, digit_png) == 2
    output = run("activate_model", "1")
    assert "Version 1 now answers predictions" in output and "manage.py activate_model 2" in output
    assert list(ModelVersion.objects.filter(is_active=True).values_list("version", flat=True)) == [1]
    assert served_version(api_client, digit_png) == 1
    run("activate_model", "2")
    assert served_version(api_client, digit_png) == 2


@pytest.mark.django_db
def test_activating_the_active_version_changes_nothing(second_version):
    assert "already active" in run("activate_model", "2")
    assert ModelVersion.objects.get(is_active=True).version == 2


@pytest.mark.django_db
def test_activating_an_unknown_version_names_the_known_ones(second_version):
    with pytest.raises(CommandError, match="no model version 7. Known versions: 1, 2"):
        run("activate_model", "7")


@pytest.mark.django_db
def test_a_version_whose_model_cannot_load_is_not_activated(second_version):
    version_1 = ModelVersion.objects.get(version=1)
    Path(version_1.tflite.path).write_bytes(b"not a model")
    with pytest.raises(CommandError, match="Model version 1 cannot be loaded: its file v1/model.tflite does not match"):
        run("activate_model", "1")
    assert ModelVersion.objects.get(is_active=True).version == 2
    assert ModelActivation.objects.filter(model_version__version=1, source="command").count() == 0


@pytest.mark.django_db
def test_a_version_that_failed_its_gate_is_activated_only_with_confirmation(second_version):
    ModelVersion.objects.filter(version=1).update(
        metrics={"gate": {"passed": False, "reasons": ["MNIST test: dropped too far"]}}
    )
    with pytest.raises(CommandError, match="failed its promotion gate .*dropped too far.*--confirm-failed-gate"):
        run("activate_model", "1")
    assert ModelVersion.objects.get(is_active=True).version == 2

    output = run("activate_model", "1", "--confirm-failed-gate")
    assert "failed its promotion gate" in output and "Version 1 now answers predictions" in output
    assert ModelVersion.objects.get(is_active=True).version == 1
    activation = ModelActivation.objects.first()
    assert (activation.model_version.version, activation.previous.version) == (1, 2)
    assert activation.source == "command" and activation.activated_by is None
    assert activation.note == "activated although it failed its gate: MNIST test: dropped too far"


@pytest.mark.django_db
def test_models_lists_versions_with_metrics_and_marks_the_active_one(second_version):
    output = run("models")
    lines = output.splitlines()
    v2 = next(line for line in lines if line[2:].startswith("v2 "))
    v1 = next(line for line in lines if line[2:].startswith("v1 "))
    assert v2.startswith("*") and not v1.startswith("*")
    assert "99.21%" in v2 and "90.0%" in v2 and "80" in v2 and "Retrained from v1" in v2


@pytest.mark.django_db
def test_models_without_versions_says_how_to_start():
    assert "register_base_model" in run("models")
