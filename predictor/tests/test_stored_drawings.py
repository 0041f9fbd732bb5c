"""What is kept of a drawing: a PNG of its pixels and nothing else (as sent, or made anew), bounded in size."""

import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from predictor import imagefile, services
from predictor.imagefile import (
    PNG_SIGNATURE,
    STORED_MAX_BYTES,
    STORED_MAX_SIDE,
    decode_image,
    encode_stored_png,
    image_header,
    stored_png,
)
from predictor.preprocessing import preprocess
from predictor.tests.drawings import WHITE, canvas_png, draw, encode, handmade_png, png16

TYPICAL_DRAWING_BYTES = 30 * 1024


def png_chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def chunk_kinds(data):
    """Return the chunk types of a PNG, in order."""
    assert data.startswith(PNG_SIGNATURE)
    kinds, position = [], len(PNG_SIGNATURE)
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kinds.append(data[position + 4 : position + 8])
        position += 12 + length
    return kinds


def stored_bytes(drawing):
    with drawing.image.open("rb") as image:
        return image.read()


def exif_with_gps():
    exif = Image.Exif()
    exif[0x010E] = "secret description"  # ImageDescription
    exif[0x0112] = 1  # Orientation: upright
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (48.0, 51.0, 30.0)
    return exif.tobytes()


