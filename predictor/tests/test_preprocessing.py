import io

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

from predictor import imagefile, preprocessing
from predictor.imagefile import ImageTooLarge
from predictor.preprocessing import (
    DIGIT_SIZE,
    IMAGE_SIZE,
    EmptyDrawing,
    PreprocessingError,
    preprocess,
    preprocess_steps,
)
from predictor.tests.drawings import BLACK, TRANSPARENT, WHITE, draw, encode, png16


def centre_of_mass(pixels):
    moments = cv2.moments(pixels)
    return moments["m01"] / moments["m00"], moments["m10"] / moments["m00"]


def ink_box(pixels):
    """Return (height, width) of the non-zero part of an image."""
    rows, columns = np.nonzero(pixels)
    return rows.max() - rows.min() + 1, columns.max() - columns.min() + 1


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
    ids=[
        "black-on-transparent",
        "red-on-transparent",
        "white-on-transparent",
        "black-on-white",
        "white-on-black",
        "blue-on-yellow",
        "green-on-grey",
        "black-on-transparent-white",
    ],
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


def test_rgb_png_with_a_transparent_colour_reads_it_as_transparent(reference):
    data = encode(draw(background=WHITE).convert("RGB"), transparency=(255, 255, 255))
    assert_close(preprocess(data), reference, mean=2.0)


def test_max_pixels_is_a_parameter():
    data = encode(draw(size=(300, 300)))
    with pytest.raises(ImageTooLarge, match="300x300"):
        preprocess(data, max_pixels=200 * 200)
    assert preprocess(data, max_pixels=300 * 300).max() == 255


def test_errors_are_value_errors_with_codes():
    assert preprocessing.PreprocessingError is imagefile.PreprocessingError
    assert issubclass(PreprocessingError, ValueError)
    assert issubclass(EmptyDrawing, PreprocessingError) and EmptyDrawing.code == "empty_drawing"
    with pytest.raises(PreprocessingError) as caught:
        preprocess(b"not an image")  # the file's refusals are preprocessing errors too
    assert caught.value.code == "invalid_image"


def test_preprocess_steps_keeps_the_decoded_layout_and_shows_it_as_rgba():
    grey = draw("7", (300, 200), background=WHITE).convert("L")
    steps = preprocess_steps(encode(grey))
    assert steps.decoded.shape == (200, 300)
    assert steps.raw.shape == (200, 300, 4)
    assert np.array_equal(steps.raw[..., 0], np.asarray(grey)) and (steps.raw[..., 3] == 255).all()
