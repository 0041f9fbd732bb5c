import base64
import io
import os
import shutil

import cv2
import numpy as np
import pytest
from django.conf import settings
from django.core.management import call_command
from PIL import Image, ImageDraw
from rest_framework.test import APIClient

from predictor import model_cache, services
from predictor.tests.s3 import s3_server, use_s3  # noqa: F401 (fixtures of the object storage tests)

MNIST_PATH = settings.BASE_DIR / "training" / "data" / "mnist.npz"


@pytest.fixture(autouse=True)
def fresh_model_state(settings, tmp_path):
    """Give each test its own media and model folders and a process with no model loaded."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.DIGIT_MODEL_ROOT = tmp_path / "models"
    settings.DIGIT_MODEL_CACHE = tmp_path / "model-cache"
    model_cache.forget_loaded_models()
    yield
    model_cache.forget_loaded_models()


@pytest.fixture
def active_model(db):
    """Register the shipped base model (as `make run` does) and return its ModelVersion."""
    call_command("register_base_model", stdout=io.StringIO())
    version, _ = model_cache.active_classifier()
    return version


@pytest.fixture
def api_client():
    return APIClient()


@pytest.fixture(scope="session")
def mnist_train():
    """MNIST training digits (never the test set) as (images, labels)."""
    with np.load(MNIST_PATH) as data:
        return data["x_train"][:2000], data["y_train"][:2000]


def canvas_png(digit_image: np.ndarray, *, size: int = 280, transparent: bool = True) -> bytes:
    """Return a PNG of a 28x28 MNIST-style digit scaled up onto a canvas, black ink."""
    ink = cv2.resize(digit_image, (size, size), interpolation=cv2.INTER_LINEAR)
    if transparent:
        rgba = np.zeros((size, size, 4), np.uint8)
        rgba[..., 3] = ink
        ok, png = cv2.imencode(".png", rgba)
    else:
        ok, png = cv2.imencode(".png", 255 - ink)
    assert ok
    return png.tobytes()


def data_url(png: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64," + base64.b64encode(png).decode("ascii")


# Digits as polylines in the unit square, drawn with a round pen like the drawing page's.
STROKES = {
    "1": [[(0.43, 0.2), (0.55, 0.1), (0.55, 0.9)]],
    "7": [[(0.2, 0.12), (0.8, 0.12), (0.4, 0.9)], [(0.35, 0.5), (0.7, 0.5)]],
    "0": [[(0.5 + 0.3 * np.sin(a), 0.5 - 0.42 * np.cos(a)) for a in np.linspace(0, 2 * np.pi, 25)]],
}
TRANSPARENT = (0, 0, 0, 0)
WHITE = (255, 255, 255, 255)
BLACK = (0, 0, 0, 255)


def draw(digit="7", size=(280, 280), *, background=TRANSPARENT, ink=BLACK, box=(0.15, 0.1, 0.85, 0.9), pen=None):
    """Return an RGBA PIL image of a digit drawn with round, anti-aliased strokes inside box.

    box is (left, top, right, bottom) as fractions of the canvas; pen is the stroke width in pixels.
    """
    width, height = size
    pen = pen or max(3, round(min(size) / 14))
    # Draw at twice the size and shrink: Pillow's own lines are not anti-aliased, canvas strokes are.
    big = Image.new("RGBA", (width * 2, height * 2), background)
    pencil = ImageDraw.Draw(big)
    left, top, right, bottom = box
    for stroke in STROKES[digit]:
        points = [
            (2 * width * (left + x * (right - left)), 2 * height * (top + y * (bottom - top))) for x, y in stroke
        ]
        pencil.line(points, fill=ink, width=2 * pen, joint="curve")
        for x, y in points:
            pencil.ellipse((x - pen, y - pen, x + pen, y + pen), fill=ink)
    return big.resize(size, Image.Resampling.BOX)


def encode(image, fmt="PNG", **options):
    """Return the bytes of a PIL image saved as fmt."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png16(image, channels):
    """Return a 16-bit PNG of a PIL image (grey or BGRA order for OpenCV)."""
    if channels == 1:
        pixels = np.asarray(image.convert("L"))
    else:
        pixels = cv2.cvtColor(np.asarray(image.convert("RGBA")), cv2.COLOR_RGBA2BGRA)
    return cv2.imencode(".png", pixels.astype(np.uint16) * 257)[1].tobytes()


@pytest.fixture
def digit_png(mnist_train):
    """A canvas PNG of an MNIST training digit, and its label."""
    images, labels = mnist_train
    return canvas_png(images[0]), int(labels[0])


@pytest.fixture
def blank_png():
    ok, png = cv2.imencode(".png", np.zeros((280, 280, 4), np.uint8))
    return png.tobytes()


@pytest.fixture
def drawing(active_model, digit_png):
    """A stored drawing made by the visitor "visitor-a"."""
    png, _ = digit_png
    return services.drawing_create(data=png, visitor="visitor-a")


@pytest.fixture
def model_version(db):
    """An active ModelVersion row (its files are never read), for tests that need no inference."""
    from predictor.models import ModelVersion

    return ModelVersion.objects.create(
        version=1,
        tflite="v1/model.tflite",
        keras="v1/model.keras",
        metrics={"mnist_test_accuracy": 0.991, "canvas_val_accuracy": 0.95},
        is_active=True,
    )


@pytest.fixture
def make_drawing(model_version, mnist_train):
    """Return a function that stores a drawing with chosen fields; all rows share one stored MNIST image."""
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from predictor.models import Drawing

    images, _ = mnist_train
    image_name = default_storage.save("drawings/shared.png", ContentFile(canvas_png(images[0])))

    def make(*, predicted_label=5, confidence=0.99, **fields):
        probabilities = [(1 - confidence) / 9] * 10
        probabilities[predicted_label] = confidence
        values = {
            "visitor": "visitor-a",
            "image": image_name,
            "image_width": 280,
            "image_height": 280,
            "input_pixels": images[0].tobytes(),
            "model_version": model_version,
            "predicted_label": predicted_label,
            "confidence": confidence,
            "probabilities": probabilities,
            "processing_ms": 1.0,
            **fields,
        }
        return Drawing.objects.create(**values)

    return make


BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def browser():
    """The system's headless Chromium (Playwright cannot download its own); missing, skip locally, fail in CI."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    executable = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if sync_playwright is None or executable is None:
        reason = "Playwright or Chromium is not installed"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: CI must run the browser tests.", pytrace=False)
        pytest.skip(reason)
    # Playwright's sync API runs an event loop in this thread, which makes Django refuse ORM calls.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=executable, args=BROWSER_ARGS)
            yield chromium
            chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous
