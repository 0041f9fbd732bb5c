"""Hostile or careless clients: fuzzed payloads, nasty images, oversized bodies, forged names, CSRF, staff data.

Every refusal is a 4xx with the error shape {"code", "detail"}, logs no traceback and no error; nothing is
stored; memory stays bounded.
"""

import base64
import codecs
import contextlib
import encodings.aliases
import io
import json
import logging
import re
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.handlers.wsgi import WSGIHandler
from django.test import Client
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from PIL import Image
from rest_framework.test import APIClient
from rest_framework.throttling import ScopedRateThrottle

from predictor.api import MAX_JSON_DEPTH, _json_nested_deeper_than
from predictor.models import Drawing
from predictor.tests.drawings import data_url

CREATE_URL = "/api/predictions/"
FUZZ = hypothesis_settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(autouse=True)
def no_throttling(monkeypatch):
    """Fuzzing sends hundreds of requests from one address; the limits have their own tests."""
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"predictions": None, "feedback": None})


@pytest.fixture(autouse=True)
def nothing_is_logged_as_an_error(caplog, monkeypatch):
    """Fail a test whose requests logged an error or a traceback: a refusal is a warning at most."""
    # Django's loggers do not propagate to the root logger, where caplog listens.
    monkeypatch.setattr(logging.getLogger("django"), "propagate", True)
    yield
    records = caplog.get_records("setup") + caplog.get_records("call")
    errors = [r for r in records if r.levelno >= logging.ERROR or r.exc_info or r.exc_text]
    assert not errors, [(r.name, r.getMessage()[:200]) for r in errors]


def assert_refused(response, statuses=range(400, 500)):
    assert response.status_code in statuses, (response.status_code, response.content[:300])
    body = response.json()
    assert set(body) == {"code", "detail"}
    assert re.fullmatch(r"[a-z_]+", body["code"]) and len(body["detail"]) > 10
    assert Drawing.objects.count() == 0


def post_json(client, payload):
    return client.post(CREATE_URL, payload, format="json")


def post_raw(client, body: bytes, content_type: str):
    return client.generic("POST", CREATE_URL, body, content_type=content_type)


# Property-based fuzzing of the prediction API.

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
base64_text = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=", max_size=400)
media_types = st.sampled_from(
    ["image/png", "image/jpeg", "image/webp", "image/gif", "image/svg+xml", "text/html", "application/pdf", "", "x"]
)


@pytest.mark.django_db
@FUZZ
@given(data=st.binary(max_size=2000), as_data_url=st.booleans())
def test_random_bytes_as_an_image_are_refused(api_client, active_model, data, as_data_url):
    encoded = base64.b64encode(data).decode()
    assert_refused(post_json(api_client, {"image": data_url(data) if as_data_url else encoded}))


@pytest.mark.django_db
@FUZZ
@given(text=base64_text | st.text(max_size=400), header=st.sampled_from(["", "data:image/png;base64,", "data:,"]))
def test_broken_and_truncated_base64_is_refused(api_client, active_model, text, header):
    assert_refused(post_json(api_client, {"image": header + text}))


@pytest.mark.django_db
@FUZZ
@given(media_type=media_types, parameters=st.sampled_from([";base64", "", ";charset=utf-8", ";base64;x=1"]))
def test_data_urls_of_the_wrong_type_or_encoding_are_refused(
    api_client, active_model, media_type, parameters, digit_png
):
    Drawing.objects.all().delete()
    url = f"data:{media_type}{parameters}," + base64.b64encode(digit_png[0]).decode()
    response = post_json(api_client, {"image": url})
    if media_type in ("image/png", "image/jpeg", "image/webp") and "base64" in parameters:
        assert response.status_code == 201  # an accepted type; the format itself is read from the bytes
    else:
        assert_refused(response)


@pytest.mark.django_db
@FUZZ
@given(payload=json_values, wrap=st.booleans())
def test_json_of_every_wrong_shape_is_refused(api_client, active_model, payload, wrap):
    if wrap:
        payload = {"image": payload}
    body = json.dumps(payload).encode()
    assert_refused(post_raw(api_client, body, "application/json"))


