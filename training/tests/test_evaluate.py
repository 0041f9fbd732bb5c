import numpy as np
import pytest

from training.evaluate import evaluate_probabilities, expected_calibration_error, fit_temperature


def test_evaluation_counts_confusion_and_per_class_accuracy():
    probs = np.eye(10, dtype=np.float32)[[0, 1, 1, 2]]
    result = evaluate_probabilities(probs, np.array([0, 1, 2, 2]))
    assert result["accuracy"] == 0.75
    assert result["confusion"][2] == [0, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    assert result["per_class_accuracy"][:3] == [1.0, 1.0, 0.5]
    assert result["per_class_accuracy"][3] is None


def test_ece_is_the_gap_between_confidence_and_accuracy():
    # Confidence 0.9 everywhere but only half right: a gap of 0.4.
    probs = np.full((10, 10), 0.1 / 9)
    probs[:, 0] = 0.9
    y = np.array([0] * 5 + [1] * 5)
    assert expected_calibration_error(probs, y) == pytest.approx(0.4)
    assert expected_calibration_error(np.eye(10)[y], y) == pytest.approx(0.0)


def test_fitted_temperature_recovers_the_one_that_made_the_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (4000, 10))
    probs = np.exp(logits / 2.5) / np.exp(logits / 2.5).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(10, p=p) for p in probs])
    assert fit_temperature(logits, y) == pytest.approx(2.5, rel=0.1)