def with_text_chunk(png, size):
    """Return the PNG with a tEXt chunk of about `size` bytes right after its header."""
    text = png_chunk(b"tEXt", b"Comment\x00" + b"my secret " * (size // 10))
    return png[:33] + text + png[33:]


@pytest.mark.django_db
def test_a_padded_png_is_stored_small_and_without_its_text(active_model):
    page = encode(draw(background=WHITE))
    padded = with_text_chunk(page, 2_400_000)
    assert len(padded) > 2_400_000
    stored = stored_bytes(services.drawing_create(data=padded, visitor="v"))
    assert set(chunk_kinds(stored)) == {b"IHDR", b"IDAT", b"IEND"}
    assert b"secret" not in stored
    assert len(stored) <= TYPICAL_DRAWING_BYTES


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_exif_and_gps_are_not_stored(active_model, fmt):
    data = encode(draw(background=WHITE).convert("RGB"), fmt, quality=90, exif=exif_with_gps())
    assert b"secret description" in data
    drawing = services.drawing_create(data=data, visitor="v")
    stored = stored_bytes(drawing)
    assert drawing.image.name.endswith(".png")
    assert set(chunk_kinds(stored)) == {b"IHDR", b"IDAT", b"IEND"}
    assert b"secret" not in stored and b"Exif" not in stored
    assert Image.open(drawing.image.open("rb")).getexif() == {}


@pytest.mark.django_db
def test_bytes_after_the_end_of_the_png_are_not_stored(active_model):
    page = encode(draw(background=WHITE))
    stored = stored_bytes(services.drawing_create(data=page + b"\0" * 1_000_000, visitor="v"))
    assert stored.endswith(png_chunk(b"IEND", b"")) and len(stored) <= TYPICAL_DRAWING_BYTES


DRAWINGS = {
    "page export, 280 black on white RGBA": lambda digits: encode(draw(background=WHITE)),
    "mnist digit on a transparent canvas": lambda digits: canvas_png(digits[0]),
    "mnist digit black on white, grey": lambda digits: canvas_png(digits[1], transparent=False),
    "560 transparent, red ink": lambda digits: encode(draw("0", (560, 560), ink=(220, 0, 0, 255))),
    "coloured RGB": lambda digits: encode(
        draw("1", (500, 320), background=(250, 240, 200, 255), ink=(0, 0, 160, 255)).convert("RGB")
    ),
    "palette": lambda digits: encode(draw(background=WHITE).convert("RGB").quantize(8)),
    "16-bit grey": lambda digits: png16(draw(background=WHITE), 1),
    "16-bit RGBA": lambda digits: png16(draw(), 4),
    "JPEG": lambda digits: encode(draw(background=WHITE).convert("RGB"), "JPEG", quality=80),
    "JPEG stored turned, with EXIF orientation": lambda digits: encode(
        draw(background=WHITE).convert("RGB").transpose(Image.Transpose.ROTATE_90), "JPEG", exif=rotated_exif()
    ),
    "WebP lossy": lambda digits: encode(draw(background=WHITE).convert("RGB"), "WEBP", quality=80),
    "WebP lossless with alpha": lambda digits: encode(draw(ink=(0, 90, 0, 255)), "WEBP", lossless=True),
    "1200x800 black on white": lambda digits: encode(draw("7", (1200, 800), background=WHITE)),
    "2048x800 transparent": lambda digits: encode(draw("1", (2048, 800))),
    "1280x1280 transparent, the most pixels accepted": lambda digits: encode(draw("0", (1280, 1280))),
    "1200x1200 phone JPEG": lambda digits: encode(draw("7", (1200, 1200), background=WHITE).convert("RGB"), "JPEG"),
}


def rotated_exif():
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned left; viewers turn it right to show it
    return exif.tobytes()


@pytest.mark.django_db
@pytest.mark.parametrize("name", DRAWINGS)
def test_the_stored_file_has_the_decoded_pixels_and_preprocesses_to_what_the_model_saw(active_model, mnist_train, name):
    data = DRAWINGS[name](mnist_train[0])
    drawing = services.drawing_create(data=data, visitor="v")
    stored = stored_bytes(drawing)
    assert image_header(stored)[0] == "png"
    # Pixel for pixel, in the layout decoded (grey, RGB or RGBA): colour and transparency as drawn.
    assert np.array_equal(decode_image(stored), decode_image(data))
    assert np.array_equal(preprocess(stored).astype(np.uint8), drawing.input_array)


@pytest.mark.django_db
def test_the_row_keeps_the_submitted_size(active_model):
    data = encode(draw("7", (1200, 800), background=WHITE).convert("RGB"), "JPEG", exif=exif_with_gps())
    drawing = services.drawing_create(data=data, visitor="v")
    assert (drawing.image_width, drawing.image_height) == (1200, 800) == image_header(stored_bytes(drawing))[1:]


def test_an_image_stored_before_the_limits_is_scaled_to_the_largest_side_accepted():
    legacy = np.asarray(draw("1", (3000, 1000), background=WHITE))
    stored = encode_stored_png(legacy)
    assert image_header(stored) == ("png", STORED_MAX_SIDE, 683)
    assert len(stored) <= TYPICAL_DRAWING_BYTES


@pytest.mark.django_db
@pytest.mark.parametrize("size", [(280, 280), (560, 560), (840, 840), (1200, 1200), (1280, 1280), (2048, 800)])
@pytest.mark.parametrize("background", [WHITE, (0, 0, 0, 0)], ids=["white", "transparent"])
def test_a_typical_canvas_drawing_is_stored_in_under_30_kb(active_model, size, background):
    data = encode(draw("0", size, background=background))
    stored = stored_bytes(services.drawing_create(data=data, visitor="v"))
    assert len(stored) <= TYPICAL_DRAWING_BYTES, len(stored)


def noise(height, width, channels=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), np.uint8)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "make",
    [
        lambda side: encode(Image.fromarray(noise(side, side, 4)), compress_level=1),
        lambda side: encode(Image.fromarray(noise(side, side)), "JPEG", quality=95),
        lambda side: encode(Image.fromarray(noise(side // 2, side // 2, 4)), "WEBP", lossless=True),
    ],
    ids=["png-rgba", "jpeg", "webp-at-the-limit-of-dense-webp"],
)
def test_noise_of_the_largest_accepted_size_is_stored_in_at_most_256_kb(active_model, settings, make):
    data = make(int(settings.DIGIT_MAX_IMAGE_PIXELS**0.5))
    stored = stored_bytes(services.drawing_create(data=data, visitor="v"))
    assert len(stored) <= STORED_MAX_BYTES
    assert max(image_header(stored)[1:]) >= 200  # still an image to look at, not a thumbnail


@pytest.mark.parametrize(
    "shape",
    [(560, 560, 4), (560, 560, 3), (560, 560), (1280, 1280, 4), (800, 2048, 3), (2048, 8, 4), (300, 2000)],
)
def test_noise_the_worst_case_for_png_still_fits_in_the_stored_bound(shape):
    pixels = np.random.default_rng(1).integers(0, 256, shape, np.uint8)
    stored = encode_stored_png(pixels)
    assert len(stored) <= STORED_MAX_BYTES
    assert set(chunk_kinds(stored)) == {b"IHDR", b"IDAT", b"IEND"}
    decoded = cv2.imdecode(np.frombuffer(stored, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.shape[2:] == pixels.shape[2:]  # grey stays grey, RGB RGB, RGBA RGBA


def test_noise_that_fits_is_not_scaled():
    grey = np.random.default_rng(2).integers(0, 256, (560, 400), np.uint8)  # 224 kB uncompressed
    stored = encode_stored_png(grey)
    assert len(stored) <= STORED_MAX_BYTES
    assert np.array_equal(decode_image(stored), grey)


def test_noise_is_never_encoded_whole_only_to_be_found_too_large(monkeypatch):
    encoded = []

    def encode_png(pixels):
        encoded.append(pixels.shape[:2])
        return encode_png_as_decoded(pixels)

    encode_png_as_decoded = imagefile._encode_png_as_decoded
    monkeypatch.setattr(imagefile, "_encode_png_as_decoded", encode_png)
    stored = encode_stored_png(noise(1280, 1280, 4))
    assert len(stored) <= STORED_MAX_BYTES
    # A sample of rows, then the image once, at the size that fits: about 250x250 for RGBA noise.
    assert max(height * width for height, width in encoded) < 300 * 300, encoded


@pytest.mark.parametrize("transparent", [True, False])
def test_a_canvas_export_is_stored_as_sent(active_model, mnist_train, transparent):
    images, _ = mnist_train
    data = canvas_png(images[0], transparent=transparent)
    assert stored_bytes(services.drawing_create(data=data, visitor="v")) == data


def rgba_drawing():
    return np.asarray(draw("7", (96, 96), background=WHITE))


HIDING_PLACES = {
    "nothing": lambda rows: zlib.compress(rows),
    "bytes after the image data's stream": lambda rows: zlib.compress(rows) + b"secret" * 50,
    "a second stream after the first": lambda rows: zlib.compress(rows) + zlib.compress(b"secret" * 50),
    "more inflated data than the image has": lambda rows: zlib.compress(rows + b"secret" * 50),
    "a wrong checksum at the end of the stream": lambda rows: zlib.compress(rows)[:-4] + b"\0\0\0\0",
}


@pytest.mark.parametrize("hiding_place", HIDING_PLACES)
def test_a_png_is_kept_as_sent_only_when_its_image_data_holds_its_pixels_and_nothing_else(active_model, hiding_place):
    pixels = rgba_drawing()
    data = handmade_png(pixels, compress=HIDING_PLACES[hiding_place])
    assert np.array_equal(decode_image(data), pixels)  # the decoder reads the pixels and looks no further
    stored = stored_bytes(services.drawing_create(data=data, visitor="v"))
    if hiding_place == "nothing":
        assert stored == data
    else:
        assert stored == encode_stored_png(pixels) != data
    assert b"secret" not in zlib.decompress(stored[41:-12]) and np.array_equal(decode_image(stored), pixels)


@pytest.mark.parametrize(
    "make",
    [
        lambda pixels: handmade_png(pixels, interlace=True),
        lambda pixels: png16(Image.fromarray(pixels), 4),
        lambda pixels: encode(Image.fromarray(pixels).convert("P"), "PNG"),
        lambda pixels: encode(Image.fromarray(pixels).convert("LA"), "PNG"),
    ],
    ids=["interlaced", "16-bit", "palette", "grey with alpha"],
)
def test_other_pngs_are_stored_made_anew(make):
    pixels = rgba_drawing()
    data = make(pixels)
    decoded = decode_image(data)
    assert stored_png(data, decoded) == encode_stored_png(decoded)


def test_a_png_larger_than_the_stored_bound_is_not_kept_as_sent():
    pixels = np.random.default_rng(0).integers(0, 256, (300, 300, 4), np.uint8)
    data = handmade_png(pixels, compress=lambda rows: zlib.compress(rows, 0))  # not compressed: 360 kB
    assert len(data) > STORED_MAX_BYTES
    assert len(stored_png(data, decode_image(data))) <= STORED_MAX_BYTES


def test_a_png_with_other_chunks_is_stored_as_its_own_image_chunks_alone(active_model, mnist_train):
    images, _ = mnist_train
    data = canvas_png(images[0])
    others = png_chunk(b"tEXt", b"Comment\x00my secret") + png_chunk(b"sRGB", b"\x00") + png_chunk(b"pHYs", b"\0" * 9)
    padded = data[:33] + others + data[33:] + b"my secret after the end"
    stored = stored_bytes(services.drawing_create(data=padded, visitor="v"))
    assert stored == data  # the same image data, not encoded again


def test_a_png_with_a_transparent_colour_is_stored_made_anew():
    pixels = np.ascontiguousarray(rgba_drawing()[..., :3])
    plain = cv2.imencode(".png", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))[1].tobytes()
    data = plain[:33] + png_chunk(b"tRNS", b"\0\xff\0\xff\0\xff") + plain[33:]
    decoded = decode_image(data)
    assert stored_png(data, decoded) == encode_stored_png(decoded)
