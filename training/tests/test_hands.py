"""The benchmark hands (bench/hands.py): drawings the page could send, each in its own consistent style."""

import cv2
import numpy as np
import pytest

from bench.hands import CANVAS, HANDS, continental_strokes
from predictor.preprocessing import preprocess
from training import synthetic
from training.data import load_mnist


@pytest.fixture(scope="module")
def digits():
    (x_train, y_train), _ = load_mnist()
    return x_train[50_000:50_040], y_train[50_000:50_040]


def ink(png):
    """Return the ink (0..255) of a PNG the way a person sees it: darkness on the white canvas."""
    rgba = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    return 255 - rgba[..., 0].astype(np.int32), rgba


def test_hand_names_are_their_keys_and_there_are_at_least_five():
    assert len(HANDS) >= 5
    assert all(name == hand.name and hand.description for name, hand in HANDS.items())


@pytest.mark.parametrize("name", sorted(HANDS))
def test_every_hand_draws_black_on_white_canvas_pngs_the_site_reads(name, digits):
    images, labels = digits
    pngs = HANDS[name].render(images[:10], labels[:10], seed=1)
    assert len(pngs) == 10
    for png in pngs:
        darkness, rgba = ink(png)
        assert rgba.shape == (CANVAS, CANVAS, 4)
        assert (rgba[..., 3] == 255).all()
        assert darkness.max() > 200
        assert (darkness[[0, -1]] == 0).all() and (darkness[:, [0, -1]] == 0).all()
        assert preprocess(png).max() > 0


def test_the_same_seed_gives_the_same_drawings_and_another_seed_others(digits):
    images, labels = digits
    hand = HANDS["backslant"]
    assert hand.render(images[:5], labels[:5], seed=7) == hand.render(images[:5], labels[:5], seed=7)
    assert hand.render(images[:5], labels[:5], seed=7) != hand.render(images[:5], labels[:5], seed=8)


def test_backslant_digits_all_lean_back(digits):
    images, labels = digits
    for png in HANDS["backslant"].render(images, labels, seed=1):
        moments = cv2.moments(ink(png)[0].astype(np.float32))
        # y grows downwards: the top to the left means x grows with y.
        assert moments["mu11"] / moments["mu02"] > 0.3


def test_corner_digits_are_small_and_in_the_top_left_corner(digits):
    images, labels = digits
    for png in HANDS["corner"].render(images, labels, seed=1):
        x, y, width, height = cv2.boundingRect((ink(png)[0] > 48).astype(np.uint8))
        assert x + width < 0.4 * CANVAS and y + height < 0.4 * CANVAS


def test_thin_pen_strokes_are_at_most_a_few_pixels_wide(digits):
    images, labels = digits
    for png in HANDS["thin-pen"].render(images, labels, seed=1):
        strokes = (ink(png)[0] > 128).astype(np.uint8)
        # The distance of inked pixels to the paper is half the stroke's width (more where strokes meet).
        distance = cv2.distanceTransform(strokes, cv2.DIST_L2, 3)
        assert np.percentile(distance[strokes > 0], 95) <= 2


def test_continental_hand_flags_ones_crosses_sevens_and_leaves_other_digits_alone(digits):
    images, labels = digits
    rng = np.random.default_rng(1)
    for image, label in zip(images, labels):
        strokes = synthetic.digit_strokes(image)
        drawn = continental_strokes(strokes, int(label), rng)
        assert len(drawn) == len(strokes) + (label in (1, 7))
