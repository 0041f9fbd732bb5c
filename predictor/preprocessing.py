"""Turn a submitted drawing into the 28x28 MNIST-style input of the model.

Serving and retraining both go through `preprocess`, so what the model is trained on is exactly what it
is later shown. The pipeline: decode the file (`predictor.imagefile`, which checks its header first),
find the ink, crop to it at full resolution, scale the longer side to 20 px, centre by centre of mass
in 28x28 (background 0, ink 255).
"""

import math
from dataclasses import dataclass

import cv2
import numpy as np

from predictor.imagefile import MAX_PIXELS, MAX_SIDE, PreprocessingError, decode_image

IMAGE_SIZE = 28
DIGIT_SIZE = 20
# Colour distance (0..255) up to which a pixel counts as background: JPEG ringing next to strokes
# reaches about 40 at quality 50; losing the faintest anti-aliased edge changes nothing at 20 px.
NOISE_LEVEL = 48
# A single tap leaves a small, roughly round, solid blob: ink whose bounding box is shorter than
# DOT_MAX_FRACTION of the canvas's shorter side, no more elongated than DOT_MAX_ASPECT and filled to
# at least DOT_MIN_FILL is a dot, not a digit. The drawing page's pen is 1/14 (7%) of the canvas wide;
# 10% leaves room for a wobble. A small "1" is elongated and a small "7" is sparse, so both pass.
DOT_MAX_FRACTION = 0.1
DOT_MAX_ASPECT = 1.5
DOT_MIN_FILL = 0.6


class EmptyDrawing(PreprocessingError):
    """No ink, only faint noise, or a single dot."""

    code = "empty_drawing"


@dataclass(frozen=True)
class PreprocessSteps:
    """Every intermediate image of the pipeline, in order; `centred` is the model input."""

    decoded: np.ndarray  # as decoded: uint8 grey (H, W), RGB or RGBA (H, W, 3|4)
    ink: np.ndarray  # uint8 (H, W): 0 = background, 255 = strongest ink
    cropped: np.ndarray  # uint8: ink cut to its bounding box
    resized: np.ndarray  # uint8: longer side DIGIT_SIZE
    centred: np.ndarray  # float32 (28, 28): the model input

    @property
    def raw(self) -> np.ndarray:
        """Return the decoded image as RGBA uint8 (H, W, 4), whatever its layout, for display."""
        return _to_rgba(self.decoded)


def preprocess(data: bytes, *, max_pixels: int = MAX_PIXELS, max_side: int = MAX_SIDE) -> np.ndarray:
    """Return the model input: float32 (28, 28), background 0, ink 255, whole numbers."""
    return preprocess_steps(data, max_pixels=max_pixels, max_side=max_side).centred


def preprocess_steps(data: bytes, *, max_pixels: int = MAX_PIXELS, max_side: int = MAX_SIDE) -> PreprocessSteps:
    """Return every intermediate image of `preprocess`: the one implementation of the pipeline."""
    decoded = decode_image(data, max_pixels=max_pixels, max_side=max_side)
    ink = _find_ink(decoded)
    cropped = _crop_to_ink(ink)
    resized = _scale_to_digit_size(cropped)
    return PreprocessSteps(decoded, ink, cropped, resized, _centre_by_mass(resized))


def _find_ink(pixels: np.ndarray) -> np.ndarray:
    """Return the ink strength (uint8, 0 = background) of every pixel; EmptyDrawing if there is none.

    On a transparent canvas the ink is the alpha channel, whatever the stroke colour. Otherwise it is
    the colour distance (largest channel difference) from the background colour, the median of the
    1-px border, so black on white, white on black and blue on yellow all work. Anything within
    NOISE_LEVEL of the background becomes 0 and the strongest distance is scaled to 255.
    """
    backgrounds = _border_medians(pixels)
    if pixels.ndim == 2:
        distance = cv2.absdiff(pixels, float(backgrounds[0]))
    elif pixels.shape[2] == 4 and backgrounds[3] < 128:
        # A transparent border means a transparent canvas: coverage is the ink, colour is irrelevant
        # (a canvas cleared to transparent stores black, white or anything as "no colour").
        distance = cv2.absdiff(cv2.extractChannel(pixels, 3), float(backgrounds[3]))
    else:
        # The largest difference of the three colours, one plane at a time into the same arrays: a large
        # image costs two planes of memory, not four.
        distance = cv2.absdiff(cv2.extractChannel(pixels, 0), float(backgrounds[0]))
        for channel in (1, 2):
            plane = cv2.extractChannel(pixels, channel)
            cv2.max(distance, cv2.absdiff(plane, float(backgrounds[channel]), dst=plane), dst=distance)
    contrast = int(distance.max())
    if contrast <= NOISE_LEVEL:
        raise EmptyDrawing("Draw a digit first: the canvas is empty.")
    cv2.threshold(distance, NOISE_LEVEL, 0, cv2.THRESH_TOZERO, dst=distance)
    return distance if contrast == 255 else cv2.convertScaleAbs(distance, alpha=255.0 / contrast)


def _border_medians(pixels: np.ndarray) -> np.ndarray:
    """Return the median value of the 1-px frame around the image, per channel (one value for grey)."""
    image = pixels[:, :, None] if pixels.ndim == 2 else pixels
    frame = np.concatenate((image[0], image[-1], image[1:-1, 0], image[1:-1, -1]))
    return np.median(frame, axis=0)  # one call for every channel: numpy's median costs most in its overhead


def _crop_to_ink(ink: np.ndarray) -> np.ndarray:
    """Return the ink cut to its bounding box (a view); EmptyDrawing for a lone dot."""
    x, y, width, height = cv2.boundingRect(ink)
    cropped = ink[y : y + height, x : x + width]
    longer, shorter = max(width, height), min(width, height)
    if (
        longer < DOT_MAX_FRACTION * min(ink.shape)
        and longer <= DOT_MAX_ASPECT * shorter
        and cv2.countNonZero(cropped) >= DOT_MIN_FILL * width * height
    ):
        raise EmptyDrawing("Draw a digit first: a single dot is not a digit.")
    return cropped


def _scale_to_digit_size(cropped: np.ndarray) -> np.ndarray:
    """Return the crop scaled (area interpolation) so its longer side is DIGIT_SIZE, aspect kept."""
    height, width = cropped.shape
    scale = DIGIT_SIZE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(cropped, size, interpolation=cv2.INTER_AREA)


def _centre_by_mass(resized: np.ndarray) -> np.ndarray:
    """Return the digit pasted into 28x28 float32 with its centre of mass moved to (14, 14)."""
    moments = cv2.moments(resized)
    if moments["m00"] == 0:
        raise EmptyDrawing("Draw a digit first: the strokes are too faint to read.")
    height, width = resized.shape
    # As in MNIST: shift by whole pixels, so values stay whole numbers, and stay inside the frame.
    centre = IMAGE_SIZE // 2
    top = min(max(math.floor(centre - moments["m01"] / moments["m00"] + 0.5), 0), IMAGE_SIZE - height)
    left = min(max(math.floor(centre - moments["m10"] / moments["m00"] + 0.5), 0), IMAGE_SIZE - width)
    centred = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    centred[top : top + height, left : left + width] = resized
    return centred


def _to_rgba(pixels: np.ndarray) -> np.ndarray:
    """Return decoded pixels (grey, RGB or RGBA) as RGBA uint8."""
    if pixels.ndim == 2:
        return cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGBA)
    if pixels.shape[2] == 3:
        return cv2.cvtColor(pixels, cv2.COLOR_RGB2RGBA)
    return pixels
