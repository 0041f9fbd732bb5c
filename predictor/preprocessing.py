"""Turn a submitted drawing (PNG, JPEG or WebP bytes) into the 28x28 MNIST-style input of the model.

Serving and retraining both go through `preprocess`, so what the model is trained on is exactly what it
is later shown. The pipeline: check the header, decode, find the ink, crop to it at full resolution,
scale the longer side to 20 px, centre by centre of mass in 28x28 (background 0, ink 255).
"""

import base64
import binascii
import contextlib
import math
import re
import struct
import zlib
from dataclasses import dataclass

import cv2
import numpy as np
import pyspng

IMAGE_SIZE = 28
DIGIT_SIZE = 20
MAX_PIXELS = 4096 * 4096
MIN_SIDE = 8
ACCEPTED_MEDIA_TYPES = ("image/png", "image/jpeg", "image/webp")
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

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
# PNG colour types (IHDR byte 25) decoded by libspng when 8 bits deep and without a transparent colour
# (tRNS): truecolour (2) and truecolour with alpha (6), what canvases export. Every other PNG, JPEG and
# WebP goes through OpenCV.
SPNG_COLOUR_TYPES = frozenset({2, 6})
# JPEG start-of-frame markers carry the image size; C4, C8 and CC share the range but are other segments.
JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/=]")


class PreprocessingError(ValueError):
    """A drawing that cannot be turned into model input; str(error) tells the person what to do."""

    code: str = "preprocessing_error"


class InvalidImage(PreprocessingError):
    """Not a PNG, JPEG or WebP image, or a damaged one."""

    code = "invalid_image"


class ImageTooLarge(PreprocessingError):
    """More pixels than the limit; rejected from the header, before decoding."""

    code = "image_too_large"


class EmptyDrawing(PreprocessingError):
    """No ink, only faint noise, or a single dot."""

    code = "empty_drawing"


@dataclass(frozen=True)
class PreprocessSteps:
    """The intermediate images of `preprocess`, for notebooks and documentation."""

    raw: np.ndarray  # decoded image, RGBA uint8 (H, W, 4)
    ink: np.ndarray  # uint8 (H, W): 0 = background, 255 = strongest ink
    cropped: np.ndarray  # uint8: ink cut to its bounding box
    resized: np.ndarray  # uint8: longer side DIGIT_SIZE
    centred: np.ndarray  # float32 (28, 28): the model input


def decode_payload(text: str) -> bytes:
    """Return the image bytes of a base64 data URL ("data:image/png;base64,...") or of bare base64."""
    text = text.strip()
    if text[:5].lower() == "data:":
        header, comma, text = text.partition(",")
        media_type, *parameters = (part.strip().lower() for part in header[5:].split(";"))
        if not comma:
            raise InvalidImage("The data URL has no comma before the image data.")
        if media_type not in ACCEPTED_MEDIA_TYPES:
            raise InvalidImage(
                f"Images of type {media_type or 'unknown'!r} are not accepted: "
                f"send {', '.join(ACCEPTED_MEDIA_TYPES)}."
            )
        if "base64" not in parameters:
            raise InvalidImage("The data URL must be base64-encoded (data:image/png;base64,...).")
    if text:
        # What browsers send is canonical base64, which decodes at once; only other text needs the
        # checks below, which say what is wrong with it (6x slower on a canvas PNG).
        # ValueError covers binascii.Error and text with non-ASCII characters.
        with contextlib.suppress(ValueError):
            return base64.b64decode(text, validate=True)
    text = "".join(text.split())
    if not text:
        raise InvalidImage("The image data is empty.")
    if bad := NOT_BASE64.search(text):
        raise InvalidImage(
            f"The image data is not valid base64: unexpected character {bad.group()!r} "
            f"at position {bad.start()}."
        )
    if "=" in text.rstrip("="):
        raise InvalidImage("The image data is not valid base64: '=' may only appear at the end.")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error as error:
        raise InvalidImage(f"The image data is not valid base64 ({error}).") from None


def image_format(data: bytes) -> str:
    """Return "png", "jpeg" or "webp" from the file signature; InvalidImage for anything else."""
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(JPEG_SIGNATURE):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if not data:
        raise InvalidImage("The image is empty (0 bytes).")
    raise InvalidImage("The file is not a PNG, JPEG or WebP image.")


def image_header(data: bytes) -> tuple[str, int, int]:
    """Return (format, width, height) of a PNG, JPEG or WebP as its header declares it; InvalidImage if unreadable."""
    kind = image_format(data)
    return (kind, *_declared_size(data, kind))


def preprocess(data: bytes, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Return the model input: float32 (28, 28), background 0, ink 255, whole numbers."""
    return _run(data, max_pixels)[-1]


def preprocess_steps(data: bytes, *, max_pixels: int = MAX_PIXELS) -> PreprocessSteps:
    """Return every intermediate image of `preprocess` (same result, plus the RGBA decode)."""
    pixels, ink, cropped, resized, centred = _run(data, max_pixels)
    return PreprocessSteps(_to_rgba(pixels), ink, cropped, resized, centred)


def encode_png(pixels: np.ndarray) -> bytes:
    """Return PNG bytes of a greyscale image given as float or uint8 values 0..255."""
    if pixels.ndim != 2:
        raise ValueError(f"expected a 2-D greyscale image, got shape {pixels.shape}")
    grey = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    return cv2.imencode(".png", grey)[1].tobytes()


def _run(data: bytes, max_pixels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return (decoded pixels, ink, cropped, resized, centred): the one implementation of the pipeline."""
    pixels = _decode(data, max_pixels)
    ink = _find_ink(pixels)
    cropped = _crop_to_ink(ink)
    resized = _scale_to_digit_size(cropped)
    return pixels, ink, cropped, resized, _centre_by_mass(resized)


def _decode(data: bytes, max_pixels: int) -> np.ndarray:
    """Return the pixels as uint8 grey (H, W), RGB or RGBA (H, W, 3|4), after checking the declared size."""
    kind, width, height = image_header(data)
    if width == 0 or height == 0:
        raise InvalidImage(f"The image has no pixels (declared size {width}x{height}).")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"The image is {width}x{height} pixels; the limit is {max_pixels:,} pixels "
            f"(for example {math.isqrt(max_pixels)}x{math.isqrt(max_pixels)})."
        )
    if min(width, height) < MIN_SIDE:
        raise InvalidImage(
            f"The image is {width}x{height} pixels, too small to hold a drawing: "
            f"send at least {MIN_SIDE}x{MIN_SIDE}."
        )
    pixels = _decode_canvas_png(data) if kind == "png" else None
    if pixels is None:
        pixels = _decode_with_opencv(data, kind)
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    if pixels.dtype != np.uint8 or (pixels.ndim == 3 and pixels.shape[2] not in (3, 4)):
        raise InvalidImage(f"The {kind.upper()} image has an unsupported pixel format.")
    return pixels


