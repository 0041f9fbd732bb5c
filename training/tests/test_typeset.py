import io

import numpy as np
from PIL import Image

from predictor.inference import Classifier
from training import typeset
from training.train import BASE_DIR


def test_every_font_ships_with_matplotlib():
    paths = typeset.font_paths()
    assert len(paths) == len(typeset.FONT_FILES) and all(path.is_file() for path in paths)


def test_typeset_pngs_are_canvases_of_varied_size_with_ink():
    rng = np.random.default_rng(0)
    for _ in range(5):
        image = Image.open(io.BytesIO(typeset.typeset_png(7, typeset.font_paths()[0], rng)))
        assert image.format == "PNG" and all(200 <= side <= 600 for side in image.size)
        grey = np.asarray(image.convert("LA"))
        ink = grey[..., 1] > 0 if image.mode == "RGBA" else grey[..., 0] < 128
        assert 0.005 < ink.mean() < 0.5


def test_typeset_digits_are_deterministic_and_balanced(monkeypatch):
    monkeypatch.setattr(typeset, "FONT_FILES", typeset.FONT_FILES[:2])
    x, y = typeset.typeset_digits(per_font=1, seed=4)
    assert x.shape == (20, 28, 28) and x.dtype == np.uint8
    assert np.bincount(y, minlength=10).tolist() == [2] * 10
    assert np.array_equal(x, typeset.typeset_digits(per_font=1, seed=4)[0])
    assert not np.array_equal(x, typeset.typeset_digits(per_font=1, seed=5)[0])


def test_the_shipped_model_reads_typeset_digits():
    # A check that owes nothing to the canvas-style generator: one of each digit in each font.
    x, y = typeset.typeset_digits(per_font=1, seed=0)
    predicted = Classifier(BASE_DIR / "model.tflite").predict_batch(x).argmax(axis=1)
    assert (predicted == y).mean() >= 0.97
