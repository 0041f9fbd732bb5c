import base64
import io
import resource
import struct
import time
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

from predictor import preprocessing
from predictor.preprocessing import (
    DIGIT_SIZE,
    IMAGE_SIZE,
    EmptyDrawing,
    ImageTooLarge,
    InvalidImage,
    PreprocessingError,
    decode_payload,
    encode_png,
    image_format,
    image_header,
    preprocess,
    preprocess_steps,
)

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
        points = [
            (2 * width * (left + x * (right - left)), 2 * height * (top + y * (bottom - top))) for x, y in stroke
        ]
        pencil.line(points, fill=ink, width=2 * pen, joint="curve")
        for x, y in points:
            pencil.ellipse((x - pen, y - pen, x + pen, y + pen), fill=ink)
    return big.resize(size, Image.Resampling.BOX)


def encode(image, fmt="PNG", **options):
    """Return the bytes of a PIL image saved as fmt."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def centre_of_mass(pixels):
    moments = cv2.moments(pixels)
    return moments["m01"] / moments["m00"], moments["m10"] / moments["m00"]


def ink_box(pixels):
    """Return (height, width) of the non-zero part of an image."""
    rows, columns = np.nonzero(pixels)
    return rows.max() - rows.min() + 1, columns.max() - columns.min() + 1


def png_chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def declared_png(width, height):
    """Return a tiny 8-bit grey PNG whose header (with a correct CRC) claims width x height."""
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    data = png_chunk(b"IDAT", zlib.compress(b"\0" * 64 * 1024, 9))
    return preprocessing.PNG_SIGNATURE + header + data + png_chunk(b"IEND", b"")


def with_declared_size(data, fmt, width, height):
    """Return a real JPEG or WebP file with only the size fields of its header rewritten."""
    if fmt == "jpeg":
        sof = data.index(b"\xff\xc0")
        return data[: sof + 5] + struct.pack(">HH", height, width) + data[sof + 9 :]
    assert data[12:16] == b"VP8X"
    return data[:24] + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little") + data[30:]


@pytest.fixture(scope="module")
def reference():
    """The 28x28 input for a black "7" on white: every other way of drawing it should come close."""
    return preprocess(encode(draw(background=WHITE)))


def assert_close(pixels, reference, mean):
    assert pixels.shape == (IMAGE_SIZE, IMAGE_SIZE)
    assert np.abs(pixels - reference).mean() < mean


def test_output_is_float32_28x28_whole_numbers_in_mnist_polarity():
    pixels = preprocess(encode(draw()))
    assert pixels.dtype == np.float32
    assert pixels.shape == (IMAGE_SIZE, IMAGE_SIZE)
    assert pixels.min() == 0 and pixels.max() == 255
    assert np.array_equal(pixels, np.round(pixels))
    assert pixels[0].sum() == pixels[-1].sum() == pixels[:, 0].sum() == pixels[:, -1].sum() == 0


@pytest.mark.parametrize(
    ("background", "ink"),
    [
        (TRANSPARENT, BLACK),
        (TRANSPARENT, (255, 0, 0, 255)),
        (TRANSPARENT, WHITE),
        (WHITE, BLACK),
        (BLACK, WHITE),
        ((255, 255, 0, 255), (0, 0, 255, 255)),
        ((240, 240, 240, 255), (20, 90, 30, 255)),
        ((255, 255, 255, 0), (0, 0, 0, 255)),
    ],
    ids=["black-on-transparent", "red-on-transparent", "white-on-transparent", "black-on-white",
         "white-on-black", "blue-on-yellow", "green-on-grey", "black-on-transparent-white"],
)
def test_any_stroke_colour_on_any_background_gives_the_same_input(reference, background, ink):
    assert_close(preprocess(encode(draw(background=background, ink=ink))), reference, mean=0.5)


def test_opaque_background_is_read_by_colour_even_where_alpha_is_used(reference):
    pixels = np.array(draw(background=WHITE))
    pixels[100:200, :, 3] = 128  # a half-transparent band across the digit and the background
    assert_close(preprocess(encode(Image.fromarray(pixels))), reference, mean=0.5)


def test_black_on_white_and_red_on_transparent_are_nearly_identical():
    on_white = preprocess(encode(draw("1", background=WHITE, ink=BLACK)))
    on_transparent = preprocess(encode(draw("1", background=TRANSPARENT, ink=(220, 0, 0, 255))))
    assert np.abs(on_white - on_transparent).max() <= 2


@pytest.mark.parametrize("size", [(100, 100), (280, 280), (1000, 1000), (600, 300), (300, 600), (333, 517)])
@pytest.mark.parametrize("digit", ["1", "7"])
def test_any_canvas_size_gives_a_centred_20px_digit(size, digit):
    steps = preprocess_steps(encode(draw(digit, size)))
    assert max(steps.resized.shape) == DIGIT_SIZE
    assert max(ink_box(steps.centred)) >= DIGIT_SIZE - 1
    assert np.allclose(centre_of_mass(steps.centred), (14, 14), atol=1)


@pytest.mark.parametrize("box", [(0.02, 0.03, 0.2, 0.25), (0.75, 0.7, 0.97, 0.98), (0.7, 0.05, 0.9, 0.4)])
def test_small_off_centre_digit_is_scaled_and_centred(box):
    steps = preprocess_steps(encode(draw("7", (500, 400), background=WHITE, box=box, pen=6)))
    height, width = steps.resized.shape
    assert max(height, width) == DIGIT_SIZE
    assert np.allclose(centre_of_mass(steps.centred), (14, 14), atol=1)


def test_thin_digit_keeps_its_aspect_ratio():
    steps = preprocess_steps(encode(draw("1", box=(0.45, 0.1, 0.5, 0.9), pen=12)))
    height, width = steps.resized.shape
    assert height == DIGIT_SIZE and 1 <= width < 8


def test_preprocess_steps_shows_each_stage():
    image = draw("7", (300, 200), background=WHITE)
    steps = preprocess_steps(encode(image))
    assert steps.raw.shape == (200, 300, 4) and steps.raw.dtype == np.uint8
    assert np.array_equal(steps.raw, np.asarray(image))
    assert steps.ink.shape == (200, 300) and steps.ink.dtype == np.uint8
    assert steps.cropped.dtype == np.uint8 and steps.cropped.shape == ink_box(steps.ink)
    assert steps.resized.dtype == np.uint8 and max(steps.resized.shape) == DIGIT_SIZE
    assert np.array_equal(steps.centred, preprocess(encode(image)))
    with pytest.raises(AttributeError):
        steps.centred = None


@pytest.mark.parametrize(
    "image",
    [
        Image.new("RGBA", (280, 280), TRANSPARENT),
        Image.new("RGBA", (280, 280), WHITE),
        Image.new("RGB", (300, 200), (0, 0, 0)),
        Image.new("L", (64, 64), 200),
    ],
    ids=["transparent", "white", "black", "grey"],
)
def test_blank_canvas_is_an_empty_drawing(image):
    with pytest.raises(EmptyDrawing, match="Draw a digit"):
        preprocess(encode(image))


def test_faint_jpeg_noise_is_an_empty_drawing():
    noise = np.random.default_rng(0).integers(-25, 26, (280, 280, 3))
    image = Image.fromarray((230 + noise).astype(np.uint8))
    with pytest.raises(EmptyDrawing):
        preprocess(encode(image, "JPEG", quality=60))


@pytest.mark.parametrize("background", [TRANSPARENT, WHITE])
@pytest.mark.parametrize("size", [280, 1000])
def test_single_dot_is_an_empty_drawing(background, size):
    image = Image.new("RGBA", (size, size), background)
    pen = size / 14
    ImageDraw.Draw(image).ellipse((0.6 * size, 0.3 * size, 0.6 * size + pen, 0.3 * size + pen), fill=BLACK)
    with pytest.raises(EmptyDrawing, match="dot"):
        preprocess(encode(image))


def test_short_stroke_is_not_a_dot():
    image = Image.new("RGBA", (280, 280), WHITE)
    ImageDraw.Draw(image).line([(140, 120), (140, 160)], fill=BLACK, width=20)
    assert preprocess(encode(image)).max() == 255


def test_jpeg_drawing_works(reference):
    image = draw(background=WHITE).convert("RGB")
    assert_close(preprocess(encode(image, "JPEG", quality=75)), reference, mean=1.0)


def test_jpeg_exif_orientation_is_applied(reference):
    upright = draw(background=WHITE).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned left; viewers turn it right to show it
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    assert_close(preprocess(encode(stored, "JPEG", quality=95, exif=exif.tobytes())), reference, mean=1.0)


def png16(image, channels):
    """Return a 16-bit PNG of a PIL image (grey or BGRA order for OpenCV)."""
    if channels == 1:
        pixels = np.asarray(image.convert("L"))
    else:
        pixels = cv2.cvtColor(np.asarray(image.convert("RGBA")), cv2.COLOR_RGBA2BGRA)
    return cv2.imencode(".png", pixels.astype(np.uint16) * 257)[1].tobytes()


def palette_with_transparency():
    data = encode(draw().quantize(4))
    assert "transparency" in Image.open(io.BytesIO(data)).info
    return data


PIXEL_FORMATS = {
    "rgb-png": lambda: encode(draw(background=WHITE).convert("RGB")),
    "grey-png": lambda: encode(draw(background=WHITE).convert("L")),
    "1-bit-png": lambda: encode(draw(background=WHITE).convert("L").point(lambda v: 255 * (v > 127), "1")),
    "grey-alpha-png": lambda: encode(draw().convert("LA")),
    "palette-png": lambda: encode(draw(background=WHITE).convert("RGB").quantize(8)),
    "palette-transparent-png": palette_with_transparency,
    "16-bit-grey-png": lambda: png16(draw(background=WHITE), 1),
    "16-bit-rgba-png": lambda: png16(draw(), 4),
    "grey-jpeg": lambda: encode(draw(background=WHITE).convert("L"), "JPEG", quality=90),
    "cmyk-jpeg": lambda: encode(draw(background=WHITE).convert("RGB").convert("CMYK"), "JPEG", quality=90),
    "webp-lossy-alpha": lambda: encode(draw(ink=(0, 0, 200, 255)), "WEBP", quality=90),
    "webp-lossy": lambda: encode(draw(background=WHITE).convert("RGB"), "WEBP", quality=90),
    "webp-lossless-alpha": lambda: encode(draw(), "WEBP", lossless=True),
}


@pytest.mark.parametrize("name", PIXEL_FORMATS)
def test_every_pixel_format_gives_the_same_input(reference, name):
    assert_close(preprocess(PIXEL_FORMATS[name]()), reference, mean=2.0)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_animated_image_uses_its_first_frame(fmt):
    first, second = draw("1"), draw("7")
    animated = encode(first, fmt, save_all=True, append_images=[second], lossless=True)
    assert Image.open(io.BytesIO(animated)).n_frames == 2
    assert np.array_equal(preprocess(animated), preprocess(encode(first, fmt, lossless=True)))


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
        preprocessing.PNG_SIGNATURE + b"\0" * 40,
        b"RIFF\0\0\0\0WEBPVP8 ",
        b"\xff\xd8\xff\xe0\0\x10JFIF\0",
    ],
    ids=[
        "empty", "text", "noise", "gif", "bmp", "tiff", "svg",
        "png-signature-only", "webp-header-only", "jpeg-header-only",
    ],
)
def test_what_is_not_a_png_jpeg_or_webp_is_invalid(data):
    with pytest.raises(InvalidImage) as caught:
        preprocess(data)
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
        preprocess(damage_png(how))


CANVAS_PNGS = {
    "rgba-transparent": lambda: encode(draw("0")),
    "rgba-coloured": lambda: encode(draw("1", (500, 320), background=(250, 240, 200, 255), ink=(200, 0, 90, 255))),
    "rgb-white": lambda: encode(draw("7", (280, 280), background=WHITE).convert("RGB")),
    "rgba-written-by-opencv": lambda: cv2.imencode(".png", cv2.cvtColor(np.asarray(draw()), cv2.COLOR_RGBA2BGRA))[1].tobytes(),
    "rgba-best-compression": lambda: encode(draw("0", (1000, 1000)), compress_level=9),
}


@pytest.mark.parametrize("name", CANVAS_PNGS)
def test_canvas_pngs_decode_to_the_same_pixels_with_either_decoder(name):
    data = CANVAS_PNGS[name]()
    fast = preprocessing._decode_canvas_png(data)
    assert fast is not None, "a plain 8-bit truecolour PNG should take the libspng path"
    assert np.array_equal(fast, preprocessing._decode_with_opencv(data, "png"))


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
    assert preprocessing._decode_canvas_png(data) is None


def test_rgb_png_with_a_transparent_colour_reads_it_as_transparent(reference):
    data = encode(draw(background=WHITE).convert("RGB"), transparency=(255, 255, 255))
    assert_close(preprocess(data), reference, mean=2.0)


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_truncated_jpeg_or_webp_is_invalid(fmt):
    data = encode(draw(background=WHITE).convert("RGB"), fmt, quality=90)
    with pytest.raises(InvalidImage):
        preprocess(data[: len(data) // 2])


@pytest.mark.parametrize(("width", "height"), [(50_000, 50_000), (100_000, 100_000), (4097, 4096)])
def test_huge_declared_png_is_rejected_fast_without_decoding(width, height):
    data = declared_png(width, height)
    assert len(data) < 1000
    memory_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(ImageTooLarge, match="limit is 16,777,216 pixels") as caught:
        preprocess(data)
    assert time.perf_counter() - started < 0.1
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - memory_before < 10_000  # kB
    assert caught.value.code == "image_too_large"


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_huge_declared_jpeg_or_webp_is_rejected(fmt):
    image = draw(background=WHITE).convert("RGB")
    # Pillow writes an extended (VP8X) WebP header when the file carries EXIF.
    data = encode(image, "JPEG") if fmt == "jpeg" else encode(image, "WEBP", exif=Image.Exif().tobytes())
    with pytest.raises(ImageTooLarge):
        preprocess(with_declared_size(data, fmt, 60_000, 60_000))


def test_max_pixels_is_a_parameter():
    data = encode(draw(size=(300, 300)))
    with pytest.raises(ImageTooLarge, match="300x300"):
        preprocess(data, max_pixels=200 * 200)
    assert preprocess(data, max_pixels=300 * 300).max() == 255


@pytest.mark.parametrize(("width", "height"), [(0, 100), (100, 0), (5, 5), (400, 7)])
def test_image_too_small_to_hold_a_drawing_is_invalid(width, height):
    data = declared_png(width, height) if 0 in (width, height) else encode(Image.new("L", (width, height)))
    with pytest.raises(InvalidImage):
        preprocess(data)


def test_errors_are_value_errors_with_codes():
    assert issubclass(PreprocessingError, ValueError)
    codes = {InvalidImage.code, ImageTooLarge.code, EmptyDrawing.code}
    assert codes == {"invalid_image", "image_too_large", "empty_drawing"}
    for error in (InvalidImage, ImageTooLarge, EmptyDrawing):
        assert issubclass(error, PreprocessingError)


@pytest.mark.parametrize(
    ("media_type", "fmt"), [("image/png", "PNG"), ("image/jpeg", "JPEG"), ("image/webp", "WEBP")]
)
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
    assert preprocess(payload).max() == 255


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
    pixels = preprocess(encode(draw())).astype(dtype)
    data = encode_png(pixels)
    assert image_format(data) == "png"
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.shape == (IMAGE_SIZE, IMAGE_SIZE) and decoded.dtype == np.uint8
    assert np.array_equal(decoded, pixels)
