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


def _stick_with_blot() -> np.ndarray:
    """A uint8 (28, 28) 'digit': a thin vertical stroke ending in a filled disc, like a 6 whose loop was inked in."""
    image = np.zeros((28, 28), np.uint8)
    cv2.line(image, (10, 4), (10, 22), 255, 2)
    cv2.circle(image, (15, 19), 5, 255, -1)
    return image


def test_a_blot_is_found_where_the_ink_is_far_thicker_than_the_strokes():
    image = _stick_with_blot()
    binary = image > synthetic.THRESHOLD
    radius = cv2.distanceTransform(binary.astype(np.uint8), cv2.DIST_L2, 3)
    mask = synthetic.blots(binary, radius, synthetic.skeletonize(binary))
    rows, columns = np.nonzero(mask)
    assert mask.sum() >= 20 and (mask <= binary).all()
    assert rows.min() >= 13 and columns.min() >= 10  # inside the disc, not on the stroke above it

    stroke_only = np.zeros((28, 28), bool)
    stroke_only[4:23, 9:12] = True
    radius = cv2.distanceTransform(stroke_only.astype(np.uint8), cv2.DIST_L2, 3)
    assert not synthetic.blots(stroke_only, radius, synthetic.skeletonize(stroke_only)).any()


def test_scribble_covers_each_row_of_a_mask_with_one_stroke_per_run():
    mask = np.zeros((28, 28), bool)
    mask[5:8, 3:9] = True
    mask[6, 12:15] = True
    strokes = synthetic.scribble(mask)
    assert [s.tolist() for s in strokes] == [
        [[3, 5], [8, 5]],
        [[3, 6], [8, 6]],
        [[12, 6], [14, 6]],
        [[3, 7], [8, 7]],
    ]


def test_a_blotted_digit_is_drawn_with_its_blot_filled():
    image = _stick_with_blot()
    binary = image > synthetic.THRESHOLD
    radius = cv2.distanceTransform(binary.astype(np.uint8), cv2.DIST_L2, 3)
    # Thinning alone turns the disc into the end of one line.
    (line,) = synthetic.extend_free_ends(synthetic.trace_strokes(synthetic.skeletonize(binary)), radius)
    strokes = synthetic.digit_strokes(image)
    assert len(strokes) > 5 and np.array_equal(strokes[0], line)  # the line, then rows through the disc
    for seed in range(5):
        filled = synthetic.render_digit(image, np.random.default_rng(seed))
        thinned = synthetic.render_digit(image, np.random.default_rng(seed), strokes=[line])
        assert (filled > 128).sum() > 1.2 * (thinned > 128).sum()


def test_smallest_loop_radius_measures_the_tightest_loop():
    theta = np.linspace(0, 2 * np.pi, 60)
    ring = np.stack([14 + 6 * np.cos(theta), 14 + 6 * np.sin(theta)], axis=1)
    small = np.stack([5 + 2 * np.cos(theta), 5 + 2 * np.sin(theta)], axis=1)
    assert synthetic.smallest_loop_radius([ring]) == pytest.approx(6, abs=0.6)
    assert synthetic.smallest_loop_radius([ring, small]) == pytest.approx(2, abs=0.6)
    assert synthetic.smallest_loop_radius([ring[:30]]) == np.inf  # an arc encloses nothing
    filled = synthetic.scribble(np.pad(np.ones((6, 6), bool), 11))
    assert synthetic.smallest_loop_radius(filled) == np.inf


def test_the_pen_never_closes_the_smallest_loop():
    theta = np.linspace(0, 2 * np.pi, 60)
    strokes = [np.stack([14 + 8 * np.cos(theta), 14 + 8 * np.sin(theta)], axis=1)]
    rng = np.random.default_rng(3)
    for _ in range(200):
        pen = synthetic.random_pen(strokes, rng, loop_radius=1.0)
        assert pen.width <= max(1.5, synthetic.LOOP_PEN_FACTOR * 1.0 * pen.scale) + 1e-9


def test_how_one_digit_is_drawn_does_not_change_the_next(digits):
    x, _ = digits
    first = synthetic.render_digits(x[:2], seed=9)
    other = synthetic.render_digits(np.stack([x[5], x[1]]), seed=9)
    assert not np.array_equal(first[0], other[0])
    assert np.array_equal(first[1], other[1])