@pytest.mark.django_db
@FUZZ
@given(
    body=st.binary(max_size=3000),
    content_type=st.sampled_from(
        [
            "application/json",
            "multipart/form-data; boundary=xyz",
            "multipart/form-data",
            "text/plain",
            "application/octet-stream",
            "image/png",
            "application/x-www-form-urlencoded",
            "",
        ]
    ),
)
def test_random_bodies_of_any_content_type_are_refused(api_client, active_model, body, content_type):
    assert_refused(post_raw(api_client, body, content_type))


@pytest.mark.django_db
@FUZZ
@given(
    cuts=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
    truncate=st.integers(0, 10**6) | st.none(),
)
def test_damaged_drawings_never_cause_a_server_error(api_client, active_model, digit_png, cuts, truncate):
    Drawing.objects.all().delete()
    damaged = bytearray(digit_png[0])
    for position, value in cuts:
        damaged[position % len(damaged)] = value
    if truncate is not None:
        damaged = damaged[: truncate % len(damaged)]
    response = post_json(api_client, {"image": data_url(bytes(damaged))})
    # A byte flipped in an unimportant place can leave a readable image; anything else is a 400.
    assert response.status_code in (201, 400), response.content[:300]
    if response.status_code == 400:
        assert_refused(response)


@pytest.mark.django_db
@pytest.mark.parametrize("text", ["é" * 8, "data:image/png;base64,QUJD€", "QUJD\u00a0QUJD", "\x00" * 4, "\ud7ff" * 4])
def test_text_that_is_not_ascii_is_refused(api_client, active_model, text):
    assert_refused(post_json(api_client, {"image": text}))


@pytest.mark.django_db
@pytest.mark.parametrize("size", [4_000_000, 5 * 1024 * 1024 - 100])
def test_huge_strings_under_the_body_limit_are_refused(api_client, active_model, size):
    assert_refused(post_json(api_client, {"image": "A" * size}))
    assert_refused(post_json(api_client, {"image": "data:image/png;base64," + "!" * size}))


# Nested JSON: Python's parser recurses once per level and fails at about a thousand, so depth is
# refused as malformed at any size up to the body limit, on every endpoint that takes a body.

OPENERS = ["[", '{"image":', '{"label":', '{"a":1,"image":', "[0,"]
CLOSERS = {"[": "]", "[0,": "]"}


def nested_body(pattern: list[str], depth: int, leaf: str = "0") -> bytes:
    """Return JSON text nesting the openers of `pattern`, in turn, `depth` levels deep around `leaf`."""
    openers = [pattern[level % len(pattern)] for level in range(depth)]
    closers = "".join(CLOSERS.get(opener, "}") for opener in reversed(openers))
    return ("".join(openers) + leaf + closers).encode()


@pytest.fixture
def feedback_url(drawing, api_client):
    """The feedback URL of a drawing of this client's visitor, so only the body can be wrong."""
    session = api_client.session
    session["visitor"] = "visitor-a"
    session.save()
    return f"/api/predictions/{drawing.id}/feedback/"


