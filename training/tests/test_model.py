import keras
import numpy as np
import pytest

from training.model import build_model, logits_model, model_temperature, with_temperature


def test_model_maps_28x28_pixels_to_ten_probabilities():
    model = build_model()
    probs = np.asarray(model(np.full((3, 28, 28, 1), 255.0, np.float32), training=False))
    assert model.input_shape == (None, 28, 28, 1)
    assert probs.shape == (3, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_rescaling_to_0_1_is_the_first_layer():
    first = build_model().layers[0]
    assert isinstance(first, keras.layers.Rescaling)
    assert first.scale == pytest.approx(1 / 255)


def test_parameter_count_stays_within_budget():
    assert 100_000 <= build_model().count_params() <= 250_000


def test_temperature_divides_logits_and_keeps_weights():
    model = build_model()
    x = np.random.default_rng(0).uniform(0, 255, (4, 28, 28, 1)).astype(np.float32)
    hot = with_temperature(model, 2.0)
    logits = np.asarray(logits_model(model)(x, training=False))
    expected = np.exp(logits / 2) / np.exp(logits / 2).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(hot(x, training=False)), expected, rtol=1e-5, atol=1e-6)
    assert model_temperature(hot) == pytest.approx(2.0)
    assert model_temperature(model) == pytest.approx(1.0)
