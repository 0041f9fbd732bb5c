"""Fixtures shared by every test of the project: the site's state, its model, drawings, a browser."""

import io
import os
import shutil

import cv2
import numpy as np
import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from predictor import model_cache, services
from predictor.tests.drawings import MNIST_PATH, canvas_png
from predictor.tests.s3 import s3_server, use_s3  # noqa: F401 (fixtures of the object storage tests)


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