def _decode_canvas_png(data: bytes) -> np.ndarray | None:
    """Return the RGB(A) pixels of an 8-bit truecolour PNG decoded by libspng; None for any other PNG.

    libspng decodes a canvas export about twice as fast as OpenCV's libpng, with the same pixels
    (a test compares them). None also for a PNG with a damaged chunk or a transparent colour, or one
    libspng refuses: OpenCV then has the last word, so which files are accepted, and how they are
    read, does not depend on the decoder.
    """
    if len(data) < 29 or data[24] != 8 or data[25] not in SPNG_COLOUR_TYPES or not _plain_intact_png(data):
        return None
    try:
        return pyspng.load(data)
    except RuntimeError:
        return None


def _plain_intact_png(data: bytes) -> bool:
    """Return whether every chunk of the PNG is whole, with a right CRC, and none is tRNS."""
    position = len(PNG_SIGNATURE)
    while position + 12 <= len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        end = position + 8 + length
        if end + 4 > len(data):
            return False
        kind = data[position + 4 : position + 8]
        (crc,) = struct.unpack(">I", data[end : end + 4])
        # libspng does not check the CRC of image data; libpng does, and refuses the file.
        if kind == b"tRNS" or zlib.crc32(data[position + 4 : end]) != crc:
            return False
        if kind == b"IEND":
            return True
        position = end + 4
    return False


def _decode_with_opencv(data: bytes, kind: str) -> np.ndarray:
    """Return the pixels as decoded by OpenCV: grey (H, W) or RGB(A) (H, W, 3|4), uint8 or uint16."""
    # JPEG has no alpha, so decode it with EXIF orientation applied (phone photos); PNG and WebP keep
    # their alpha and bit depth (IMREAD_UNCHANGED). Animated PNG and WebP give their first frame.
    flags = cv2.IMREAD_ANYCOLOR if kind == "jpeg" else cv2.IMREAD_UNCHANGED
    try:
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error:
        pixels = None
    if pixels is None or pixels.size == 0:
        raise InvalidImage(f"The {kind.upper()} image is damaged or truncated and cannot be decoded.")
    if pixels.ndim == 3 and pixels.shape[2] in (3, 4):
        # OpenCV orders colours blue first; everything after decoding expects red first.
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB if pixels.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    return pixels


def _declared_size(data: bytes, kind: str) -> tuple[int, int]:
    """Return (width, height) as the header declares it, without decoding any pixels."""
    if kind == "png":
        if data[12:16] != b"IHDR" or len(data) < 24:
            raise InvalidImage("The PNG image is damaged: its header (IHDR) is missing.")
        return struct.unpack(">II", data[16:24])
    if kind == "webp":
        return _webp_size(data)
    return _jpeg_size(data)


def _webp_size(data: bytes) -> tuple[int, int]:
    """Return (width, height) of a WebP from its first chunk (lossy VP8, lossless VP8L or extended VP8X)."""
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    raise InvalidImage("The WebP image is damaged: its header is missing or unknown.")


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """Return (width, height) from the JPEG start-of-frame segment, walking the segments before it."""
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            break
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            position += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            break
        if marker in JPEG_SOF_MARKERS:
            if position + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[position + 5 : position + 9])
            return width, height
        position += 2 + struct.unpack(">H", data[position + 2 : position + 4])[0]
    raise InvalidImage("The JPEG image is damaged: no frame header was found.")


def _find_ink(pixels: np.ndarray) -> np.ndarray:
    """Return the ink strength (uint8, 0 = background) of every pixel; EmptyDrawing if there is none.

    On a transparent canvas the ink is the alpha channel, whatever the stroke colour. Otherwise it is
    the colour distance (largest channel difference) from the background colour, the median of the
    1-px border, so black on white, white on black and blue on yellow all work. Anything within
    NOISE_LEVEL of the background becomes 0 and the strongest distance is scaled to 255.
    """
    backgrounds = _border_medians(pixels)
    if pixels.ndim == 2:
        planes = [(pixels, backgrounds[0])]
    elif pixels.shape[2] == 4 and backgrounds[3] < 128:
        # A transparent border means a transparent canvas: coverage is the ink, colour is irrelevant
        # (a canvas cleared to transparent stores black, white or anything as "no colour").
        planes = [(cv2.extractChannel(pixels, 3), backgrounds[3])]
    else:
        planes = list(zip(cv2.split(pixels)[:3], backgrounds[:3]))
    distance = None
    for plane, background in planes:
        difference = cv2.absdiff(plane, float(background))
        distance = difference if distance is None else cv2.max(distance, difference)
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
