import base64
import io
import resource
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from predictor import imagefile
from predictor.imagefile import (
    ImageTooLarge,
    InvalidImage,
    PreprocessingError,
    decode_image,
    decode_payload,
    encode_png,
    image_format,
    image_header,
)
from predictor.tests.drawings import WHITE, draw, encode, png16, refuse_decoding


def png_chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def declared_png(width, height):
    """Return a tiny 8-bit grey PNG whose header (with a correct CRC) claims width x height."""
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    data = png_chunk(b"IDAT", zlib.compress(b"\0" * 64 * 1024, 9))
    return imagefile.PNG_SIGNATURE + header + data + png_chunk(b"IEND", b"")


def with_declared_size(data, fmt, width, height):
    """Return a real JPEG or WebP file with only the size fields of its header rewritten."""
    if fmt == "jpeg":
        sof = data.index(b"\xff\xc0")
        return data[: sof + 5] + struct.pack(">HH", height, width) + data[sof + 9 :]
    assert data[12:16] == b"VP8X"
    return data[:24] + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little") + data[30:]


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_animated_image_uses_its_first_frame(fmt):
    first, second = draw("1"), draw("7")
    animated = encode(first, fmt, save_all=True, append_images=[second], lossless=True)
    assert Image.open(io.BytesIO(animated)).n_frames == 2
    assert np.array_equal(decode_image(animated), decode_image(encode(first, fmt, lossless=True)))


@pytest.mark.parametrize(
    ("fmt", "data"),
    [
        ("png", encode(draw())),
        ("jpeg", encode(draw().convert("RGB"), "JPEG")),
        ("webp", encode(draw(), "WEBP")),
    ],
)
def test_image_format_reads_the_signature(fmt, data):
    assert image_format(data) == fmt


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_image_header_gives_format_and_declared_size(fmt):
    data = encode(draw("1", (500, 320)).convert("RGB"), fmt)
    assert image_header(data) == (fmt.lower(), 500, 320)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, this is not an image",
        bytes(range(256)) * 4,
        encode(draw(), "GIF"),
        encode(draw(), "BMP"),
        encode(draw(), "TIFF"),
        b'<svg xmlns="http://www.w3.org/2000/svg" width="280" height="280"><path d="M10 10L90 90"/></svg>',
        imagefile.PNG_SIGNATURE + b"\0" * 40,
        b"RIFF\0\0\0\0WEBPVP8 ",
        b"\xff\xd8\xff\xe0\0\x10JFIF\0",
    ],
    ids=[
        "empty",
        "text",
        "noise",
        "gif",
        "bmp",
        "tiff",
        "svg",
        "png-signature-only",
        "webp-header-only",
        "jpeg-header-only",
    ],
)
def test_what_is_not_a_png_jpeg_or_webp_is_invalid(data):
    with pytest.raises(InvalidImage) as caught:
        decode_image(data)
    assert caught.value.code == "invalid_image"
    assert str(caught.value).endswith(".")


def damage_png(how):
    """Return a real PNG broken in one way."""
    data = encode(draw())
    idat = data.index(b"IDAT")
    (length,) = struct.unpack(">I", data[idat - 4 : idat])
    crc = idat + 4 + length
    if how == "half":
        return data[: len(data) // 2]
    if how == "no-end":
        return data[:-20]
    if how == "bad-idat-crc":
        return data[:crc] + bytes([data[crc] ^ 0xFF]) + data[crc + 1 :]
    if how == "bad-ihdr-crc":
        return data[:29] + bytes([data[29] ^ 0xFF]) + data[30:]
    garbled = bytes(byte ^ 0x5A for byte in data[idat + 20 : idat + 60])
    return data[: idat + 20] + garbled + data[idat + 60 :]


@pytest.mark.parametrize("how", ["half", "no-end", "bad-idat-crc", "bad-ihdr-crc", "garbled-pixels"])
def test_damaged_png_is_invalid(how):
    with pytest.raises(InvalidImage, match="damaged"):
        decode_image(damage_png(how))


CANVAS_PNGS = {
    "rgba-transparent": lambda: encode(draw("0")),
    "rgba-coloured": lambda: encode(draw("1", (500, 320), background=(250, 240, 200, 255), ink=(200, 0, 90, 255))),
    "rgb-white": lambda: encode(draw("7", (280, 280), background=WHITE).convert("RGB")),
    "rgba-written-by-opencv": lambda: cv2.imencode(".png", cv2.cvtColor(np.asarray(draw()), cv2.COLOR_RGBA2BGRA))[
        1
    ].tobytes(),
    "rgba-best-compression": lambda: encode(draw("0", (1000, 1000)), compress_level=9),
}


@pytest.mark.parametrize("name", CANVAS_PNGS)
def test_canvas_pngs_decode_to_the_same_pixels_with_either_decoder(name):
    data = CANVAS_PNGS[name]()
    fast = imagefile._decode_canvas_png(data)
    assert fast is not None, "a plain 8-bit truecolour PNG should take the libspng path"
    assert np.array_equal(fast, imagefile._decode_with_opencv(data, "png"))


@pytest.mark.parametrize(
    "data",
    [
        encode(draw(background=WHITE).convert("RGB"), transparency=(255, 255, 255)),
        damage_png("bad-idat-crc"),
        damage_png("no-end"),
        encode(draw(background=WHITE).convert("L")),
        png16(draw(), 4),
    ],
    ids=["rgb-with-transparent-colour", "bad-crc", "no-end", "grey", "16-bit"],
)
def test_other_pngs_are_left_to_opencv(data):
    assert imagefile._decode_canvas_png(data) is None


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_truncated_jpeg_or_webp_is_invalid(fmt):
    data = encode(draw(background=WHITE).convert("RGB"), fmt, quality=90)
    with pytest.raises(InvalidImage):
        decode_image(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("width", "height", "message"),
    [
        (50_000, 50_000, "longer than 2048 pixels"),
        (100_000, 100_000, "longer than 2048 pixels"),
        (4096, 4096, "longer than 2048 pixels"),
        (2049, 16, "longer than 2048 pixels"),
        (1281, 1280, "limit is 1,638,400 pixels"),
        (2048, 801, "limit is 1,638,400 pixels"),
    ],
)
def test_huge_declared_png_is_rejected_from_its_header_without_decoding(width, height, message, monkeypatch):
    data = declared_png(width, height)
    assert len(data) < 1000
    refuse_decoding(monkeypatch)
    memory_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageTooLarge, match=message) as caught:
        decode_image(data)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - memory_before < 10_000  # kB
    assert caught.value.code == "image_too_large"


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_huge_declared_jpeg_or_webp_is_rejected(fmt):
    image = draw(background=WHITE).convert("RGB")
    # Pillow writes an extended (VP8X) WebP header when the file carries EXIF.
    data = encode(image, "JPEG") if fmt == "jpeg" else encode(image, "WEBP", exif=Image.Exif().tobytes())
    with pytest.raises(ImageTooLarge):
        decode_image(with_declared_size(data, fmt, 60_000, 60_000))


