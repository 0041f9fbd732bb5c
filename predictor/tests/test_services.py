import hashlib
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from django.conf import settings
from django.db import IntegrityError, connection
from django.utils import timezone

from predictor import model_cache, services
from predictor.model_cache import ModelUnavailable
from predictor.models import ModelActivation, ModelVersion

SHIPPED = settings.BASE_DIR / "training" / "artifacts" / "base"
FAILED_GATE = {"gate": {"passed": False, "reasons": ["MNIST test: 99.1% -> 98.2% (dropped 0.9 points)"]}}


@pytest.fixture(autouse=True)
def local_model_copies(settings, tmp_path):
    settings.DIGIT_MODEL_CACHE = tmp_path / "model-cache"


def register_copy(version: ModelVersion, *, activate: bool, **fields) -> ModelVersion:
    return services.model_version_register(
        **{
            "tflite_path": version.tflite.path,
            "keras_path": version.keras.path,
            "metrics": version.metrics,
            "parent": version,
            "notes": "copy",
            "activate": activate,
            **fields,
        }
    )


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.mark.django_db
def test_registering_copies_artefacts_into_model_storage(active_model):
    assert active_model.version == 1 and active_model.is_active
    assert active_model.tflite.name == "v1/model.tflite"
    assert active_model.tflite.path.startswith(str(settings.DIGIT_MODEL_ROOT))
    assert active_model.metrics["mnist_test_accuracy"] >= 0.993


@pytest.mark.django_db
def test_registering_records_the_sha256_of_each_artefact_as_copied(active_model):
    version = ModelVersion.objects.get(id=active_model.id)
    assert version.tflite_sha256 == sha256(SHIPPED / "model.tflite") == sha256(version.tflite.path)
    assert version.keras_sha256 == sha256(SHIPPED / "model.keras") == sha256(version.keras.path)


@pytest.mark.django_db
def test_registering_a_broken_model_keeps_nothing(active_model, tmp_path):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a flatbuffer")
    with pytest.raises(ModelUnavailable, match="Model version 2 cannot be loaded"):
        services.model_version_register(
            tflite_path=broken, keras_path=active_model.keras.path, metrics={}, activate=True
        )
    assert list(ModelVersion.objects.values_list("version", "is_active")) == [(1, True)]
    assert not (settings.DIGIT_MODEL_ROOT / "v2").exists() or not any((settings.DIGIT_MODEL_ROOT / "v2").iterdir())


@pytest.mark.django_db
def test_registered_versions_are_numbered_one_after_another(active_model):
    assert [register_copy(active_model, activate=False).version for _ in range(2)] == [2, 3]


@pytest.mark.django_db
def test_a_version_number_taken_meanwhile_is_skipped(active_model, monkeypatch):
    # What a registration committed by another process between reading the highest number and inserting
    # looks like from here: the number read is already taken when the row goes in.
    stale = iter([{"n": 0}])
    real = ModelVersion.objects.aggregate
    monkeypatch.setattr(ModelVersion.objects, "aggregate", lambda **kw: next(stale, None) or real(**kw))
    version = register_copy(active_model, activate=False)
    assert version.version == 2
    assert (version.tflite.name, version.keras.name) == ("v2/model.tflite", "v2/model.keras")
    assert sorted(ModelVersion.objects.values_list("version", flat=True)) == [1, 2]


