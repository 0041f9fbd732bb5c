"""Run one .tflite digit classifier with LiteRT: loads in milliseconds, answers in well under one.

Web workers use this, never TensorFlow. One Classifier per process and model version; it is safe to
share between threads.
"""

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

NUM_CLASSES = 10
INPUT_SHAPE = (28, 28)


@dataclass(frozen=True)
class Prediction:
    """The model's answer for one drawing."""

    predicted_label: int
    confidence: float  # probability of predicted_label
    probabilities: tuple[float, ...]  # one per digit 0-9


class ModelLoadError(RuntimeError):
    """The .tflite file is missing, empty, corrupt or not a 28x28 -> 10 classifier."""


class Classifier:
    """A digit classifier over one .tflite model: float32 (28, 28) pixels 0..255 in, probabilities out."""

    def __init__(self, model: str | os.PathLike | bytes, *, name: str | None = None, num_threads: int = 1) -> None:
        """Build the classifier from a .tflite file's path or its content; errors call it `name` (default: the path)."""
        # One thread by default: web servers run several workers side by side, and a model this
        # small gains nothing from more.
        if isinstance(model, bytes):
            self.path, content = None, model
        else:
            self.path = Path(model)
            try:
                content = self.path.read_bytes()
            except OSError as error:
                raise ModelLoadError(f"Cannot read the model file {name or self.path}: {error.strerror}.") from None
        self.name = name or (str(self.path) if self.path else "(in memory)")
        if not content:
            raise ModelLoadError(f"The model file {self.name} is empty.")
        try:
            self._interpreter = Interpreter(model_content=content, num_threads=num_threads)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            raise ModelLoadError(
                f"The model file {self.name} is not a usable TensorFlow Lite model ({error})."
            ) from None
        (self._input,) = self._interpreter.get_input_details()
        (self._output,) = self._interpreter.get_output_details()
        if (
            tuple(self._input["shape"][1:]) != (*INPUT_SHAPE, 1)
            or self._input["dtype"] != np.float32
            or tuple(self._output["shape"][1:]) != (NUM_CLASSES,)
        ):
            raise ModelLoadError(
                f"The model file {self.name} takes {self._input['dtype'].__name__} "
                f"{list(self._input['shape'])} and gives {list(self._output['shape'])}; "
                f"a digit classifier takes float32 [1, 28, 28, 1] and gives [1, {NUM_CLASSES}]."
            )
        self._batch_size = int(self._input["shape"][0])
        # The interpreter keeps its tensors between set_tensor, invoke and get_tensor, so one call at a
        # time; inference is far shorter than a request, so waiting for the lock costs little.
        self._lock = threading.Lock()

    def predict(self, pixels: np.ndarray) -> Prediction:
        """Return the Prediction for one float32 (28, 28) image with values 0..255."""
        if pixels.shape != INPUT_SHAPE:
            raise ValueError(f"expected pixels of shape {INPUT_SHAPE}, got {pixels.shape}")
        probabilities = self.predict_batch(pixels[np.newaxis])[0]
        label = int(np.argmax(probabilities))
        return Prediction(
            predicted_label=label,
            confidence=float(probabilities[label]),
            probabilities=tuple(float(p) for p in probabilities),
        )

    def predict_batch(self, pixels: np.ndarray) -> np.ndarray:
        """Return float32 (N, 10) probabilities for N images given as (N, 28, 28), values 0..255."""
        if pixels.ndim != 3 or pixels.shape[1:] != INPUT_SHAPE:
            raise ValueError(f"expected pixels of shape (N, 28, 28), got {pixels.shape}")
        batch = np.ascontiguousarray(pixels, dtype=np.float32)[..., np.newaxis]
        if len(batch) == 0:
            return np.zeros((0, NUM_CLASSES), np.float32)
        with self._lock:
            if len(batch) != self._batch_size:
                self._interpreter.resize_tensor_input(self._input["index"], batch.shape, strict=False)
                self._interpreter.allocate_tensors()
                self._batch_size = len(batch)
            self._interpreter.set_tensor(self._input["index"], batch)
            self._interpreter.invoke()
            return self._interpreter.get_tensor(self._output["index"])
