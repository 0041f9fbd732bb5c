import base64
import logging
import re
import struct
import zlib

import cv2
import numpy as np
import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import OperationalError, connection
from django.urls import reverse
from rest_framework.test import APIClient

from predictor.models import Drawing, ModelVersion
from predictor.tests.drawings import canvas_png, data_url

CREATE_URL = "/api/predictions/"
PAYLOAD_KEYS = {
    "id",
    "predicted_label",
    "confidence",
    "probabilities",
    "model_version",
    "input_image",
    "created_at",
    "feedback_label",
    "true_label",
}


def huge_png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares an enormous image (a decompression bomb's calling card)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def assert_error(response, status: int, code: str):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code
    assert isinstance(body["detail"], str) and len(body["detail"]) > 10
    assert Drawing.objects.count() == 0


@pytest.mark.django_db
def test_data_url_prediction_is_answered_and_stored(api_client, active_model, digit_png):
    png, label = digit_png
    response = api_client.post(CREATE_URL, {"image": data_url(png)}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == PAYLOAD_KEYS
    assert body["predicted_label"] == label
    assert len(body["probabilities"]) == 10
    assert sum(body["probabilities"]) == pytest.approx(1, abs=1e-4)
    assert body["confidence"] == pytest.approx(max(body["probabilities"]))
    assert body["model_version"] == active_model.version == 1
    assert body["input_image"].startswith("data:image/png;base64,")
    assert body["feedback_label"] is None and body["true_label"] is None

    drawing = Drawing.objects.get(id=body["id"])
    assert drawing.predicted_label == label
    assert drawing.model_version == active_model
    with drawing.image.open("rb") as stored:  # a clean PNG of the same pixels, not the bytes as sent
        kept = stored.read()
    assert np.array_equal(decoded(kept), decoded(png))
    assert drawing.image.name.endswith(f"{drawing.id}.png")
    assert (drawing.image_width, drawing.image_height) == (280, 280)
    assert drawing.input_array.shape == (28, 28) and drawing.input_array.max() >= 250
    assert drawing.processing_ms > 0


@pytest.mark.django_db
def test_bare_base64_and_multipart_upload_are_accepted(api_client, active_model, digit_png):
    png, label = digit_png
    bare = api_client.post(CREATE_URL, {"image": base64.b64encode(png).decode()}, format="json")
    upload = api_client.post(
        CREATE_URL, {"image": SimpleUploadedFile("digit.png", png, "image/png")}, format="multipart"
    )

    assert bare.status_code == 201 and bare.json()["predicted_label"] == label
    assert upload.status_code == 201, upload.content
    assert upload.json()["predicted_label"] == label
    assert Drawing.objects.count() == 2


@pytest.mark.django_db
def test_white_background_jpeg_drawing_is_read(api_client, active_model, mnist_train):
    images, labels = mnist_train
    ok, jpeg = cv2.imencode(".jpg", 255 - cv2.resize(images[1], (300, 300)), [cv2.IMWRITE_JPEG_QUALITY, 90])
    response = api_client.post(CREATE_URL, {"image": data_url(jpeg.tobytes(), "image/jpeg")}, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["predicted_label"] == labels[1]
    assert Drawing.objects.get().image.name.endswith(".png")  # stored losslessly, whatever was sent


@pytest.mark.django_db
def test_prediction_is_visible_to_its_session_and_staff_only(api_client, active_model, digit_png):
    png, _ = digit_png
    created = api_client.post(CREATE_URL, {"image": data_url(png)}, format="json").json()
    url = f"/api/predictions/{created['id']}/"

    assert api_client.get(url).json() == created
    stranger = APIClient()
    assert_not_found = stranger.get(url)
    assert assert_not_found.status_code == 404 and assert_not_found.json()["code"] == "not_found"
    reviewer = User.objects.create_user("reviewer", is_staff=True)
    reviewer.groups.add(Group.objects.get(name="Reviewers"))
    staff = APIClient()
    staff.force_login(reviewer)
    assert staff.get(url).status_code == 200
    unprivileged_staff = APIClient()
    unprivileged_staff.force_login(User.objects.create_user("clerk", is_staff=True))
    assert unprivileged_staff.get(url).status_code == 404
    assert APIClient().get("/api/predictions/00000000-0000-0000-0000-000000000000/").status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize(
    "payload, code",
    [
        ({"image": "this is not base64!"}, "invalid_image"),
        ({"image": base64.b64encode(b"plain text, not an image").decode()}, "invalid_image"),
        ({"image": "data:image/svg+xml;base64," + base64.b64encode(b"<svg/>").decode()}, "invalid_image"),
        ({"image": ""}, "invalid_image"),
        ({"image": 7}, "invalid_image"),
        ({"image": None}, "invalid_image"),
        ({"picture": "x"}, "invalid_image"),
        ({}, "invalid_image"),
        ([1, 2, 3], "invalid_image"),
    ],
)
def test_bad_images_are_refused_with_invalid_image(api_client, active_model, payload, code):
    assert_error(api_client.post(CREATE_URL, payload, format="json"), 400, code)


@pytest.mark.django_db
def test_blank_canvas_is_refused_with_empty_drawing(api_client, active_model, blank_png):
    response = api_client.post(CREATE_URL, {"image": data_url(blank_png)}, format="json")
    assert_error(response, 400, "empty_drawing")


@pytest.mark.django_db
def test_huge_declared_image_is_refused_without_decoding(api_client, active_model):
    response = api_client.post(CREATE_URL, {"image": data_url(huge_png_header(60000, 60000))}, format="json")
    assert_error(response, 400, "image_too_large")


@pytest.mark.django_db
def test_pixel_limit_is_configurable(api_client, active_model, digit_png, settings):
    settings.DIGIT_MAX_IMAGE_PIXELS = 100 * 100
    response = api_client.post(CREATE_URL, {"image": data_url(digit_png[0])}, format="json")
    assert_error(response, 400, "image_too_large")


@pytest.mark.django_db
def test_oversized_body_is_refused_with_413(api_client, active_model, settings):
    settings.DIGIT_MAX_UPLOAD_BYTES = 10_000
    response = api_client.post(CREATE_URL, {"image": "A" * 20_000}, format="json")
    assert_error(response, 413, "payload_too_large")


@pytest.mark.django_db
def test_unsupported_content_type_is_refused_with_415(api_client, active_model):
    response = api_client.post(CREATE_URL, "image=abc", content_type="text/plain")
    assert_error(response, 415, "unsupported_media_type")


@pytest.mark.django_db
def test_malformed_json_is_refused(api_client, active_model):
    response = api_client.post(CREATE_URL, '{"image": ', content_type="application/json")
    assert_error(response, 400, "malformed_request")


@pytest.mark.django_db
def test_no_active_model_gives_503_and_stores_nothing(api_client, digit_png):
    response = api_client.post(CREATE_URL, {"image": data_url(digit_png[0])}, format="json")
    assert_error(response, 503, "model_unavailable")
    assert "register_base_model" in response.json()["detail"]


@pytest.mark.django_db
def test_health_reports_database_and_model(api_client, active_model):
    response = api_client.get("/api/health/")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "model_version": 1}


@pytest.mark.django_db
def test_health_is_503_with_a_reason_without_a_model(api_client):
    response = api_client.get("/api/health/")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable" and "model" in response.json()["detail"]


def staff_client() -> APIClient:
    client = APIClient()
    client.force_login(User.objects.create_user("operator", is_staff=True))
    return client


@pytest.mark.django_db
def test_health_tells_staff_why_the_model_is_unavailable_and_strangers_only_that_it_is(api_client, caplog):
    public = api_client.get("/api/health/").json()
    assert public == {
        "status": "unavailable",
        "database": "ok",
        "model_version": None,
        "detail": "The model is unavailable; the reason is in the server log.",
    }
    staff = staff_client().get("/api/health/")
    assert staff.status_code == 503 and "register_base_model" in staff.json()["detail"]
    logged = [r for r in caplog.records if r.levelno == logging.ERROR and "register_base_model" in r.getMessage()]
    assert len(logged) == 2  # one line for each failed check


DRIVER_ERROR = (
    'connection to server at "db.internal" (10.0.0.5), port 5432 failed: '
    'FATAL: password authentication failed for user "digit"'
)


@pytest.mark.django_db
def test_health_keeps_the_database_error_for_the_log(api_client, active_model, monkeypatch, caplog):
    staff = staff_client()

    def unreachable(*args, **kwargs):
        raise OperationalError(DRIVER_ERROR)

    # Every query fails from here, the staff user's own included: staff are not recognised then.
    monkeypatch.setattr(connection, "cursor", unreachable)
    for client in (api_client, staff):
        response = client.get("/api/health/")
        assert response.status_code == 503
        assert response.json() == {
            "status": "unavailable",
            "database": "unavailable",
            "model_version": None,
            "detail": "The database is unavailable; the reason is in the server log.",
        }
        assert b"10.0.0.5" not in response.content and b"password" not in response.content
    logged = [r for r in caplog.records if r.levelno == logging.ERROR and DRIVER_ERROR in r.getMessage()]
    assert len(logged) == 2


@pytest.mark.django_db
def test_feedback_is_stored_and_replaced(api_client, active_model, digit_png):
    created = api_client.post(CREATE_URL, {"image": data_url(digit_png[0])}, format="json").json()
    url = f"/api/predictions/{created['id']}/feedback/"

    first = api_client.post(url, {"label": 3}, format="json")
    assert first.status_code == 200 and first.json()["feedback_label"] == 3
    again = api_client.post(url, {"correct": True}, format="json")
    assert again.status_code == 200 and again.json()["feedback_label"] == created["predicted_label"]
    drawing = Drawing.objects.get(id=created["id"])
    assert drawing.feedback_label == created["predicted_label"] and drawing.feedback_at is not None
    assert drawing.true_label is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    "payload",
    [
        {"label": 10},
        {"label": -1},
        {"label": "seven"},
        {"label": True},
        {"correct": False},
        {},
        {"label": 3, "correct": True},
    ],
)
def test_bad_feedback_is_refused(api_client, drawing, payload):
    session = api_client.session
    session["visitor"] = "visitor-a"
    session.save()
    response = api_client.post(f"/api/predictions/{drawing.id}/feedback/", payload, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_label"
    drawing.refresh_from_db()
    assert drawing.feedback_label is None


@pytest.mark.django_db
def test_feedback_from_another_session_is_404(api_client, drawing):
    response = api_client.post(f"/api/predictions/{drawing.id}/feedback/", {"label": 3}, format="json")
    assert response.status_code == 404
    drawing.refresh_from_db()
    assert drawing.feedback_label is None


@pytest.mark.django_db
def test_drawing_image_is_served_to_its_visitor_only(client, active_model, digit_png):
    created = client.post(CREATE_URL, {"image": data_url(digit_png[0])}, content_type="application/json").json()
    url = reverse("predictor:drawing-image", args=[created["id"]])

    own = client.get(url)
    with Drawing.objects.get(id=created["id"]).image.open("rb") as stored:
        assert own.status_code == 200 and b"".join(own.streaming_content) == stored.read()
    assert APIClient().get(url).status_code == 404


@pytest.mark.django_db
def test_schema_and_docs_are_served_offline(client):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200 and b"/api/predictions/" in schema.content
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"cdn" not in docs.content.lower() and b"unpkg" not in docs.content.lower()


BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"


@pytest.mark.django_db
def test_a_browser_is_shown_the_schema_as_text_and_clients_still_get_yaml_or_json(client):
    in_browser = client.get("/api/schema/", headers={"Accept": BROWSER_ACCEPT})
    assert in_browser.status_code == 200
    assert in_browser["Content-Type"].startswith("text/plain")
    assert not in_browser.get("Content-Disposition", "").startswith("attachment")
    assert in_browser.content.startswith(b"openapi: 3")
    as_json = client.get("/api/schema/", headers={"Accept": "application/json"})  # what Swagger UI asks for
    assert as_json["Content-Type"].startswith("application/json") and as_json.json()["openapi"].startswith("3")
    as_openapi = client.get("/api/schema/", headers={"Accept": "application/vnd.oai.openapi"})
    assert as_openapi["Content-Type"].startswith("application/vnd.oai.openapi")


@pytest.fixture
def schema(client):
    return client.get("/api/schema/", headers={"Accept": "application/json"}).json()


def documented_errors(operation: dict) -> dict[int, set[str]]:
    """Return {status: codes of its examples} for the error responses of one operation."""
    errors = {}
    for status, response in operation["responses"].items():
        if int(status) >= 400 and "Health" not in str(response):
            body = response["content"]["application/json"]
            assert body["schema"] == {"$ref": "#/components/schemas/Error"}, status
            errors[int(status)] = {example["value"]["code"] for example in body["examples"].values()}
    return errors


@pytest.mark.django_db
def test_the_schema_lists_every_error_of_each_endpoint_with_its_codes(schema):
    paths = schema["paths"]
    assert documented_errors(paths["/api/predictions/"]["post"]) == {
        400: {"invalid_image", "empty_drawing", "image_too_large", "malformed_request"},
        403: {"permission_denied"},
        413: {"payload_too_large"},
        415: {"unsupported_media_type"},
        429: {"throttled"},
        503: {"model_unavailable"},
    }
    assert documented_errors(paths["/api/predictions/{drawing_id}/"]["get"]) == {404: {"not_found"}}
    assert documented_errors(paths["/api/predictions/{drawing_id}/feedback/"]["post"]) == {
        400: {"invalid_label", "malformed_request"},
        403: {"permission_denied"},
        404: {"not_found"},
        413: {"payload_too_large"},
        415: {"unsupported_media_type"},
        429: {"throttled"},
    }
    health = paths["/api/health/"]["get"]["responses"]
    assert set(health) == {"200", "503"}
    assert health["503"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Health"}
    assert schema["components"]["schemas"]["Error"]["required"] == ["code", "detail"]


@pytest.mark.django_db
def test_every_error_code_the_readme_lists_is_documented_with_its_status(schema):
    readme = (settings.BASE_DIR / "README.md").read_text()
    errors = " ".join(readme[readme.index("Errors are JSON") :].split("\n\n")[0].split())
    listed = {
        (int(status), code)
        for status, codes in re.findall(r"`(\d{3})` ((?:`[a-z_]+`(?:, )?)+)", errors)
        for code in re.findall(r"`([a-z_]+)`", codes)
    }
    assert len(listed) == 11, listed
    documented = {
        (status, code)
        for path in schema["paths"].values()
        for operation in path.values()
        for status, codes in documented_errors(operation).items()
        for code in codes
    }
    assert listed <= documented, listed - documented


@pytest.mark.django_db
def test_no_endpoint_asks_for_a_login_in_the_docs(schema):
    assert "securitySchemes" not in schema.get("components", {})
    assert "security" not in schema
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert "security" not in operation, (method, path)


@pytest.mark.django_db
def test_each_201_has_its_row_and_file(api_client, active_model, mnist_train):
    images, labels = mnist_train
    answers = [
        api_client.post(CREATE_URL, {"image": data_url(canvas_png(images[i], size=150 + 40 * i))}, format="json")
        for i in range(10)
    ]
    assert [a.status_code for a in answers] == [201] * 10
    assert sum(a.json()["predicted_label"] == labels[i] for i, a in enumerate(answers)) >= 9
    for answer in answers:
        drawing = Drawing.objects.get(id=answer.json()["id"])
        assert drawing.image.storage.exists(drawing.image.name)
    assert ModelVersion.objects.get().drawings.count() == 10


@pytest.mark.django_db
def test_error_details_are_plain_sentences(api_client, active_model, blank_png):
    empty = api_client.post(CREATE_URL, {"image": data_url(blank_png)}, format="json").json()
    not_base64 = api_client.post(CREATE_URL, {"image": "%%%"}, format="json").json()
    assert empty["detail"].startswith("Draw a digit first")
    assert not_base64["detail"].startswith("The image data is not valid base64")


def test_prediction_answer_is_what_the_declared_fields_give(api_client, active_model, digit_png):
    from rest_framework import serializers

    from predictor.api import PredictionOutputSerializer

    png, _ = digit_png
    response = api_client.post(CREATE_URL, {"image": data_url(png)}, format="json")
    drawing = Drawing.objects.select_related("model_version").get(id=response.json()["id"])
    drawing.feedback_label, drawing.true_label = 3, 4
    serializer = PredictionOutputSerializer(drawing)
    # DRF's generic field-by-field representation is the reference for the hand-built one.
    assert serializer.data == serializers.Serializer.to_representation(serializer, drawing)


@pytest.mark.django_db
def test_loading_a_drawing_does_not_open_its_image(make_drawing):
    drawing = make_drawing(image="drawings/never-written.png", image_width=None, image_height=None)
    loaded = Drawing.objects.get(id=drawing.id)
    assert loaded.image.name == "drawings/never-written.png" and loaded.image_width is None


def decoded(png: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