@pytest.mark.parametrize(("width", "height"), [(0, 100), (100, 0), (5, 5), (400, 7)])
def test_image_too_small_to_hold_a_drawing_is_invalid(width, height):
    data = declared_png(width, height) if 0 in (width, height) else encode(Image.new("L", (width, height)))
    with pytest.raises(InvalidImage):
        decode_image(data)


def test_errors_are_value_errors_with_codes():
    assert issubclass(PreprocessingError, ValueError)
    assert {InvalidImage.code, ImageTooLarge.code} == {"invalid_image", "image_too_large"}
    for error in (InvalidImage, ImageTooLarge):
        assert issubclass(error, PreprocessingError)


def test_max_pixels_is_a_parameter():
    data = encode(draw(size=(300, 300)))
    with pytest.raises(ImageTooLarge, match="300x300"):
        decode_image(data, max_pixels=200 * 200)
    assert decode_image(data, max_pixels=300 * 300).shape == (300, 300, 4)


@pytest.mark.parametrize(("media_type", "fmt"), [("image/png", "PNG"), ("image/jpeg", "JPEG"), ("image/webp", "WEBP")])
def test_data_url_gives_the_image_bytes(media_type, fmt):
    data = encode(draw().convert("RGB"), fmt)
    assert decode_payload(f"data:{media_type};base64,{base64.b64encode(data).decode()}") == data


def test_bare_base64_with_whitespace_and_no_padding_is_accepted():
    data = encode(draw())[:-1]  # an odd length, so the base64 text needs padding
    text = base64.b64encode(data).decode().rstrip("=")
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    assert decode_payload(f"  {wrapped}\r\n") == data
    assert decode_payload(f"DATA:Image/PNG;base64,{wrapped}") == data


def test_format_comes_from_the_bytes_not_the_data_url():
    data = encode(draw())
    payload = decode_payload("data:image/jpeg;base64," + base64.b64encode(data).decode())
    assert image_format(payload) == "png"
    assert decode_image(payload).max() == 255


@pytest.mark.parametrize("media_type", ["image/svg+xml", "text/plain", "image/gif", ""])
def test_data_url_of_another_type_is_invalid(media_type):
    with pytest.raises(InvalidImage, match="image/png, image/jpeg, image/webp"):
        decode_payload(f"data:{media_type};base64,aGVsbG8=")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("data:image/png;base64,iVBOR*w0K", r"character '\*'"),
        ("iVBORw0KGgo%3D", "character '%'"),
        ("data:image/png;base64,", "empty"),
        ("   ", "empty"),
        ("data:image/png,iVBORw0KGgo=", "base64-encoded"),
        ("data:image/png;base64", "comma"),
        ("iVBORw0KG", "not valid base64"),
        ("iVBO=Rw0K", "not valid base64"),
    ],
)
def test_broken_payload_is_invalid(text, message):
    with pytest.raises(InvalidImage, match=message):
        decode_payload(text)


@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_encode_png_round_trips(dtype):
    pixels = np.random.default_rng(0).integers(0, 256, (28, 28)).astype(dtype)
    data = encode_png(pixels)
    assert image_format(data) == "png"
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.shape == (28, 28) and decoded.dtype == np.uint8
    assert np.array_equal(decoded, pixels)
