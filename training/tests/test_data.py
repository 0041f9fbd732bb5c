import numpy as np
import pytest

from predictor import services
from predictor.preprocessing import preprocess
from training import synthetic
from training.data import drawing_pixels, load_mnist, split_validation


def test_load_mnist_gives_the_standard_split_as_uint8():
    (x_train, y_train), (x_test, y_test) = load_mnist()
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.uint8
    assert list(y_train[:5]) == [5, 0, 4, 1, 9] and list(y_test[:5]) == [7, 2, 1, 0, 4]


def test_validation_is_the_last_slice_of_train():
    x, y = np.arange(10), np.arange(10)
    (x_tr, _), (x_val, y_val) = split_validation(x, y, 3)
    assert list(x_tr) == list(range(7)) and list(x_val) == [7, 8, 9] and list(y_val) == [7, 8, 9]


@pytest.mark.django_db
def test_training_preprocessing_of_a_stored_drawing_equals_serving_bit_for_bit(active_model):
    (x, _), _ = load_mnist()
    png = synthetic.render_png(synthetic.digit_strokes(x[0]), np.random.default_rng(0), transparent=True)
    drawing = services.drawing_create(data=png, visitor="visitor-a")
    with drawing.image.open("rb") as stored:
        pixels = drawing_pixels(stored.read())
    assert pixels.dtype == np.uint8
    assert np.array_equal(pixels, drawing.input_array)
    assert np.array_equal(pixels, preprocess(png))
