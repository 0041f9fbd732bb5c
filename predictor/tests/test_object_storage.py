"""Drawings and model artefacts in an S3-compatible bucket (a real S3 protocol server, see s3.py)."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.urls import reverse
from rest_framework.test import APIClient

from predictor import model_cache
from predictor.models import Drawing
from predictor.preprocessing import preprocess
from predictor.tests.drawings import canvas_png, data_url
from predictor.tests.s3 import s3_storages
from training import files

CREATE_URL = "/api/predictions/"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Prints which storages a fresh process gives the drawings and ModelVersion's files, as JSON.
STORAGE_PROBE = """
import json, django
django.setup()
from predictor.models import Drawing, ModelVersion
def describe(field):
    storage = field.storage  # __class__, not type(): the drawings' is Django's lazy default_storage
    return {"class": storage.__class__.__name__, "bucket": storage.bucket_name, "location": storage.location}
print(json.dumps({"drawings": describe(Drawing._meta.get_field("image")),
                  "models": describe(ModelVersion._meta.get_field("tflite"))}))
"""


def files_under(folder) -> list[Path]:
    return [path for path in Path(folder).rglob("*") if path.is_file()]


def predict(client, png) -> Drawing:
    response = client.post(CREATE_URL, {"image": data_url(png)}, format="json")
    assert response.status_code == 201, response.content
    return Drawing.objects.get(id=response.json()["id"])


def test_without_a_bucket_drawings_and_models_stay_in_local_folders():
    configured = s3_storages(bucket="", endpoint_url="")

    assert configured["default"] == {"BACKEND": "django.core.files.storage.FileSystemStorage"}
    assert configured["models"] == {"BACKEND": "predictor.models.ModelStorage"}


def test_a_bucket_takes_drawings_and_models_under_their_own_prefixes_privately():
    configured = s3_storages(bucket="digits", endpoint_url="http://s3.internal:9000")

    drawings, models = configured["default"], configured["models"]
    assert drawings["BACKEND"] == models["BACKEND"] == "storages.backends.s3.S3Storage"
    assert drawings["OPTIONS"]["bucket_name"] == models["OPTIONS"]["bucket_name"] == "digits"
    assert drawings["OPTIONS"]["endpoint_url"] == "http://s3.internal:9000"
    assert drawings["OPTIONS"]["addressing_style"] == "path"  # one host name for every bucket
    assert drawings["OPTIONS"].get("location", "") == "" and models["OPTIONS"]["location"] == "models"
    for options in (drawings["OPTIONS"], models["OPTIONS"]):
        assert options["default_acl"] is None  # the bucket's own ACL: private
        assert options["querystring_auth"] is False  # no signed link around the view that checks the visitor
        assert options["file_overwrite"] is False


def test_a_process_started_with_a_bucket_stores_drawings_and_models_there(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("DIGIT_")}
    env.update(DJANGO_SETTINGS_MODULE="digitsite.settings", DIGIT_S3_BUCKET="digits", DEBUG="true")
    result = subprocess.run(
        [sys.executable, "-c", STORAGE_PROBE],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr

    probe = json.loads(result.stdout)
    assert probe["drawings"] == {"class": "S3Storage", "bucket": "digits", "location": ""}
    assert probe["models"] == {"class": "S3Storage", "bucket": "digits", "location": "models"}


@pytest.mark.django_db
def test_a_prediction_stores_its_image_in_the_bucket_and_nothing_on_disk(api_client, active_model, digit_png, use_s3):
    bucket = use_s3()

    drawing = predict(api_client, digit_png[0])

    assert drawing.image.name.startswith("drawings/")
    assert bucket.keys() == [drawing.image.name]
    stored = bucket.read(drawing.image.name)
    assert stored.startswith(PNG_SIGNATURE)
    with drawing.image.open("rb") as image:
        assert image.read() == stored
    assert files_under(settings.MEDIA_ROOT) == []


@pytest.mark.django_db
def test_the_image_view_serves_the_bucket_object_to_its_visitor_only(api_client, active_model, digit_png, use_s3):
    bucket = use_s3()
    drawing = predict(api_client, digit_png[0])
    url = reverse("predictor:drawing-image", args=[drawing.id])

    response = api_client.get(url)
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert b"".join(response.streaming_content) == bucket.read(drawing.image.name)
    assert APIClient().get(url).status_code == 404

    bucket.delete(drawing.image.name)
    assert api_client.get(url).status_code == 404


@pytest.mark.django_db
def test_export_dataset_reads_the_images_from_the_bucket(make_drawing, mnist_train, tmp_path, use_s3):
    bucket = use_s3()
    images, labels = mnist_train
    exported = []
    for i in range(2):
        name = default_storage.save(f"drawings/digit{i}.png", ContentFile(canvas_png(images[i])))
        exported.append(make_drawing(image=name, true_label=int(labels[i])))
    missing = make_drawing(image="drawings/gone.png", true_label=3)
    assert bucket.keys("drawings/digit") == ["drawings/digit0.png", "drawings/digit1.png"]

    out, stderr = tmp_path / "data.npz", io.StringIO()
    call_command("export_dataset", "--out", str(out), stdout=io.StringIO(), stderr=stderr)

    with np.load(out) as data:
        x, ids = data["x"], data["ids"].tolist()
    expected = sorted(exported, key=lambda drawing: drawing.id)
    assert ids == [str(drawing.id) for drawing in expected]
    for pixels, drawing in zip(x, expected):
        i = exported.index(drawing)
        np.testing.assert_array_equal(pixels, preprocess(canvas_png(images[i])).astype(np.uint8))
    assert f"Skipped drawing {missing.id}" in stderr.getvalue()


@pytest.mark.django_db
def test_purge_orphan_files_lists_the_bucket_and_deletes_only_old_orphans(make_drawing, use_s3):
    bucket = use_s3()
    out = io.StringIO()
    call_command("purge_orphan_files", stdout=out)
    assert "No stored drawings." in out.getvalue()

    kept = default_storage.save("drawings/2025/01/01/kept.png", ContentFile(PNG_SIGNATURE))
    make_drawing(image=kept)
    orphan = "drawings/2025/01/02/orphan.png"
    bucket.put(orphan, PNG_SIGNATURE)

    young = io.StringIO()
    call_command("purge_orphan_files", stdout=young)  # the default --min-age keeps a file written just now
    assert "Deleted 0 orphan file(s)." in young.getvalue()

    dry = io.StringIO()
    call_command("purge_orphan_files", "--dry-run", "--min-age", "0", stdout=dry)
    assert f"Would delete {orphan}" in dry.getvalue() and "Would delete 1 orphan file(s)." in dry.getvalue()
    assert bucket.keys("drawings/2025/") == [kept, orphan]

    done = io.StringIO()
    call_command("purge_orphan_files", "--min-age", "0", stdout=done)
    assert "Deleted 1 orphan file(s)." in done.getvalue()
    assert bucket.keys("drawings/2025/") == [kept]


@pytest.mark.django_db
def test_a_registered_model_lands_under_models_in_the_bucket_and_is_served_from_it(api_client, digit_png, use_s3):
    bucket = use_s3()

    call_command("register_base_model", stdout=io.StringIO())

    assert bucket.keys("models/") == ["models/v1/model.keras", "models/v1/model.tflite"]
    assert bucket.read("models/v1/model.tflite") == (files.BASE_DIR / files.TFLITE_FILE).read_bytes()
    assert files_under(settings.DIGIT_MODEL_ROOT) == []
    # Serving from the bucket: a worker that has loaded nothing yet reads the model from there.
    model_cache.forget_loaded_models()
    drawing = predict(api_client, digit_png[0])
    assert drawing.model_version.version == 1
