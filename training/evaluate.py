"""Accuracy, loss, confusion, per-class accuracy and calibration of a classifier.

Works with a Keras model, with anything that has `predict_batch(pixels) -> probabilities`
(such as predictor.inference.Classifier, i.e. the .tflite), or with probabilities already computed.
"""

from typing import Any

import numpy as np

from predictor.inference import NUM_CLASSES
from predictor.preprocessing import IMAGE_SIZE

EPSILON = 1e-7


def predict_probabilities(model: Any, x: np.ndarray, *, batch_size: int = 512) -> np.ndarray:
    """Return float32 (N, 10) probabilities of a Keras model or a Classifier for pixels (N, 28, 28) 0..255."""
    x = np.asarray(x, dtype=np.float32).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    if hasattr(model, "predict_batch"):
        return np.asarray(model.predict_batch(x), dtype=np.float32)
    # Calling the model on batches avoids predict()'s progress bar and tf.data set-up.
    out = [np.asarray(model(x[i : i + batch_size, ..., None], training=False)) for i in range(0, len(x), batch_size)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, NUM_CLASSES), np.float32)


def evaluate(model: Any, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Return {"loss", "accuracy", "confusion", "per_class_accuracy", "ece"} of `model` on (x, y)."""
    return evaluate_probabilities(predict_probabilities(model, x), y)


def evaluate_probabilities(probs: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Return {"loss", "accuracy", "confusion", "per_class_accuracy", "ece"} for given probabilities."""
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    predicted = probs.argmax(axis=1)
    confusion = confusion_matrix(y, predicted)
    loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], EPSILON, 1.0)))) if len(y) else 0.0
    return {
        "loss": loss,
        "accuracy": float(np.mean(predicted == y)) if len(y) else 0.0,
        "confusion": confusion.tolist(),
        "per_class_accuracy": per_class_accuracy(confusion),
        "ece": expected_calibration_error(probs, y),
    }


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Return the int64 (10, 10) matrix counting true label (rows) against predicted label (columns)."""
    matrix = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return matrix


def per_class_accuracy(confusion: np.ndarray | list) -> list[float | None]:
    """Return the accuracy of each true class from a confusion matrix (None for an absent class)."""
    confusion = np.asarray(confusion)
    totals = confusion.sum(axis=1)
    return [float(confusion[i, i] / totals[i]) if totals[i] else None for i in range(NUM_CLASSES)]


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Return the expected calibration error: the |accuracy - confidence| gap averaged over confidence bins."""
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y)
    if len(y) == 0:
        return 0.0
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    # Equal-width bins over (0, 1]; a confidence of exactly 1.0 falls in the last bin.
    index = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Return the softmax temperature T minimising the negative log-likelihood of softmax(logits / T)."""
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)

    def nll(log_t: float) -> float:
        z = logits / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-log_probs[np.arange(len(y)), y].mean())

    # The NLL is unimodal in log T, so a golden-section search over T in [0.05, 20] is enough.
    lo, hi = np.log(0.05), np.log(20.0)
    ratio = (np.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(b)
    return float(np.exp((lo + hi) / 2))
