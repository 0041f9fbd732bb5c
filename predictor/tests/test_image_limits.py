"""What one request may cost: the accepted sizes and encodings, judged from the header before any decoding."""

import functools
import math
import os
import re
import struct
import time
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from predictor import imagefile
from predictor.imagefile import (
    COSTLY_PIXELS_DIVISOR,
    MAX_JPEG_SCANS,
    MAX_PIXELS,
    MAX_SIDE,
    PNG_SIGNATURE,
    ImageTooLarge,
    InvalidImage,
    decode_image,
)
from predictor.models import Drawing
from predictor.tests.drawings import WHITE, data_url, draw, encode, png_chunk, refuse_decoding
from predictor.tests.drawings import handmade_png as png

COSTLY_SIDE = math.isqrt(MAX_PIXELS // COSTLY_PIXELS_DIVISOR)


def progressive_jpeg(image, **options):
    pixels = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)
    options = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1, cv2.IMWRITE_JPEG_QUALITY, options.get("quality", 90)]
    return cv2.imencode(".jpg", pixels, options)[1].tobytes()


def with_repeated_last_scan(data, scans):
    """Return a JPEG whose last scan is repeated until it has `scans`: each one more pass over the image."""
    last = data.rindex(b"\xff\xda")
    return data[:-2] + data[last:-2] * (scans - data.count(b"\xff\xda")) + data[-2:]


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if any decoder is handed the file: a refusal from the header must come first."""

    def decoded(*args, **kwargs):
        raise AssertionError("the image was decoded")

    monkeypatch.setattr(imagefile.cv2, "imdecode", decoded)
    monkeypatch.setattr(imagefile.pyspng, "load", decoded)


@functools.cache
def sixteen_bit_bomb(side):
    """Return a real 16-bit RGBA PNG of side x side, blank: about 150 kB for 4096x4096."""
    compressor = zlib.compressobj(9)
    row = b"\0" + bytes(side * 8)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 16, 6, 0, 0, 0)
    return PNG_SIGNATURE + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def test_the_limits_fit_what_canvases_send():
    assert MAX_SIDE >= 1200 * 1.5 and MAX_PIXELS >= 1200 * 1200  # a phone's canvas at devicePixelRatio 3
    assert decode_image(encode(draw("7", (1200, 1200), background=WHITE))).shape == (1200, 1200, 4)
    assert decode_image(encode(draw("1", (2048, 800), background=WHITE))).shape == (800, 2048, 4)


@pytest.mark.parametrize(
    "data",
    [
        sixteen_bit_bomb(4096),
        png(np.zeros((16, MAX_SIDE + 1), np.uint8)),
        encode(Image.new("RGB", (3000, 100), "white"), "JPEG"),
        encode(Image.new("RGB", (MAX_SIDE + 1, 100), "white"), "WEBP", lossless=True),
    ],
    ids=["16-bit-rgba-4096x4096", "png-one-pixel-too-wide", "jpeg-3000-wide", "webp-one-pixel-too-wide"],
)
def test_a_side_over_the_limit_is_refused_from_the_header(no_decoding, data):
    started = time.process_time()
    with pytest.raises(ImageTooLarge, match=f"longer than {MAX_SIDE} pixels"):
        decode_image(data)
    assert time.process_time() - started < 0.05


def test_the_limit_on_sides_is_a_parameter():
    data = encode(draw(size=(300, 200)))
    with pytest.raises(ImageTooLarge, match="300x200"):
        decode_image(data, max_side=299)
    assert decode_image(data, max_side=300).shape == (200, 300, 4)


COSTLY = {
    "16-bit PNG": lambda image: png(np.asarray(image.convert("RGBA")), depth=16),
    "interlaced PNG": lambda image: png(np.asarray(image.convert("RGBA")), interlace=True),
    "interlaced grey PNG": lambda image: png(np.asarray(image.convert("L")), interlace=True),
    "progressive JPEG": progressive_jpeg,
}


@pytest.mark.parametrize("kind", COSTLY)
def test_costly_encodings_are_read_like_the_plain_ones_up_to_a_quarter_of_the_pixels(kind):
    image = draw("7", (COSTLY_SIDE, COSTLY_SIDE), background=WHITE)
    plain = image.convert("L" if "grey" in kind else "RGB" if "JPEG" in kind else "RGBA")
    decoded = decode_image(COSTLY[kind](image))
    assert decoded.shape == np.asarray(plain).shape
    assert np.abs(decoded.astype(int) - plain).mean() < (1 if "JPEG" in kind else 0.01)


@pytest.mark.parametrize("kind", COSTLY)
def test_costly_encodings_over_a_quarter_of_the_pixels_are_refused_with_what_to_send(no_decoding, kind):
    data = COSTLY[kind](draw("7", (COSTLY_SIDE + 1, COSTLY_SIDE), background=WHITE))
    started = time.process_time()
    with pytest.raises(ImageTooLarge) as caught:
        decode_image(data)
    assert time.process_time() - started < 0.05
    message = str(caught.value)
    assert f"accepted up to {MAX_PIXELS // COSTLY_PIXELS_DIVISOR:,} pixels" in message
    assert re.search("send an 8-bit, non-interlaced PNG|send a baseline JPEG", message), message


def test_a_dense_webp_counts_as_costly_and_a_drawing_does_not(no_decoding, monkeypatch):
    noise = np.random.default_rng(0).integers(0, 256, (COSTLY_SIDE, COSTLY_SIDE + 1, 3), np.uint8)
    with pytest.raises(ImageTooLarge, match="WebP of more than 2 bits per pixel.*lower quality"):
        decode_image(encode(Image.fromarray(noise), "WEBP", quality=90))
    monkeypatch.undo()
    drawing = encode(draw("7", (1200, 1200), background=WHITE).convert("RGB"), "WEBP", quality=90)
    assert len(drawing) * 8 < 0.2 * 1200 * 1200
    assert decode_image(drawing).shape == (1200, 1200, 3)


def test_a_jpeg_of_too_many_scans_is_refused_from_the_header(no_decoding, monkeypatch):
    flat = progressive_jpeg(Image.new("RGB", (COSTLY_SIDE, COSTLY_SIDE), (128, 128, 128)), quality=100)
    bomb = with_repeated_last_scan(flat, 5000)
    started = time.process_time()
    with pytest.raises(InvalidImage, match=f"5000 scans; at most {MAX_JPEG_SCANS}"):
        decode_image(bomb)
    assert time.process_time() - started < 0.05
    monkeypatch.undo()
    most = with_repeated_last_scan(progressive_jpeg(draw("7", background=WHITE)), MAX_JPEG_SCANS)
    assert decode_image(most).shape == (280, 280, 3)


def test_scans_are_counted_after_the_frame_header_so_metadata_does_not_count():
    data = progressive_jpeg(draw("7", background=WHITE))
    comment = b"\xff\xfe" + struct.pack(">H", 2 + 2 * 100) + b"\xff\xda" * 100  # a COM segment before the frame
    assert decode_image(data[:2] + comment + data[2:]).shape == (280, 280, 3)


@pytest.mark.parametrize("marker", [0xC3, 0xC5, 0xC9, 0xCA])
def test_lossless_hierarchical_and_arithmetic_jpegs_are_refused(no_decoding, marker):
    data = encode(draw(background=WHITE).convert("RGB"), "JPEG")
    frame = data.index(b"\xff\xc0")
    with pytest.raises(InvalidImage, match="send a baseline JPEG or a PNG"):
        decode_image(data[: frame + 1] + bytes([marker]) + data[frame + 2 :])


def test_ancillary_chunks_never_reach_a_decoder(monkeypatch):
    handed = []

    def watched(decoder):
        def decode(data, *options):
            handed.append(bytes(data))
            return decoder(data, *options)

        return decode

    monkeypatch.setattr(imagefile.cv2, "imdecode", watched(imagefile.cv2.imdecode))
    monkeypatch.setattr(imagefile.pyspng, "load", watched(imagefile.pyspng.load))
    ztxt_bomb = png_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(bytes(50_000_000), 9))
    padding = ztxt_bomb + png_chunk(b"tEXt", b"Comment\x00" + b"x" * 100_000) + png_chunk(b"eXIf", b"MM\0*")
    for pixels in (np.asarray(draw()), np.asarray(draw(background=WHITE).convert("L"))):
        plain = png(pixels)
        assert np.array_equal(decode_image(plain[:33] + padding + plain[33:]), decode_image(plain))
    assert handed and not any(b"zTXt" in data or b"tEXt" in data or b"eXIf" in data for data in handed)


def test_a_png_with_a_damaged_text_chunk_is_read_as_libpng_reads_it():
    plain = png(np.asarray(draw()))
    damaged = png_chunk(b"tEXt", b"Comment\x00hello")[:-1] + b"\0"  # wrong CRC in a chunk no pixel needs
    assert np.array_equal(decode_image(plain[:33] + damaged + plain[33:]), decode_image(plain))


@pytest.mark.django_db
def test_the_api_refuses_the_costliest_file_from_its_header_with_a_sentence(api_client, active_model, monkeypatch):
    refuse_decoding(monkeypatch)  # decoding it took 1.4 s of CPU and 330 MB
    response = api_client.post("/api/predictions/", {"image": data_url(sixteen_bit_bomb(4096))}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "image_too_large"
    assert "4096x4096" in response.json()["detail"]
    assert Drawing.objects.count() == 0


@pytest.mark.django_db
def test_the_api_applies_the_limit_settings(api_client, active_model, settings):
    settings.DIGIT_MAX_IMAGE_SIDE = 279
    response = api_client.post("/api/predictions/", {"image": data_url(encode(draw()))}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "image_too_large"
    settings.DIGIT_MAX_IMAGE_SIDE = 280
    settings.DIGIT_MAX_IMAGE_PIXELS = 4 * 280 * 280 - 1  # a 16-bit PNG gets a quarter of it
    sixteen = png(np.asarray(draw()), depth=16)
    response = api_client.post("/api/predictions/", {"image": data_url(sixteen)}, format="json")
    assert response.status_code == 400 and "16-bit PNG" in response.json()["detail"]
    settings.DIGIT_MAX_IMAGE_PIXELS = 4 * 280 * 280
    assert api_client.post("/api/predictions/", {"image": data_url(sixteen)}, format="json").status_code == 201


def test_the_plain_kinds_pass_the_encoding_checks():
    image = draw("7", (640, 480), background=WHITE)
    for data in (
        encode(image),
        encode(image.convert("L")),
        encode(image.convert("RGB"), "JPEG"),
        encode(image, "WEBP", lossless=True),
        encode(image.convert("RGB"), "WEBP"),
    ):
        assert decode_image(data).shape[:2] == (480, 640)


@pytest.mark.skipif(
    bool({"DIGIT_MAX_IMAGE_PIXELS", "DIGIT_MAX_IMAGE_SIDE"} & set(os.environ)), reason="limits set by the environment"
)
def test_the_settings_default_to_the_measured_limits(settings):
    assert (settings.DIGIT_MAX_IMAGE_PIXELS, settings.DIGIT_MAX_IMAGE_SIDE) == (MAX_PIXELS, MAX_SIDE)
