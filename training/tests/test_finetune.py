import numpy as np
import pytest

from training import export
from training.config import FinetuneConfig
from training.data import load_mnist
from training.evaluate import evaluate
from training.finetune import finetune
from training.model import model_temperature
from training.train import BASE_DIR


@pytest.fixture(scope="module")
def new_style():
    """Digits written mirror-image: a style the shipped model has never seen."""
    (x, y), _ = load_mnist()
    return x[:96, :, ::-1], y[:96]


@pytest.fixture(scope="module")
def base():
    return export.load(BASE_DIR)


def test_finetune_learns_new_examples_and_leaves_the_original_alone(base, new_style):
    x, y = new_style
    weights = [w.copy() for w in base.get_weights()]
    before = evaluate(base, x, y)
    config = FinetuneConfig(epochs=4, batch_size=32, learning_rate=1e-3, augment=None)
    tuned = finetune(base, x, y, config)
    after = evaluate(tuned, x, y)
    assert after["loss"] < before["loss"] and after["accuracy"] > before["accuracy"]
    assert tuned is not base
    assert all(np.array_equal(a, b) for a, b in zip(base.get_weights(), weights))
    assert model_temperature(tuned) == pytest.approx(model_temperature(base))


def test_finetune_mixes_in_replay_and_is_reproducible(base, new_style):
    x, y = new_style
    (x_mnist, y_mnist), _ = load_mnist()
    config = FinetuneConfig(epochs=1, batch_size=32, augment=FinetuneConfig().augment)
    replay = (x_mnist[1000:1064], y_mnist[1000:1064])
    first = finetune(base, x[:32], y[:32], config, replay=replay)
    second = finetune(base, x[:32], y[:32], config, replay=replay)
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_finetuned_model_exports_with_parity(base, new_style, tmp_path):
    x, y = new_style
    tuned = finetune(base, x[:32], y[:32], FinetuneConfig(epochs=1, batch_size=32, augment=None))
    metrics = export.save(tuned, metrics={}, config=FinetuneConfig(seed=3), out_dir=tmp_path / "v2", parity_images=x)
    assert metrics["tflite_max_abs_diff"] <= 1e-4
    assert metrics["config"]["learning_rate"] == FinetuneConfig().learning_rate
