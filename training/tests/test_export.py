import json

import numpy as np
import pytest

from training import export
from training.config import TrainConfig
from training.model import build_model


@pytest.fixture(scope="module")
def model():
    return build_model()


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (50, 28, 28)).astype(np.uint8)


@pytest.fixture(scope="module")
def tflite(model):
    return export.to_tflite(model)


@pytest.fixture
def converted_once(tflite, monkeypatch):
    """Reuse one conversion: the failure tests are about what happens after it."""
    monkeypatch.setattr(export, "to_tflite", lambda m: tflite)


def test_export_round_trip_gives_same_predictions(model, images, tmp_path):
    out = tmp_path / "model"
    metrics = export.save(
        model, metrics={"mnist_test_accuracy": 0.5}, config=TrainConfig(seed=7), out_dir=out, parity_images=images
    )
    assert sorted(p.name for p in out.iterdir()) == sorted(["model.keras", "model.tflite", "metrics.json"])
    np.testing.assert_allclose(
        np.asarray(export.load(out)(images[..., None].astype(np.float32), training=False)),
        np.asarray(model(images[..., None].astype(np.float32), training=False)),
        rtol=1e-6,
        atol=1e-7,
    )
    tflite = export.tflite_probabilities(out / export.TFLITE_FILE, images)
    np.testing.assert_allclose(tflite, np.asarray(model(images[..., None].astype(np.float32))), atol=1e-4)
    written = json.loads((out / export.METRICS_FILE).read_text())
    assert written == export.read_metrics(out) == metrics
    assert written["seed"] == 7 and written["config"]["seed"] == 7
    assert written["tflite_bytes"] == (out / export.TFLITE_FILE).stat().st_size
    assert written["params"] == model.count_params()


def test_failed_export_leaves_no_partial_directory(model, images, tmp_path, monkeypatch, converted_once):
    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "plot_confusion", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        export.save(
            model,
            metrics={"confusion": np.eye(10).tolist()},
            config=TrainConfig(),
            out_dir=tmp_path / "model",
            parity_images=images,
        )
    assert list(tmp_path.iterdir()) == []


def test_failed_export_keeps_the_previous_model(model, images, tmp_path, monkeypatch, converted_once):
    out = tmp_path / "model"
    export.save(model, metrics={}, config=TrainConfig(), out_dir=out, parity_images=images)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(export, "plot_confusion", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        export.save(
            model,
            metrics={"confusion": np.eye(10).tolist()},
            config=TrainConfig(seed=2),
            out_dir=out,
            parity_images=images,
        )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_export_refuses_a_tflite_that_disagrees_with_keras(model, images, tmp_path, monkeypatch, converted_once):
    real = export.tflite_probabilities
    monkeypatch.setattr(export, "tflite_probabilities", lambda tflite, x: real(tflite, x) + 1e-3)
    with pytest.raises(export.ParityError, match="differ"):
        export.save(model, metrics={}, config=TrainConfig(), out_dir=tmp_path / "model", parity_images=images)
    assert list(tmp_path.iterdir()) == []
