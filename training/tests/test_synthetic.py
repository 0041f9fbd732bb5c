import cv2
import numpy as np
import pytest

from predictor.preprocessing import preprocess
from training import synthetic
from training.data import load_mnist


@pytest.fixture(scope="module")
def digits():
    (x, y), _ = load_mnist()
    return x[:24], y[:24]


def test_renders_are_deterministic_for_a_seed(digits):
    x, _ = digits
    first = synthetic.render_digits(x, seed=5)
    assert np.array_equal(first, synthetic.render_digits(x, seed=5))
    assert not np.array_equal(first, synthetic.render_digits(x, seed=6))


def test_renders_are_28x28_in_mnist_polarity(digits):
    x, _ = digits
    out = synthetic.render_digits(x, seed=1)
    assert out.shape == (24, 28, 28) and out.dtype == np.uint8
    # Background 0 at the border, strong ink on the strokes.
    assert out[:, 0, :].max() == 0 and out[:, -1, :].max() == 0
    assert (out.reshape(24, -1).max(axis=1) >= 200).all()


def test_rendered_png_is_transparent_when_asked(digits):
    strokes = synthetic.digit_strokes(digits[0][0])
    rng = np.random.default_rng(0)
    clear = synthetic.render_png(strokes, rng, transparent=True)
    opaque = synthetic.render_png(strokes, rng, transparent=False)
    assert clear.startswith(b"\x89PNG\r\n\x1a\n") and opaque.startswith(b"\x89PNG\r\n\x1a\n")
    rgba = cv2.imdecode(np.frombuffer(clear, np.uint8), cv2.IMREAD_UNCHANGED)
    assert rgba.shape[2] == 4
    assert (rgba[..., 3] == 0).mean() > 0.5 and rgba[..., 3].max() == 255
    # Anti-aliased: partly covered pixels at the stroke edges.
    assert ((rgba[..., 3] > 0) & (rgba[..., 3] < 255)).any()
    pixels = cv2.imdecode(np.frombuffer(opaque, np.uint8), cv2.IMREAD_UNCHANGED)
    assert pixels.ndim == 3 and (pixels.shape[2] == 3 or (pixels[..., 3] == 255).all())


def test_canvas_sizes_vary_and_are_not_always_square(digits):
    strokes = synthetic.digit_strokes(digits[0][0])
    rng = np.random.default_rng(0)
    sizes = [synthetic.random_pen(strokes, rng).canvas for _ in range(50)]
    assert all(synthetic.MIN_CANVAS <= s <= synthetic.MAX_CANVAS for size in sizes for s in size)
    assert any(w != h for w, h in sizes) and any(w == h for w, h in sizes)


def test_cropped_canvas_preprocesses_exactly_like_the_full_canvas(digits):
    for i, image in enumerate(digits[0][:12]):
        strokes = synthetic.digit_strokes(image)
        full = synthetic.render_png(strokes, np.random.default_rng(i), crop=False)
        cropped = synthetic.render_png(strokes, np.random.default_rng(i), crop=True)
        assert len(cropped) < len(full)
        assert np.array_equal(preprocess(full), preprocess(cropped))


def test_skeleton_of_a_thick_bar_is_one_pixel_wide():
    bar = np.zeros((28, 28), bool)
    bar[10:16, 4:24] = True
    skeleton = synthetic.skeletonize(bar)
    assert skeleton.sum() > 10
    assert (skeleton[:, 8:20].sum(axis=0) == 1).all()
    (stroke,) = synthetic.trace_strokes(skeleton)
    assert stroke.shape[1] == 2 and np.ptp(stroke[:, 0]) > 10