@pytest.mark.django_db
@pytest.mark.parametrize("opener", OPENERS)
@pytest.mark.parametrize("size", [100_000, 5 * 1024 * 1024 - 100])
def test_deeply_nested_json_up_to_the_body_limit_is_malformed(api_client, active_model, opener, size):
    depth = size // (len(opener) + 1)
    body = nested_body([opener], depth)
    assert len(body) <= 5 * 1024 * 1024
    response = post_raw(api_client, body, "application/json")
    assert_refused(response, {400})
    assert response.json()["code"] == "malformed_request" and "levels deep" in response.json()["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize("depth", [33, 200, 900, 990, 5000])
def test_nesting_the_feedback_label_is_malformed(api_client, feedback_url, depth):
    response = api_client.generic("POST", feedback_url, nested_body(['{"label":', "["], depth), "application/json")
    assert response.status_code == 400 and response.json()["code"] == "malformed_request", response.content[:300]


@pytest.mark.django_db
def test_nesting_up_to_the_limit_is_read_and_told_what_is_wrong(api_client, active_model):
    at_limit = post_raw(api_client, nested_body(['{"image":'], MAX_JSON_DEPTH, '"AAAA"'), "application/json")
    assert_refused(at_limit, {400})
    assert at_limit.json()["code"] == "invalid_image"
    over = post_raw(api_client, nested_body(['{"image":'], MAX_JSON_DEPTH + 1, '"AAAA"'), "application/json")
    assert over.json()["code"] == "malformed_request"


def json_depth(value) -> int:
    if isinstance(value, dict):
        value = list(value.values())
    return 1 + max(map(json_depth, value), default=0) if isinstance(value, list) else 0


tricky_text = st.text(alphabet='[]{}"\\ax\u00e9\n', max_size=8)
json_trees = st.recursive(
    st.none() | st.booleans() | st.integers() | tricky_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(tricky_text, children, max_size=4),
    max_leaves=60,
)


@FUZZ
@given(value=json_trees, depth=st.integers(0, 12), ascii_only=st.booleans())
def test_the_depth_check_is_exact_on_valid_json(value, depth, ascii_only):
    body = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert _json_nested_deeper_than(body, depth) == (json_depth(value) > depth)


@pytest.mark.django_db
@FUZZ
@given(
    pattern=st.lists(st.sampled_from(OPENERS), min_size=1, max_size=4),
    depth=st.integers(1, 200_000),
    leaf=st.sampled_from(["0", '"x"', "null", "[]", "{}", '"data:image/png;base64,AAAA"']),
    multipart=st.booleans(),
)
def test_nested_bodies_of_any_depth_are_refused_without_server_error(
    api_client, active_model, pattern, depth, leaf, multipart
):
    body = nested_body(pattern, depth, leaf)
    if multipart:  # the same text as a form field: a string, not parsed as JSON
        response = api_client.post(CREATE_URL, {"image": body.decode()}, format="multipart")
    else:
        response = post_raw(api_client, body, "application/json")
    assert_refused(response, {400})


@pytest.mark.django_db
@pytest.mark.parametrize(
    "fields",
    [
        {f"field{n}": "x" for n in range(1200)},
        {"image": ["x"] * 1200},
        {"image": [SimpleUploadedFile(f"digit{n}.png", b"\x89PNG") for n in range(150)]},
    ],
    ids=["too-many-fields", "too-many-values", "too-many-files"],
)
def test_multipart_bodies_with_too_many_parts_are_malformed(api_client, active_model, fields):
    response = post_raw(api_client, encode_multipart(BOUNDARY, fields), MULTIPART_CONTENT)
    assert_refused(response, {400})
    assert response.json()["code"] == "malformed_request"


def known_codecs() -> list[str]:
    """Return the name of every codec this Python can look up (text, bytes-to-bytes and odd ones alike)."""
    names = set()
    for name in encodings.aliases.aliases.values():
        with contextlib.suppress(LookupError):  # listed, but not on this platform (mbcs)
            names.add(codecs.lookup(name).name)
    return sorted(names)


# Every codec Python knows, as the charset a client declares.
CHARSETS = known_codecs()


@pytest.mark.django_db
@FUZZ
@given(
    charset=st.sampled_from(CHARSETS + ["x", ""]),
    multipart=st.booleans(),
    payload=st.sampled_from([{"image": "abc"}, {"image": "data:image/png;base64,AAAA"}]),
)
@example(charset="idna", multipart=True, payload={"image": "abc"})  # fails inside Django's multipart parser
def test_any_declared_charset_is_refused_without_server_error(api_client, active_model, charset, multipart, payload):
    if multipart:
        body, content_type = encode_multipart(BOUNDARY, payload), MULTIPART_CONTENT
    else:
        body, content_type = json.dumps(payload).encode(), "application/json"
    assert_refused(post_raw(api_client, body, f"{content_type}; charset={charset}"), {400})


# A corpus of nasty images, as data URLs and as multipart uploads.


def chunk(kind: bytes, body: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + body) if crc is None else crc
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc & 0xFFFFFFFF)


