import hashlib
from pathlib import Path

import pytest
from django.conf import settings
from django.db.models.fields.files import FieldFile

from predictor import model_cache, services
from predictor.models import ModelStorage, ModelVersion
from predictor.tests.drawings import data_url

CREATE_URL = "/api/predictions/"


@pytest.fixture(autouse=True)
def local_model_copies(settings, tmp_path):
    settings.DIGIT_MODEL_CACHE = tmp_path / "model-cache"
    settings.DIGIT_MODEL_CHECK_SECONDS = 0


@pytest.fixture
def storage_reads(monkeypatch):
    """Return the names read from model storage from now on, in order."""
    names = []
    real_open = ModelStorage.open

    def counting_open(storage, name, mode="rb"):
        names.append(name)
        return real_open(storage, name, mode)

    monkeypatch.setattr(ModelStorage, "open", counting_open)
    return names


def predict(api_client, digit_png):
    return api_client.post(CREATE_URL, {"image": data_url(digit_png[0])}, format="json")


def local_copy(version: ModelVersion) -> Path:
    return Path(settings.DIGIT_MODEL_CACHE) / f"v{version.version}-{version.tflite_sha256}.tflite"


@pytest.mark.django_db
def test_a_file_changed_in_storage_gives_503_with_the_reason_until_it_is_put_back(api_client, active_model, digit_png):
    path = Path(active_model.tflite.path)
    registered = path.read_bytes()
    model_cache.forget_loaded_models()  # a worker on a host that has not fetched the model yet
    path.write_bytes(registered[:-16] + bytes(16))  # still a loadable model, but not the one registered

    refused = predict(api_client, digit_png)
    assert refused.status_code == 503
    assert refused.json()["code"] == "model_unavailable"
    assert (
        "Model version 1 cannot be loaded: its file v1/model.tflite does not match its recorded SHA-256; "
        "it was changed after registration." in refused.json()["detail"]
    )
    assert not local_copy(active_model).exists()  # nothing unchecked is kept

    path.write_bytes(registered)  # the operator puts the registered file back: no restart needed
    answered = predict(api_client, digit_png)
    assert answered.status_code == 201 and answered.json()["model_version"] == 1


@pytest.mark.django_db
def test_the_workers_of_a_host_read_storage_once_and_share_the_local_copy(active_model, storage_reads):
    path = local_copy(active_model)
    assert path.read_bytes() == Path(active_model.tflite.path).read_bytes()  # left by the first load

    model_cache.forget_loaded_models(keep_local_copies=True)  # another worker of the same host starts
    version, classifier = model_cache.active_classifier()
    assert version == active_model and classifier.name == "v1/model.tflite"
    assert storage_reads == []


@pytest.mark.django_db
def test_a_changed_local_copy_is_detected_and_fetched_again(active_model, storage_reads, api_client, digit_png):
    path = local_copy(active_model)
    path.write_bytes(path.read_bytes()[:-16] + bytes(16))

    model_cache.forget_loaded_models(keep_local_copies=True)
    assert predict(api_client, digit_png).status_code == 201
    assert storage_reads == ["v1/model.tflite"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == active_model.tflite_sha256


@pytest.mark.django_db
def test_without_a_usable_local_folder_the_model_is_still_served(
    active_model, settings, tmp_path, api_client, digit_png
):
    settings.DIGIT_MODEL_CACHE = tmp_path / "a-file"
    settings.DIGIT_MODEL_CACHE.write_text("not a folder")
    model_cache.forget_loaded_models(keep_local_copies=True)
    assert predict(api_client, digit_png).status_code == 201


@pytest.mark.django_db
def test_a_version_registered_before_digests_is_served_unchecked_from_storage(active_model, storage_reads):
    ModelVersion.objects.filter(id=active_model.id).update(tflite_sha256="")
    model_cache.forget_loaded_models()
    version, _classifier = model_cache.active_classifier()
    assert version.version == 1 and storage_reads == ["v1/model.tflite"]
    assert not any(Path(settings.DIGIT_MODEL_CACHE).glob("*.tflite"))  # no digest to name a copy by


@pytest.mark.django_db
def test_models_are_read_only_through_the_storage_api(active_model, monkeypatch, api_client, digit_png):
    def no_local_path(field_file):
        raise NotImplementedError("This backend doesn't support absolute paths.")

    # As with a bucket, a stored file has no local path: registering, activating and serving never ask for one.
    monkeypatch.setattr(FieldFile, "path", property(no_local_path))
    base = Path(settings.BASE_DIR) / "training" / "artifacts" / "base"
    second = services.model_version_register(
        tflite_path=base / "model.tflite", keras_path=base / "model.keras", metrics={}, activate=False
    )
    services.model_version_activate(version=second, source="command")
    model_cache.forget_loaded_models()
    answered = predict(api_client, digit_png)
    assert answered.status_code == 201 and answered.json()["model_version"] == 2