def register_at_once(count: int) -> tuple[list[int], list[str]]:
    """Register `count` copies of the shipped model from as many threads, each with its own connection."""
    start = threading.Barrier(count)
    numbers, errors = [], []

    def register():
        try:
            connection.ensure_connection()  # connected before the start, so both really start together
            start.wait()
            version = services.model_version_register(
                tflite_path=SHIPPED / "model.tflite", keras_path=SHIPPED / "model.keras", metrics={}, activate=False
            )
            numbers.append(version.version)
        except Exception as error:
            errors.append(repr(error))
        finally:
            connection.close()

    threads = [threading.Thread(target=register) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return numbers, errors


@pytest.mark.skipif(
    connection.vendor == "sqlite",
    reason="SQLite runs one write transaction at a time (IMMEDIATE), so registrations cannot interleave; "
    "its in-memory test database refuses a second writer instead of making it wait.",
)
@pytest.mark.django_db(transaction=True)
def test_concurrent_registrations_get_distinct_consecutive_numbers(settings):
    numbers, errors = register_at_once(2)
    assert errors == []
    assert sorted(numbers) == [1, 2]
    versions = ModelVersion.objects.order_by("version")
    assert [v.tflite.name for v in versions] == ["v1/model.tflite", "v2/model.tflite"]
    assert all(v.tflite_sha256 == sha256(SHIPPED / "model.tflite") for v in versions)


@pytest.mark.django_db
def test_activation_switches_the_served_version_without_restart(active_model, digit_png, settings):
    settings.DIGIT_MODEL_CHECK_SECONDS = 0
    second = register_copy(active_model, activate=False)
    assert services.drawing_create(data=digit_png[0], visitor="v").model_version == active_model

    services.model_version_activate(version=second, source="command")
    assert services.drawing_create(data=digit_png[0], visitor="v").model_version == second

    services.model_version_activate(version=active_model, source="command")
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

    services.model_version_activate(version=active_model, source="command")
    services.model_version_activate(version=second, source="command")
    assert model_cache.active_classifier()[0] == second  # this worker's own activation: seen at once


@pytest.mark.django_db
def test_each_activation_records_who_when_from_where_and_what_it_replaced(active_model, admin_user):
    registration = ModelActivation.objects.get()
    assert (registration.model_version, registration.previous, registration.source) == (active_model, None, "register")
    second = register_copy(active_model, activate=False)
    before = timezone.now()
    services.model_version_activate(version=second, activated_by=admin_user, source="admin")
    activation = ModelActivation.objects.first()
    assert (activation.model_version, activation.previous, activation.activated_by) == (
        second,
        active_model,
        admin_user,
    )
    assert activation.source == "admin" and activation.note == ""
    assert before <= activation.created_at <= timezone.now()

    services.model_version_activate(version=second, source="command")  # already active: not a switch
    assert ModelActivation.objects.count() == 2


@pytest.mark.django_db
def test_an_activation_from_an_unknown_source_is_refused(active_model):
    second = register_copy(active_model, activate=False)
    with pytest.raises(ValueError, match="Unknown activation source 'web'"):
        services.model_version_activate(version=second, source="web")
    assert ModelVersion.objects.get(is_active=True) == active_model


@pytest.mark.django_db
def test_a_version_that_failed_its_gate_is_activated_only_when_confirmed(active_model):
    second = register_copy(active_model, activate=False, metrics=FAILED_GATE)
    with pytest.raises(services.FailedGateNotConfirmed, match="dropped 0.9 points") as refused:
        services.model_version_activate(version=second, source="command")
    assert refused.value.reasons == FAILED_GATE["gate"]["reasons"]
    assert ModelVersion.objects.get(is_active=True) == active_model
    assert ModelActivation.objects.count() == 1

    services.model_version_activate(version=second, source="command", confirm_failed_gate=True)
    assert ModelVersion.objects.get(is_active=True) == second
    note = ModelActivation.objects.first().note
    assert note == "activated although it failed its gate: MNIST test: 99.1% -> 98.2% (dropped 0.9 points)"


@pytest.mark.django_db
@pytest.mark.parametrize("how", ["changed", "missing"])
def test_a_version_whose_stored_file_is_broken_is_not_activated(active_model, how):
    second = register_copy(active_model, activate=False)
    path = Path(second.tflite.path)
    if how == "changed":
        path.write_bytes(path.read_bytes()[:-1] + b"x")
    else:
        path.unlink()
    expected = "does not match its recorded SHA-256" if how == "changed" else "cannot be read from model storage"
    with pytest.raises(services.ActivationRefused, match=expected):
        services.model_version_activate(version=second, source="command")
    assert ModelVersion.objects.get(is_active=True) == active_model
    assert ModelActivation.objects.count() == 1


@pytest.mark.django_db
def test_a_retrained_version_is_activated_only_if_its_parent_is_still_active(active_model):
    second = register_copy(active_model, activate=False)
    services.model_version_activate(version=second, source="admin")  # someone switched during the retrain

    third = register_copy(active_model, activate=True, notes="Retrained from v1: gate passed.", source="retrain")
    assert not third.is_active
    assert third.not_activated_reason.startswith("Not activated: it was trained from version 1, which is no longer")
    assert "(version 2 is)" in third.not_activated_reason
    stored = ModelVersion.objects.get(id=third.id)
    assert not stored.is_active and stored.notes == "Retrained from v1: gate passed.\n" + third.not_activated_reason
    assert ModelVersion.objects.get(is_active=True) == second

    fourth = register_copy(second, activate=True, source="retrain")
    assert fourth.is_active and fourth.not_activated_reason == ""
    activation = ModelActivation.objects.first()
    assert (activation.model_version, activation.previous, activation.source) == (fourth, second, "retrain")


@pytest.mark.django_db
def test_a_forced_registration_of_a_failed_version_says_so_in_its_activation(active_model):
    forced = register_copy(active_model, activate=True, metrics=FAILED_GATE, source="retrain")
    assert forced.is_active
    assert ModelActivation.objects.first().note.startswith("activated although it failed its gate: MNIST test")


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
        "DIGIT_MODEL_CACHE": str(tmp_path / "model-cache"),
    }
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok 1")
