"""The digit classifier: a small VGG-style CNN whose first layer scales pixels from 0..255 to 0..1."""

import keras
from keras import layers

from predictor.inference import NUM_CLASSES
from predictor.preprocessing import IMAGE_SIZE

DEFAULT_WIDTHS = (32, 32, 64, 64, 128)


def build_model(
    *,
    widths: tuple[int, ...] = DEFAULT_WIDTHS,
    dropout: float = 0.25,
    temperature: float = 1.0,
) -> keras.Sequential:
    """Return an uncompiled CNN taking (28, 28, 1) pixels 0..255 and giving 10 softmax probabilities.

    `widths` are the filters of the five 3x3 convolutions (two blocks of two, each followed by
    2x2 pooling, then one more before global average pooling). The first four use "valid"
    padding (28 -> 26 -> 24 -> 12 -> 10 -> 8 -> 4): MNIST digits sit inside a 20 px box with a
    4 px empty border, and the smaller maps halve the cost of training on two CPU cores. `temperature` divides the logits
    before the softmax, so a calibrated temperature travels inside the .keras and .tflite files.
    """
    if len(widths) != 5:
        raise ValueError("widths must give five convolution widths.")

    def conv(filters: int, padding: str = "valid") -> list[layers.Layer]:
        # No bias: BatchNorm supplies the shift, and the converter folds it into the convolution.
        return [
            layers.Conv2D(filters, 3, padding=padding, use_bias=False),
            layers.BatchNormalization(),
            layers.ReLU(),
        ]

    return keras.Sequential(
        [
            keras.Input((IMAGE_SIZE, IMAGE_SIZE, 1)),
            layers.Rescaling(1 / 255, name="rescale"),
            *conv(widths[0]),
            *conv(widths[1]),
            layers.MaxPooling2D(),
            *conv(widths[2]),
            *conv(widths[3]),
            layers.MaxPooling2D(),
            *conv(widths[4], padding="same"),
            layers.GlobalAveragePooling2D(),
            layers.Dropout(dropout),
            layers.Dense(NUM_CLASSES, name="logits"),
            # Rescaling is a plain built-in layer, so the saved model needs no custom objects.
            layers.Rescaling(1 / temperature, name="temperature"),
            layers.Softmax(name="probabilities"),
        ],
        name="digits_cnn",
    )


def model_temperature(model: keras.Model) -> float:
    """Return the softmax temperature baked into a model built by build_model()."""
    return 1.0 / float(model.get_layer("temperature").scale)


def with_temperature(model: keras.Model, temperature: float) -> keras.Sequential:
    """Return a copy of `model` (same weights) whose logits are divided by `temperature`."""
    widths = tuple(layer.filters for layer in model.layers if isinstance(layer, layers.Conv2D))
    dropout = next(layer.rate for layer in model.layers if isinstance(layer, layers.Dropout))
    copy = build_model(widths=widths, dropout=dropout, temperature=temperature)
    copy.set_weights(model.get_weights())
    return copy


def logits_model(model: keras.Model) -> keras.Model:
    """Return a model sharing `model`'s layers that outputs the logits before temperature and softmax."""
    return keras.Model(model.inputs[0], model.get_layer("logits").output)
