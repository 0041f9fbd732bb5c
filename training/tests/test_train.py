import io
import json

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from predictor.inference import Classifier
from training import export
from training.data import load_mnist
from training.evaluate import predict_probabilities

REQUIRED_METRICS = {
    "mnist_test_accuracy",
    "canvas_val_accuracy",
    "per_class_accuracy",
    "ece_canvas",
    "params",
    "tflite_bytes",
    "train_seconds",
    "seed",
    "config",
}


def test_quick_training_run_writes_a_servable_model(tmp_path):
    out = tmp_path / "quick"
    stdout = io.StringIO()
    call_command("train", "--quick", "--seed", "3", "--out", str(out), stdout=stdout)
    assert "Model written to" in stdout.getvalue()
    assert {p.name for p in out.iterdir()} == set(export.ARTIFACT_FILES)
    metrics = json.loads((out / export.METRICS_FILE).read_text())
    assert metrics.keys() >= REQUIRED_METRICS
    assert metrics["seed"] == 3 and metrics["config"]["epochs"] == 1
    assert len(metrics["per_class_accuracy"]) == 10
    # The .tflite the site serves gives the Keras model's probabilities on 1,000 MNIST test digits.
    x_test = load_mnist()[1][0][:1000]
    served = Classifier(out / export.TFLITE_FILE).predict_batch(x_test.astype(np.float32))
    keras_probs = predict_probabilities(export.load(out), x_test)
    assert np.max(np.abs(served - keras_probs)) <= 1e-4
    assert metrics["tflite_max_abs_diff"] <= 1e-4


def test_training_refuses_to_replace_a_model_without_force(tmp_path):
    (tmp_path / export.TFLITE_FILE).write_bytes(b"old")
    with pytest.raises(CommandError, match="--force"):
        call_command("train", "--quick", "--out", str(tmp_path), stdout=io.StringIO())
    assert (tmp_path / export.TFLITE_FILE).read_bytes() == b"old"
