"""Read a submitted image file (the data URL around it, its format, declared size and pixels), and write the copy kept.

Everything here judges the file, not the drawing in it: what is not a PNG, JPEG or WebP image, is
damaged, is larger than the limits or is encoded in a way that costs more to decode than its size allows
is refused from its header, before any decoding. The limits come from what canvases send, not from
what decoders could read: the drawing page sends 280x280, a phone drawing at devicePixelRatio 3 about
1200x1200. `predictor.preprocessing` turns the decoded pixels into the model's input, and `stored_png`
gives the file that is kept: a PNG of the decoded pixels and nothing else, which is the submitted PNG's
own image chunks when they hold exactly those pixels (what canvases send), else one made from the pixels.
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

# Accepted sizes: a side of up to MAX_SIDE and MAX_PIXELS in all, so a phone's 1200x1200 canvas
# (devicePixelRatio 3) fits, and the costliest accepted file stays within about 100 ms of CPU
# (docs/performance.md, "Costliest inputs"). The settings DIGIT_MAX_IMAGE_SIDE and _PIXELS pass them.
MAX_SIDE = 2048
MAX_PIXELS = 1280 * 1280
MIN_SIDE = 8
# Some files cost up to four times more per pixel to decode than the others, and no drawing needs to be
# one: 16-bit and interlaced (Adam7) PNGs, progressive JPEGs, and WebPs of more than
# WEBP_MAX_BITS_PER_PIXEL (libwebp's time grows with the bytes: a drawing of 1200x1200 is under 0.2
# bits per pixel, noise at the highest quality 21). They are accepted up to a quarter of the pixels.
COSTLY_PIXELS_DIVISOR = 4
WEBP_MAX_BITS_PER_PIXEL = 2
# A JPEG is decoded scan by scan, each scan a pass over the image: a baseline JPEG has 1 to 4, a
# progressive one from libjpeg 10 or fewer. A file of thousands of scans, each tiny, would cost seconds.
MAX_JPEG_SCANS = 24
# The stored copy of a drawing keeps every accepted drawing pixel for pixel, since retraining
# preprocesses the stored file and must get exactly the input the model saw: a canvas drawing of
# 1280x1280 is a PNG of about 20 kB. An image whose PNG would exceed STORED_MAX_BYTES is not a drawing
# (noise, a photograph) and is scaled down until it fits; a larger side only comes from files stored
# before the limits were lowered (see `manage.py reencode_drawings`).
STORED_MAX_SIDE = MAX_SIDE
STORED_MAX_BYTES = 256 * 1024
# Whether an image's PNG would be far over STORED_MAX_BYTES is guessed from a few bands of its rows,
# so that noise is not first encoded whole (35 ms at 1280x1280) only to be found too large.
SAMPLE_BANDS = 8
SAMPLE_ROWS = 16
ACCEPTED_MEDIA_TYPES = ("image/png", "image/jpeg", "image/webp")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour types kept as submitted when 8 bits deep, with the channels they decode to: grey (0), truecolour
# (2) and truecolour with alpha (6). Grey with alpha and palettes decode to another layout.
STORED_COLOUR_CHANNELS = {0: 1, 2: 3, 6: 4}
JPEG_SIGNATURE = b"\xff\xd8\xff"
# PNG colour types (IHDR byte 25) decoded by libspng when 8 bits deep and without a transparent colour
# (tRNS): truecolour (2) and truecolour with alpha (6), what canvases export. Every other PNG, JPEG and
# WebP goes through OpenCV.
SPNG_COLOUR_TYPES = frozenset({2, 6})
# JPEG start-of-frame markers carry the image size; C4, C8 and CC share the range but are other segments.
JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Of those, what cameras, phones and browsers write: baseline (C0), extended sequential (C1), progressive
# (C2), all Huffman-coded. Lossless, hierarchical and arithmetic-coded JPEGs are refused.
JPEG_ACCEPTED_MARKERS = frozenset({0xC0, 0xC1, 0xC2})
JPEG_PROGRESSIVE = 0xC2
JPEG_START_OF_SCAN = b"\xff\xda"  # in entropy-coded data 0xFF is always followed by 0 or a restart marker
# The stored PNG: filter "up" and run-length deflate write a canvas drawing about four times faster than
# OpenCV's default (every filter tried on every row) and about as small; noise is not compressible anyway.
STORED_PNG_OPTIONS = [
    cv2.IMWRITE_PNG_FILTER,
    cv2.IMWRITE_PNG_FILTER_UP,
    cv2.IMWRITE_PNG_STRATEGY,
    cv2.IMWRITE_PNG_STRATEGY_RLE,
]
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
                f"Images of type {media_type or 'unknown'!r} are not accepted: send {', '.join(ACCEPTED_MEDIA_TYPES)}."
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
            f"The image data is not valid base64: unexpected character {bad.group()!r} at position {bad.start()}."
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


def decode_image(data: bytes, *, max_pixels: int = MAX_PIXELS, max_side: int = MAX_SIDE) -> np.ndarray:
    """Return the pixels as uint8 grey (H, W), RGB or RGBA (H, W, 3|4), after checking the header.

    The header says what decoding will cost: the size, and the encoding, since some cost more per pixel
    (see COSTLY_PIXELS_DIVISOR). A file over the limits is refused before any decoder sees it.
    """
    kind, width, height = image_header(data)
    if width == 0 or height == 0:
        raise InvalidImage(f"The image has no pixels (declared size {width}x{height}).")
    if max(width, height) > max_side:
        raise ImageTooLarge(
            f"The image is {width}x{height} pixels; no side may be longer than {max_side} pixels: "
            f"scale it down (the drawing page sends 280x280)."
        )
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"The image is {width}x{height} pixels; the limit is {max_pixels:,} pixels "
            f"(for example {math.isqrt(max_pixels)}x{math.isqrt(max_pixels)})."
        )
    if min(width, height) < MIN_SIDE:
        raise InvalidImage(
            f"The image is {width}x{height} pixels, too small to hold a drawing: send at least {MIN_SIDE}x{MIN_SIDE}."
        )
    _check_encoding(data, kind, width * height, max_pixels // COSTLY_PIXELS_DIVISOR)
    pixels = _decode_canvas_png(data) if kind == "png" else None
    if pixels is None:
        image = _png_image_chunks(data) if kind == "png" else None
        # A PNG with a damaged chunk goes to libpng whole: it refuses or reads it, as it judges.
        pixels = _decode_with_opencv(data if image is None else image[0], kind)
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


def stored_png(data: bytes, pixels: np.ndarray) -> bytes:
    """Return the PNG kept for a drawing submitted as `data` and decoded to `pixels`.

    When `data` is a PNG whose image chunks hold exactly these pixels (see `_image_chunks`), they are
    kept as sent, without the file's other chunks: `data` itself when it has none, as a canvas export
    has none. Making another PNG of the pixels would cost more than all the rest of their image work.
    Any other file is stored as `encode_stored_png(pixels)`. Either way the stored file decodes to `pixels`.
    """
    kept = _image_chunks(data, pixels)
    return kept if kept is not None else encode_stored_png(pixels)


def _image_chunks(data: bytes, pixels: np.ndarray) -> bytes | None:
    """Return the PNG made of `data`'s IHDR, IDAT and IEND chunks if they hold exactly `pixels` and nothing else.

    That is an 8-bit, non-interlaced grey, RGB or RGBA PNG of `pixels`'s shape, every chunk up to IEND
    with its CRC right, none that decoding would refuse or that changes the pixels (a critical chunk
    but those, or tRNS), and image data that inflates to exactly the image's rows, with its checksum
    right and nothing after the end of its stream (where decoders look no further, and bytes could
    hide). Other chunks (text, EXIF, colour profiles) and bytes after IEND are left out. None if any
    of this does not hold, or the result is over STORED_MAX_BYTES or STORED_MAX_SIDE.
    """
    if len(data) < 33 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", data[16:29])
    channels = STORED_COLOUR_CHANNELS.get(colour)
    shape = (height, width) if channels == 1 else (height, width, channels)
    if depth != 8 or channels is None or (compression, filtering, interlace) != (0, 0, 0) or pixels.shape != shape:
        return None
    if max(width, height) > STORED_MAX_SIDE:
        return None
    kept: list[bytes | memoryview] = [PNG_SIGNATURE]
    image_data: list[memoryview] = []
    view = memoryview(data)
    position = len(PNG_SIGNATURE)
    kind = b""
    while kind != b"IEND":
        if position + 12 > len(data):
            return None
        (length,) = struct.unpack(">I", data[position : position + 4])
        end = position + 8 + length
        if end + 4 > len(data) or zlib.crc32(view[position + 4 : end]) != struct.unpack(">I", data[end : end + 4])[0]:
            return None
        kind = data[position + 4 : position + 8]
        if kind in (b"IHDR", b"IDAT", b"IEND"):
            kept.append(view[position : end + 4])
            if kind == b"IDAT":
                image_data.append(view[position + 8 : end])
        elif kind == b"tRNS" or not kind[0] & 0x20:  # bit 5 of the first letter clear: a critical chunk
            return None
        position = end + 4
    size = sum(len(part) for part in kept)
    if size > STORED_MAX_BYTES or not image_data:
        return None
    rows = height * (1 + width * channels)  # each row: its filter byte, then its samples
    inflater = zlib.decompressobj()
    try:
        # At most one byte more than the rows: enough to tell that there is more, without inflating it.
        inflated = inflater.decompress(b"".join(image_data), rows + 1)
    except zlib.error:
        return None
    if len(inflated) != rows or not inflater.eof or inflater.unused_data or inflater.unconsumed_tail:
        return None
    return data if size == len(data) else b"".join(kept)


def encode_stored_png(pixels: np.ndarray) -> bytes:
    """Return the PNG kept for a drawing: its decoded pixels, at most STORED_MAX_SIDE and STORED_MAX_BYTES.

    Made from the pixels, never from the submitted bytes, so nothing of the file but its image is kept
    (no text chunks, no EXIF, no padding), in the layout it was decoded to (grey, RGB or RGBA: colour and
    transparency stay as drawn). A drawing is kept pixel for pixel, so the stored file preprocesses
    exactly as the submitted one did; an image whose PNG would be over STORED_MAX_BYTES is scaled down
    (area interpolation) until it fits.
    """
    scale = min(STORED_MAX_SIDE / max(pixels.shape[:2]), _first_scale(pixels))
    while True:
        if scale < 1:
            height, width = pixels.shape[:2]
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
        png = _encode_png_as_decoded(pixels)
        if len(png) <= STORED_MAX_BYTES:
            return png
        # A PNG's size grows with its area: aim a little under the limit, so one more try is enough. Each
        # try shrinks the image by at least 10%, and below about 250x250 even noise fits.
        scale = min(0.9, 0.95 * math.sqrt(STORED_MAX_BYTES / len(png)))


def _first_scale(pixels: np.ndarray) -> float:
    """Return the scale to encode `pixels` at first: 1, unless a sample of rows says the PNG would be far too large.

    The bands are placed at random, so that no file can be made compressible just where it is sampled.
    Only an estimate of more than twice the limit counts: a drawing (20 kB) is never scaled on a guess.
    """
    height = pixels.shape[0]
    if pixels.nbytes <= 4 * STORED_MAX_BYTES or height < 2 * SAMPLE_BANDS * SAMPLE_ROWS:
        return 1.0
    starts = np.random.default_rng().choice(height - SAMPLE_ROWS, SAMPLE_BANDS, replace=False)
    sampled = sum(len(_encode_png_as_decoded(pixels[start : start + SAMPLE_ROWS])) for start in starts)
    estimate = sampled * height / (SAMPLE_BANDS * SAMPLE_ROWS)
    return 0.95 * math.sqrt(STORED_MAX_BYTES / estimate) if estimate > 2 * STORED_MAX_BYTES else 1.0


def _encode_png_as_decoded(pixels: np.ndarray) -> bytes:
    """Return PNG bytes of uint8 grey, RGB or RGBA pixels (red first), with no chunk but IHDR, IDAT and IEND."""
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR if pixels.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    return cv2.imencode(".png", pixels, STORED_PNG_OPTIONS)[1].tobytes()


def _check_encoding(data: bytes, kind: str, pixels: int, costly_max_pixels: int) -> None:
    """Refuse, from the header, an encoding not accepted, or a costly one of more than costly_max_pixels."""
    if kind == "png":
        # IHDR: bit depth at byte 24, interlace method at byte 28 (1 = Adam7).
        costly = "a 16-bit PNG" if data[24] == 16 else "an interlaced PNG" if data[28] == 1 else None
        remedy = "send an 8-bit, non-interlaced PNG (what a canvas exports)"
    elif kind == "jpeg":
        marker, _, _, frame_position = _jpeg_frame(data)
        remedy = "send a baseline JPEG or a PNG"
        if marker not in JPEG_ACCEPTED_MARKERS:
            raise InvalidImage(
                f"This JPEG is lossless, hierarchical or arithmetic-coded, which is not accepted: {remedy}."
            )
        # Scans come after the frame header; counted from there, metadata before it (EXIF, ICC) cannot count.
        if (scans := data.count(JPEG_START_OF_SCAN, frame_position)) > MAX_JPEG_SCANS:
            raise InvalidImage(f"This JPEG has {scans} scans; at most {MAX_JPEG_SCANS} are accepted: {remedy}.")
        costly = "a progressive JPEG" if marker == JPEG_PROGRESSIVE else None
    else:
        dense = len(data) * 8 > WEBP_MAX_BITS_PER_PIXEL * pixels
        costly = f"a WebP of more than {WEBP_MAX_BITS_PER_PIXEL} bits per pixel" if dense else None
        remedy = "send a PNG (what a canvas exports) or a WebP of lower quality"
    if costly and pixels > costly_max_pixels:
        raise ImageTooLarge(
            f"{costly[0].upper()}{costly[1:]} is accepted up to {costly_max_pixels:,} pixels "
            f"(for example {math.isqrt(costly_max_pixels)}x{math.isqrt(costly_max_pixels)}); "
            f"this one has {pixels:,}: {remedy}, or a smaller image."
        )


def _decode_canvas_png(data: bytes) -> np.ndarray | None:
    """Return the RGB(A) pixels of an 8-bit truecolour PNG decoded by libspng; None for any other PNG.

    libspng decodes a canvas export about twice as fast as OpenCV's libpng, with the same pixels
    (a test compares them). None also for a PNG with a damaged chunk or a transparent colour, or one
    libspng refuses: OpenCV then has the last word, so which files are accepted, and how they are
    read, does not depend on the decoder.
    """
    if len(data) < 33 or data[24] != 8 or data[25] not in SPNG_COLOUR_TYPES:
        return None
    image = _png_image_chunks(data)
    if image is None or image[1]:
        return None
    try:
        return pyspng.load(image[0])
    except RuntimeError:
        return None


def _png_image_chunks(data: bytes) -> tuple[bytes, bool] | None:
    """Return (the PNG with only the chunks its pixels need, whether one is tRNS); None if one is damaged.

    Those are the critical chunks (IHDR, PLTE, IDAT, IEND, any other a decoder must refuse) and tRNS.
    The rest, text, EXIF, colour profiles, animation frames, change no pixel as decoded here, and a
    decoder would read them anyway: libspng inflates a zTXt bomb until its limit, 80 ms, libpng 18 ms.
    None when a kept chunk is cut short or has a wrong CRC, or IEND is missing.
    """
    kept: list[bytes | memoryview] = [PNG_SIGNATURE]
    transparency = dropped = False
    position = len(PNG_SIGNATURE)
    view = memoryview(data)
    while position + 12 <= len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        end = position + 8 + length
        if end + 4 > len(data):
            return None
        kind = data[position + 4 : position + 8]
        if kind == b"tRNS" or not kind[0] & 0x20:  # bit 5 of the first letter clear: a critical chunk
            (crc,) = struct.unpack(">I", data[end : end + 4])
            # libspng does not check the CRC of image data; libpng does, and refuses the file.
            if zlib.crc32(view[position + 4 : end]) != crc:
                return None
            kept.append(view[position : end + 4])
            transparency |= kind == b"tRNS"
        else:
            dropped = True
        if kind == b"IEND":
            # A canvas export has nothing to drop: it is passed on as it is, not copied (up to 5 MB).
            whole = not dropped and end + 4 == len(data)
            return (data if whole else b"".join(kept)), transparency
        position = end + 4
    return None


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
        # OpenCV orders colours blue first; everything after decoding expects red first. In place: a
        # copy would double the memory the largest image takes.
        cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB if pixels.shape[2] == 3 else cv2.COLOR_BGRA2RGBA, dst=pixels)
    return pixels


def _declared_size(data: bytes, kind: str) -> tuple[int, int]:
    """Return (width, height) as the header declares it, without decoding any pixels."""
    if kind == "png":
        if data[12:16] != b"IHDR" or len(data) < 33:
            raise InvalidImage("The PNG image is damaged: its header (IHDR) is missing.")
        return struct.unpack(">II", data[16:24])
    if kind == "webp":
        return _webp_size(data)
    return _jpeg_frame(data)[1:3]


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


def _jpeg_frame(data: bytes) -> tuple[int, int, int, int]:
    """Return (start-of-frame marker, width, height, its position) from the JPEG frame header.

    Walks the segments before it by their lengths, without reading the entropy-coded data.
    """
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
            return marker, width, height, position
        position += 2 + struct.unpack(">H", data[position + 2 : position + 4])[0]
    raise InvalidImage("The JPEG image is damaged: no frame header was found.")