def png(width: int, height: int, raw: bytes, *, colour_type: int = 0, extra: bytes = b"", level: int = 9) -> bytes:
    """A PNG built by hand: 8-bit, the given colour type, `raw` as the filtered scanlines."""
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + extra
        + chunk(b"IDAT", zlib.compress(raw, level))
        + chunk(b"IEND", b"")
    )


def bomb(side: int) -> bytes:
    """A real decompression bomb: a blank side x side greyscale PNG, a few kB compressed."""
    return png(side, side, bytes(side * (side + 1)))


def pillow(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


@pytest.fixture(scope="module")
def digit_image(mnist_train) -> Image.Image:
    """A 280x280 black-on-white drawing of an MNIST digit, as a greyscale PIL image."""
    images, _ = mnist_train
    return Image.fromarray(255 - cv2.resize(images[0], (280, 280), interpolation=cv2.INTER_LINEAR))


def nasty_corpus(digit: Image.Image) -> dict[str, tuple[bytes, set[int]]]:
    """Return name -> (file bytes, acceptable statuses): readable oddities may be read, the rest refused."""
    good = pillow(digit.convert("RGBA"), "PNG")
    idat = good.index(b"IDAT")
    wrong_crc = bytearray(good)
    wrong_crc[idat + 4 + struct.unpack(">I", good[idat - 4 : idat])[0]] ^= 0xFF
    frames = [digit.convert("P"), Image.new("P", digit.size, 255)]
    ztxt_bomb = chunk(b"zTXt", b"comment\x00\x00" + zlib.compress(bytes(50_000_000), 9))
    refused, readable = {400}, {201, 400}
    return {
        "bomb within the pixel limit": (bomb(4096), {400}),  # decoded (16M pixels), blank: empty drawing
        "bomb over the pixel limit": (bomb(8192), {400}),
        "huge declared png": (png(100_000, 100_000, b"\0" * 10), refused),
        "huge declared jpeg": (
            pillow(Image.new("L", (16, 16)), "JPEG")[:2] + b"\xff\xc0\x00\x0b\x08\xff\xff\xff\xff\x01\x01\x11\x00",
            refused,
        ),
        "zero width png": (png(0, 10, b""), refused),
        "1x1 png": (pillow(Image.new("L", (1, 1)), "PNG"), refused),
        "16-bit grey png": (pillow(Image.fromarray(np.asarray(digit, np.uint16) * 257), "PNG"), readable),
        "palette png": (pillow(digit.convert("P"), "PNG"), readable),
        "grey+alpha png": (pillow(digit.convert("LA"), "PNG"), readable),
        "interlaced png": (cv2.imencode(".png", np.asarray(digit))[1].tobytes(), readable),
        "cmyk jpeg": (pillow(digit.convert("CMYK"), "JPEG"), readable),
        "progressive jpeg": (pillow(digit.convert("RGB"), "JPEG", progressive=True), readable),
        "webp": (pillow(digit.convert("RGB"), "WEBP"), readable),
        "animated webp": (
            pillow(frames[0].convert("RGB"), "WEBP", save_all=True, append_images=[frames[1].convert("RGB")]),
            readable,
        ),
        "animated gif": (pillow(frames[0], "GIF", save_all=True, append_images=frames[1:]), refused),
        "svg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="280" height="280"><text>7</text></svg>', refused),
        "bmp": (pillow(digit, "BMP"), refused),
        "tiff": (pillow(digit, "TIFF"), refused),
        "html behind a png signature": (b"\x89PNG\r\n\x1a\n<html><script>alert(1)</script></html>", refused),
        "truncated png": (good[: len(good) // 2], refused),
        "png without IEND": (good[:-12], readable),
        "png with a wrong crc": (bytes(wrong_crc), refused),
        "png with a zTXt bomb": (png(280, 280, bytes(280 * 281), extra=ztxt_bomb), refused),
        "truncated jpeg": (pillow(digit.convert("RGB"), "JPEG")[:300], refused),
        "empty file": (b"", refused),
    }


def current_rss_mb() -> float:
    """Return this process's resident memory now (not its peak), in MB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096 / 2**20


@pytest.mark.django_db
def test_nasty_images_are_answered_without_server_error_and_memory_stays_bounded(api_client, active_model, digit_image):
    corpus = nasty_corpus(digit_image)
    rss = []
    for _ in range(3):
        for name, (data, statuses) in corpus.items():
            for response in (
                post_json(api_client, {"image": data_url(data)}),
                api_client.post(CREATE_URL, {"image": SimpleUploadedFile("x", data)}, format="multipart"),
            ):
                assert response.status_code in statuses, (name, response.status_code, response.content[:300])
                if response.status_code != 201:
                    assert_refused(response)
                Drawing.objects.all().delete()
        rss.append(current_rss_mb())
    # The first round warms caches and allocators; later rounds must stay near where it ended (no
    # leak). Resident memory of a process this size moves by tens of MB either way between rounds as
    # the allocator returns and reuses pages, so the bound is against the warm level, not the round before.
    assert max(rss[1:]) - rss[0] < 20, rss


@pytest.mark.django_db
def test_readable_oddities_are_read_correctly(api_client, active_model, digit_image, mnist_train):
    _, labels = mnist_train
    corpus = nasty_corpus(digit_image)
    for name in ("16-bit grey png", "palette png", "grey+alpha png", "interlaced png", "cmyk jpeg", "webp"):
        response = post_json(api_client, {"image": data_url(corpus[name][0])})
        assert response.status_code == 201, (name, response.content)
        assert response.json()["predicted_label"] == labels[0], name


# The request body limit, checked before anything reads the body.


class ForbiddenStream(io.RawIOBase):
    """A request body that fails the test if anything reads more than `allowed` bytes of it."""

    def __init__(self, allowed: int = 0):
        self.allowed = allowed
        self.read_bytes = 0

    def readable(self):
        return True

    def readinto(self, buffer):
        size = min(len(buffer), 65536)
        self.read_bytes += size
        assert self.read_bytes <= self.allowed, "the body was read"
        buffer[:size] = b"A" * size
        return size


def call_wsgi(environ_extra: dict) -> tuple[int, dict]:
    """Call the site's WSGI application directly (as gunicorn does) and return (status, JSON body)."""
    answer = {}

    def start_response(status, headers, exc_info=None):
        answer["status"] = int(status.split()[0])

    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": CREATE_URL,
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "HTTP_HOST": "testserver",
        "wsgi.url_scheme": "http",
        "wsgi.errors": io.StringIO(),
        "CONTENT_TYPE": "application/json",
        **environ_extra,
    }
    body = b"".join(WSGIHandler()(environ, start_response))
    return answer["status"], json.loads(body)


@pytest.mark.django_db(transaction=True)
def test_an_oversized_body_is_refused_before_it_is_read():
    stream = ForbiddenStream()
    status, body = call_wsgi({"CONTENT_LENGTH": str(10**9), "wsgi.input": stream})
    assert status == 413 and body["code"] == "payload_too_large"
    assert stream.read_bytes == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("length", ["-1", "abc", "1e9"])
def test_a_malformed_content_length_is_refused_unread(length):
    stream = ForbiddenStream()
    status, body = call_wsgi({"CONTENT_LENGTH": length, "wsgi.input": stream})
    assert status == 400 and body["code"] == "malformed_request"
    assert stream.read_bytes == 0


@pytest.mark.django_db(transaction=True)
def test_a_body_without_length_is_not_read():
    # Chunked or unframed: without a Content-Length nothing is read, so nothing can overflow memory.
    stream = ForbiddenStream()
    status, body = call_wsgi({"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input": stream})
    assert status == 400 and body["code"] == "invalid_image"  # an empty body: no image
    assert stream.read_bytes == 0


@pytest.mark.django_db
def test_an_oversized_upload_is_refused(api_client, active_model, settings):
    settings.DIGIT_MAX_UPLOAD_BYTES = 100_000
    upload = SimpleUploadedFile("digit.png", bomb(1024) + bytes(200_000), "image/png")
    assert_refused(api_client.post(CREATE_URL, {"image": upload}, format="multipart"), {413})


# Stored names, CSRF, staff-only data.


@pytest.mark.django_db
def test_stored_file_names_never_come_from_the_client(api_client, active_model, digit_png):
    upload = SimpleUploadedFile("../../../../etc/cron.d/evil.php", digit_png[0], "text/html")
    response = api_client.post(CREATE_URL, {"image": upload}, format="multipart")
    assert response.status_code == 201
    jpeg_claim = post_json(api_client, {"image": data_url(digit_png[0], "image/jpeg")})
    assert jpeg_claim.status_code == 201  # the type is read from the bytes, not from the claim

    for drawing in Drawing.objects.all():
        assert re.fullmatch(rf"drawings/\d{{4}}/\d{{2}}/\d{{2}}/{drawing.id}\.png", drawing.image.name)


@pytest.fixture
def staff_client():
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(User.objects.create_user("reviewer", is_staff=True))
    return client


@pytest.mark.django_db
def test_csrf_is_enforced_for_signed_in_sessions(staff_client, active_model, digit_png):
    response = post_json(staff_client, {"image": data_url(digit_png[0])})
    assert_refused(response, {403})
    assert "CSRF" in response.json()["detail"]

    page = staff_client.get("/")
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.content).group(1).decode()
    response = staff_client.post(
        CREATE_URL, {"image": data_url(digit_png[0])}, format="json", headers={"X-CSRFToken": token}
    )
    assert response.status_code == 201


@pytest.mark.django_db
def test_anonymous_visitors_need_no_csrf_token(active_model, digit_png):
    client = APIClient(enforce_csrf_checks=True)
    assert post_json(client, {"image": data_url(digit_png[0])}).status_code == 201


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/admin/", "/admin/predictor/drawing/", "/admin/predictor/modelversion/"])
def test_the_admin_is_for_staff_only(url, active_model):
    visitor = Client()
    member = Client()
    member.force_login(User.objects.create_user("member"))
    for client in (visitor, member):
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"]
    staff = Client()
    staff.force_login(User.objects.create_superuser("boss", "boss@example.com", "pw"))
    assert staff.get(url).status_code == 200


@pytest.mark.django_db
def test_drawings_and_their_images_are_for_their_visitor_and_staff_only(active_model, digit_png):
    owner = APIClient()
    created = post_json(owner, {"image": data_url(digit_png[0])}).json()
    drawing = Drawing.objects.get(id=created["id"])
    member = APIClient()
    member.force_login(User.objects.create_user("member"))
    for stranger in (APIClient(), member):
        assert stranger.get(f"/api/predictions/{drawing.id}/").status_code == 404
        assert stranger.get(f"/drawings/{drawing.id}/image").status_code == 404
        assert stranger.post(f"/api/predictions/{drawing.id}/feedback/", {"label": 1}, format="json").status_code == 404
    # Media files have no public URL of their own.
    assert APIClient().get(f"/media/{drawing.image.name}").status_code == 404
    assert owner.get(f"/drawings/{drawing.id}/image").status_code == 200


@pytest.mark.django_db
def test_a_forged_session_cookie_gives_no_access(active_model, digit_png, settings):
    owner = APIClient()
    created = post_json(owner, {"image": data_url(digit_png[0])}).json()
    visitor_cookie = owner.cookies[settings.SESSION_COOKIE_NAME].value
    payload = base64.urlsafe_b64encode(json.dumps({"visitor": "someone-else"}).encode()).decode().rstrip("=")
    for forged in (payload, visitor_cookie.replace(visitor_cookie[-6:], "AAAAAA"), visitor_cookie[:-1]):
        thief = APIClient()
        thief.cookies[settings.SESSION_COOKIE_NAME] = forged
        assert thief.get(f"/api/predictions/{created['id']}/").status_code == 404
    owner_again = APIClient()
    owner_again.cookies[settings.SESSION_COOKIE_NAME] = visitor_cookie
    assert owner_again.get(f"/api/predictions/{created['id']}/").status_code == 200
