import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from predictor.inference import NUM_CLASSES, Classifier, ModelLoadError, Prediction
from predictor.preprocessing import preprocess
from predictor.tests.drawings import WHITE, draw, encode

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MODEL_PATH = PROJECT_ROOT / "training" / "artifacts" / "base" / "model.tflite"


@pytest.fixture(scope="module")
def classifier():
    """The shipped base model; outside CI the tests that need it skip until it has been trained."""
    if not MODEL_PATH.exists() and not os.environ.get("CI"):
        pytest.skip(f"{MODEL_PATH.relative_to(PROJECT_ROOT)} has not been trained yet")
    return Classifier(MODEL_PATH)


@pytest.fixture(scope="module")
def drawings():
    """Eight model inputs: digits drawn on canvases of several sizes, and one blank."""
    inputs = [
        preprocess(encode(draw(digit, size, background=background)))
        for digit in "017"
        for size, background in [((280, 280), WHITE), ((600, 400), (0, 0, 0, 0))]
    ]
    inputs.append(preprocess(encode(draw("7", (280, 280), box=(0.6, 0.6, 0.9, 0.95)))))
    inputs.append(np.zeros((28, 28), np.float32))
    return np.stack(inputs)


def test_predict_returns_a_consistent_prediction(classifier, drawings):
    prediction = classifier.predict(drawings[0])
    assert isinstance(prediction, Prediction)
    assert len(prediction.probabilities) == NUM_CLASSES
    assert all(isinstance(p, float) and 0 <= p <= 1 for p in prediction.probabilities)
    assert sum(prediction.probabilities) == pytest.approx(1, abs=1e-5)
    assert isinstance(prediction.predicted_label, int)
    assert prediction.predicted_label == int(np.argmax(prediction.probabilities))
    assert prediction.confidence == max(prediction.probabilities)


def test_predict_batch_matches_predict(classifier, drawings):
    probabilities = classifier.predict_batch(drawings)
    assert probabilities.shape == (len(drawings), NUM_CLASSES) and probabilities.dtype == np.float32
    one_by_one = np.array([classifier.predict(pixels).probabilities for pixels in drawings])
    np.testing.assert_allclose(probabilities, one_by_one, atol=1e-6)
    np.testing.assert_allclose(classifier.predict_batch(drawings[:3]), probabilities[:3], atol=1e-6)
    assert classifier.predict_batch(drawings[:0]).shape == (0, NUM_CLASSES)


@pytest.mark.parametrize("shape", [(28, 28, 1), (1, 28, 28), (20, 20), (784,)])
def test_predict_rejects_other_shapes(classifier, shape):
    with pytest.raises(ValueError, match="shape"):
        classifier.predict(np.zeros(shape, np.float32))


@pytest.mark.parametrize("digit", ["0", "1", "7"])
@pytest.mark.parametrize(
    ("size", "box"),
    [
        ((280, 280), (0.15, 0.1, 0.85, 0.9)),
        ((1000, 1000), (0.3, 0.3, 0.6, 0.7)),
        ((500, 320), (0.1, 0.1, 0.45, 0.9)),
    ],
)
def test_clearly_drawn_digit_is_recognised(classifier, digit, size, box):
    prediction = classifier.predict(preprocess(encode(draw(digit, size, box=box))))
    assert prediction.predicted_label == int(digit)


def test_classifier_is_thread_safe(classifier, drawings):
    expected = classifier.predict_batch(drawings)

    def predict_many(index):
        # Single predictions and batches of changing size interleave in other threads.
        single = [classifier.predict(drawings[index]).probabilities for _ in range(100)]
        batches = [classifier.predict_batch(drawings[: index + 1]) for _ in range(30)]
        return index, single, batches

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, so unguarded state gets mixed up
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(predict_many, range(len(drawings))))
    finally:
        sys.setswitchinterval(previous)
    for index, single, batches in results:
        np.testing.assert_allclose(single, np.tile(expected[index], (len(single), 1)), atol=1e-6)
        for batch in batches:
            np.testing.assert_allclose(batch, expected[: index + 1], atol=1e-6)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "No such file"),
        (b"", "is empty"),
        (b"this is not a model" * 50, "not a usable TensorFlow Lite model"),
        (b"\x1c\x00\x00\x00TFL3" + bytes(200), "not a usable TensorFlow Lite model"),
    ],
    ids=["missing", "empty", "text", "broken-flatbuffer"],
)
def test_unusable_model_file_raises_model_load_error(tmp_path, content, message):
    path = tmp_path / "model.tflite"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=message) as caught:
        Classifier(path)
    assert str(path) in str(caught.value)


def test_truncated_model_raises_model_load_error(classifier, tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(MODEL_PATH.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match="model.tflite"):
        Classifier(path)


def test_serving_never_imports_tensorflow(classifier):
    code = (
        "import sys, numpy as np\n"
        "from predictor.inference import Classifier\n"
        "from predictor.preprocessing import preprocess\n"
        "Classifier(sys.argv[1]).predict(np.zeros((28, 28), np.float32))\n"
        "loaded = sorted(name for name in ('tensorflow', 'keras', 'django') if name in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    command = [sys.executable, "-c", code, str(MODEL_PATH)]
    result = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
