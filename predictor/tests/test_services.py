import subprocess
import sys
import textwrap

import pytest
from django.conf import settings
from django.db import IntegrityError

from predictor import model_cache, services
from predictor.models import Drawing, ModelVersion


def register_copy(version: ModelVersion, *, activate: bool) -> ModelVersion:
    return services.model_version_register(
        tflite_path=version.tflite.path,
        keras_path=version.keras.path,
        metrics=version.metrics,
        parent=version,
        notes="copy",
        activate=activate,
    )


@pytest.mark.django_db
def test_registering_copies_artefacts_into_model_storage(active_model):
    assert active_model.version == 1 and active_model.is_active
    assert active_model.tflite.name == "v1/model.tflite"
    assert active_model.tflite.path.startswith(str(settings.DIGIT_MODEL_ROOT))
    assert active_model.metrics["mnist_test_accuracy"] >= 0.993


@pytest.mark.django_db
def test_registering_a_broken_model_keeps_nothing(active_model, tmp_path):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a flatbuffer")
    with pytest.raises(Exception):
        services.model_version_register(
            tflite_path=broken, keras_path=active_model.keras.path, metrics={}, activate=True
        )
    assert list(ModelVersion.objects.values_list("version", "is_active")) == [(1, True)]
    assert not (settings.DIGIT_MODEL_ROOT / "v2").exists() or not any((settings.DIGIT_MODEL_ROOT / "v2").iterdir())


@pytest.mark.django_db
def test_activation_switches_the_served_version_without_restart(active_model, digit_png, settings):
    settings.DIGIT_MODEL_CHECK_SECONDS = 0
    second = register_copy(active_model, activate=False)
    assert services.drawing_create(data=digit_png[0], visitor="v").model_version == active_model

    services.model_version_activate(version=second)
    assert services.drawing_create(data=digit_png[0], visitor="v").model_version == second

    services.model_version_activate(version=active_model)
    assert services.drawing_create(data=digit_png[0], visitor="v").model_version == active_model
    assert ModelVersion.objects.filter(is_active=True).count() == 1


@pytest.mark.django_db
def test_a_worker_asks_which_version_is_active_once_per_interval_but_at_once_after_activating_here(
    active_model, settings, django_assert_num_queries
):
    settings.DIGIT_MODEL_CHECK_SECONDS = 3600
    second = register_copy(active_model, activate=False)
    model_cache.active_classifier()
    with django_assert_num_queries(0):  # the hot path: no query within the interval
        assert model_cache.active_classifier()[0] == active_model

    ModelVersion.objects.filter(id=active_model.id).update(is_active=False)
    ModelVersion.objects.filter(id=second.id).update(is_active=True)
    assert model_cache.active_classifier()[0] == active_model  # another worker's activation: seen next interval

    services.model_version_activate(version=active_model)
    services.model_version_activate(version=second)
    assert model_cache.active_classifier()[0] == second  # this worker's own activation: seen at once


@pytest.mark.django_db
def test_at_most_one_version_can_be_active(active_model):
    second = register_copy(active_model, activate=False)
    with pytest.raises(IntegrityError):
        ModelVersion.objects.filter(id=second.id).update(is_active=True)


def test_serving_a_prediction_never_imports_tensorflow(tmp_path):
    script = textwrap.dedent(
        """
        import base64, sys
        import django
        django.setup()
        from django.core.management import call_command
        from django.test import Client
        import numpy as np, cv2
        from predictor import model_cache, services
        call_command("migrate", verbosity=0)
        call_command("createcachetable", verbosity=0)
        base = "training/artifacts/base/"
        services.model_version_register(
            tflite_path=base + "model.tflite", keras_path=base + "model.keras", metrics={}, activate=True
        )
        canvas = np.zeros((280, 280, 4), np.uint8)
        cv2.line(canvas, (140, 40), (140, 240), (0, 0, 0, 255), 24)
        png = cv2.imencode(".png", canvas)[1].tobytes()
        url = "data:image/png;base64," + base64.b64encode(png).decode()
        response = Client(HTTP_HOST="localhost").post(
            "/api/predictions/", {"image": url}, content_type="application/json"
        )
        assert response.status_code == 201, response.content
        loaded = [m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras")]
        assert not loaded, loaded
        print("ok", response.json()["predicted_label"])
        """
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "digitsite.settings",
        "DEBUG": "true",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "MEDIA_ROOT": str(tmp_path / "media"),
        "DIGIT_MODEL_ROOT": str(tmp_path / "models"),
    }
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok 1")
