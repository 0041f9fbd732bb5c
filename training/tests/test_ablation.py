from dataclasses import replace

import numpy as np

from training import ablation
from training.config import AugmentConfig, TrainConfig
from training.model import build_model
from training.train import prepare_data

TINY = TrainConfig(
    epochs=1,
    batch_size=64,
    train_limit=256,
    synthetic_size=64,
    canvas_val_size=64,
    validation_size=128,
    widths=(8, 8, 8, 8, 8),
    workers=1,
    augment=AugmentConfig(elastic=True),  # every part on
)


def test_without_synthetic_keeps_exactly_the_real_training_digits():
    data = prepare_data(TINY, log=lambda _: None)
    real = ablation.without_synthetic(TINY, data)
    assert len(data.x_train) == 256 + 64
    np.testing.assert_array_equal(real.x_train, data.x_train[:256])
    np.testing.assert_array_equal(real.y_train, data.y_train[:256])
    assert real.x_canvas is data.x_canvas


def test_each_run_switches_off_only_its_part(monkeypatch):
    seen = {}

    def fake_train(config, data, verbose=None):
        seen[len(seen)] = (config.augment, config.synthetic_size, len(data.x_train))
        return object(), None

    monkeypatch.setattr(ablation, "train", fake_train)
    monkeypatch.setattr(ablation, "evaluate", lambda model, x, y: {"accuracy": 0.5})
    monkeypatch.setattr(ablation, "settle_batchnorm", lambda model, x: None)
    data = prepare_data(TINY, log=lambda _: None)
    rows = ablation.ablate(TINY, data, log=lambda _: None)

    switched = [f"without {name}" for name in ablation.SWITCHES]
    assert [row.change for row in rows] == ["as configured", *switched, f"without {ablation.SYNTHETIC}"]
    everything, rotation, scale, thickness, elastic, synthetic = seen.values()
    assert everything == (TINY.augment, 64, 320)
    assert not rotation[0].rotation and not rotation[0].shear and rotation[0].scale and rotation[0].elastic
    assert not scale[0].scale and not scale[0].translate and scale[0].rotation
    assert not thickness[0].thickness and thickness[0].elastic
    assert not elastic[0].elastic and elastic[0].thickness
    assert synthetic == (TINY.augment, 0, 256)


def test_a_part_the_configuration_leaves_out_is_switched_on():
    augment = replace(AugmentConfig(), elastic=False)
    label, changed = ablation.toggle(augment, "elastic distortion", {"elastic": False})
    assert (label, changed) == ("with elastic distortion", replace(augment, elastic=True))
    label, changed = ablation.toggle(augment, "rotation and shear", {"rotation": False, "shear": False})
    assert label == "without rotation and shear" and not changed.rotation and not changed.shear and not changed.elastic


def test_a_tiny_ablation_trains_and_scores_each_run():
    config = replace(TINY, synthetic_size=0)
    data = prepare_data(config, log=lambda _: None)
    rows = ablation.ablate(config, data, {"elastic distortion": {"elastic": False}}, log=lambda _: None)
    assert [row.change for row in rows] == ["as configured", "without elastic distortion"]
    assert [row.train_images for row in rows] == [256, 256]
    assert all(0 <= row.canvas_val_accuracy <= 1 and 0 <= row.mnist_val_accuracy <= 1 for row in rows)


def test_settled_batchnorm_gives_inference_the_training_statistics():
    model = build_model(widths=(4, 4, 4, 4, 4), dropout=0.0)
    x = prepare_data(TINY, log=lambda _: None).x_train[:200].astype(np.float32)[..., None]
    # A fresh model's running statistics (mean 0, variance 1) are far from the real ones.
    assert np.max(np.abs(model(x, training=False) - model(x, training=True))) > 1e-3
    ablation.settle_batchnorm(model, x)
    np.testing.assert_allclose(model(x, training=False), model(x, training=True), atol=1e-4)
    assert all(layer.momentum == 0.99 for layer in model.layers if "batch_normalization" in layer.name)


def test_training_sample_is_augmented_training_batches():
    data = prepare_data(TINY, log=lambda _: None)
    sample = ablation.training_sample(TINY, data, size=100)
    assert sample.shape == (100, 28, 28, 1) and sample.dtype == np.float32
    assert sample.min() >= 0 and sample.max() <= 255
