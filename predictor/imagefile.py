"""Read a submitted image file: the data URL around it, its format and declared size, and its pixels.

Everything here judges the file, not the drawing in it: what is not a PNG, JPEG or WebP image, is
damaged, or declares more pixels than the limit is refused from its header, before any decoding.
`predictor.preprocessing` turns the decoded pixels into the model's input.
"""

import base64
import binascii
import contextlib
import math
import re
import struct
import zlib

import cv2
import numpy as np
import pyspng

MAX_PIXELS = 4096 * 4096
MIN_SIDE = 8
ACCEPTED_MEDIA_TYPES = ("image/png", "image/jpeg", "image/webp")

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
    """A drawing that cannot be turned into model input; str(error) tells the person what to do.

    The base of the file's errors here and of the drawing's (EmptyDrawing) in preprocessing, so a
    caller catches every refusal with one class, from either module.
    """

    code: str = "preprocessing_error"


class InvalidImage(PreprocessingError):
    """Not a PNG, JPEG or WebP image, or a damaged one."""

    code = "invalid_image"


class ImageTooLarge(PreprocessingError):
    """More pixels than the limit; rejected from the header, before decoding."""

    code = "image_too_large"


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


def decode_image(data: bytes, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
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


def encode_png(pixels: np.ndarray) -> bytes:
    """Return PNG bytes of a greyscale image given as float or uint8 values 0..255."""
    if pixels.ndim != 2:
        raise ValueError(f"expected a 2-D greyscale image, got shape {pixels.shape}")
    grey = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    return cv2.imencode(".png", grey)[1].tobytes()


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
