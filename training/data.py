"""MNIST loading and the held-out validation slice."""

from pathlib import Path

import numpy as np

from predictor.preprocessing import preprocess

DATA_PATH = Path(__file__).resolve().parent / "data" / "mnist.npz"

Split = tuple[np.ndarray, np.ndarray]


def load_mnist(path: str | Path = DATA_PATH) -> tuple[Split, Split]:
    """Return ((x_train, y_train), (x_test, y_test)): uint8 images (N, 28, 28), ink 255, and uint8 labels."""
    # The project ships its copy of MNIST, so nothing is ever downloaded.
    with np.load(path) as data:
        return (data["x_train"], data["y_train"]), (data["x_test"], data["y_test"])


def split_validation(x: np.ndarray, y: np.ndarray, size: int) -> tuple[Split, Split]:
    """Return ((x_train, y_train), (x_val, y_val)) where validation is the last `size` images."""
    if not 0 <= size < len(x):
        raise ValueError(f"validation size {size} must be between 0 and {len(x) - 1}.")
    cut = len(x) - size
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


def drawing_pixels(png: bytes) -> np.ndarray:
    """Return the uint8 (28, 28) model input for stored drawing bytes, exactly as the site serves it."""
    # The one preprocessing function is shared with serving, so training and serving cannot drift.
    return preprocess(png).astype(np.uint8)
