"""Test images: MNIST digits on a canvas, digits drawn with a round pen, and the ways of encoding them."""

import base64
import io
import struct
import zlib

import cv2
import numpy as np
from django.conf import settings
from PIL import Image, ImageDraw

from predictor import imagefile

MNIST_PATH = settings.BASE_DIR / "training" / "data" / "mnist.npz"
ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def canvas_png(digit_image: np.ndarray, *, size: int = 280, transparent: bool = True) -> bytes:
    """Return a PNG of a 28x28 MNIST-style digit scaled up onto a canvas, black ink."""
    ink = cv2.resize(digit_image, (size, size), interpolation=cv2.INTER_LINEAR)
    if transparent:
        rgba = np.zeros((size, size, 4), np.uint8)
        rgba[..., 3] = ink
        ok, png = cv2.imencode(".png", rgba)
    else:
        ok, png = cv2.imencode(".png", 255 - ink)
    assert ok
    return png.tobytes()


def data_url(png: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64," + base64.b64encode(png).decode("ascii")


# Digits as polylines in the unit square, drawn with a round pen like the drawing page's.
STROKES = {
    "1": [[(0.43, 0.2), (0.55, 0.1), (0.55, 0.9)]],
    "7": [[(0.2, 0.12), (0.8, 0.12), (0.4, 0.9)], [(0.35, 0.5), (0.7, 0.5)]],
    "0": [[(0.5 + 0.3 * np.sin(a), 0.5 - 0.42 * np.cos(a)) for a in np.linspace(0, 2 * np.pi, 25)]],
}
TRANSPARENT = (0, 0, 0, 0)
WHITE = (255, 255, 255, 255)
BLACK = (0, 0, 0, 255)


def draw(digit="7", size=(280, 280), *, background=TRANSPARENT, ink=BLACK, box=(0.15, 0.1, 0.85, 0.9), pen=None):
    """Return an RGBA PIL image of a digit drawn with round, anti-aliased strokes inside box.

    box is (left, top, right, bottom) as fractions of the canvas; pen is the stroke width in pixels.
    """
    width, height = size
    pen = pen or max(3, round(min(size) / 14))
    # Draw at twice the size and shrink: Pillow's own lines are not anti-aliased, canvas strokes are.
    big = Image.new("RGBA", (width * 2, height * 2), background)
    pencil = ImageDraw.Draw(big)
    left, top, right, bottom = box
    for stroke in STROKES[digit]:
        points = [(2 * width * (left + x * (right - left)), 2 * height * (top + y * (bottom - top))) for x, y in stroke]
        pencil.line(points, fill=ink, width=2 * pen, joint="curve")
        for x, y in points:
            pencil.ellipse((x - pen, y - pen, x + pen, y + pen), fill=ink)
    return big.resize(size, Image.Resampling.BOX)


def encode(image, fmt="PNG", **options):
    """Return the bytes of a PIL image saved as fmt."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png16(image, channels):
    """Return a 16-bit PNG of a PIL image (grey or BGRA order for OpenCV)."""
    if channels == 1:
        pixels = np.asarray(image.convert("L"))
    else:
        pixels = cv2.cvtColor(np.asarray(image.convert("RGBA")), cv2.COLOR_RGBA2BGRA)
    return cv2.imencode(".png", pixels.astype(np.uint16) * 257)[1].tobytes()


def refuse_decoding(monkeypatch):
    """Make every decoder the image file module uses fail the test if it is called."""

    def decoder_called(*args, **kwargs):
        raise AssertionError("the image was decoded")

    monkeypatch.setattr(imagefile.cv2, "imdecode", decoder_called)
    monkeypatch.setattr(imagefile.pyspng, "load", decoder_called)


def png_chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def handmade_png(pixels, *, depth=8, interlace=False, extra=b"", compress=lambda rows: zlib.compress(rows, 1)):
    """Return a PNG written by hand (grey or RGBA), Adam7-interlaced if asked, with `extra` chunks after IHDR.

    `compress` turns the filtered rows (filter 0 on each) into the IDAT chunk's data.
    """
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    height, width = pixels.shape[:2]
    samples = (pixels.astype(np.uint16) * 257).astype(">u2") if depth == 16 else pixels
    passes = [samples[y::dy, x::dx] for x, y, dx, dy in ADAM7] if interlace else [samples]
    raw = b"".join(b"\0" + row.tobytes() for image in passes if image.size for row in image.reshape(image.shape[0], -1))
    header = struct.pack(">IIBBBBB", width, height, depth, {1: 0, 4: 6}[channels], 0, 0, int(interlace))
    return (
        imagefile.PNG_SIGNATURE
        + png_chunk(b"IHDR", header)
        + extra
        + png_chunk(b"IDAT", compress(raw))
        + png_chunk(b"IEND", b"")
    )
