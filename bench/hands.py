"""Consistent drawing styles ("hands") unlike MNIST, drawn as the site's drawing page exports them.

A hand is one person's settled way of drawing digits: always slanted back, always a fat marker,
always small in the corner. `Hand.render` redraws MNIST digits in that hand: each digit's skeleton
is traced into pen strokes (`training.synthetic.digit_strokes`), given a small wobble of its own,
then the hand's traits, and drawn with round caps and joins, black on a white 280x280 canvas, and
encoded as RGBA PNG, as the page's `toDataURL()` sends it (static/js/drawing-pad.js). Everything
random comes from one numpy Generator per call, so a seed fixes the drawings.

Run by hand: python bench/hands.py [--count 1000] [--sheets DIR] prints how often the shipped model
reads each hand right (in-process: PNG -> the site's preprocessing -> the served .tflite) and can
write a contact sheet per hand. The drawings are made from MNIST *training* digits only: the
reviewed part of a benchmark from REVIEWED_DIGITS, the held-out part from HELD_OUT_DIGITS.
"""

import argparse
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from training import synthetic  # noqa: E402

CANVAS = 280  # the page exports its drawing at 280x280 whatever the screen
SITE_PEN = CANVAS / 14  # the page's pen is 1/14 of the canvas wide
MARGIN = 4  # pixels of paper kept around the ink (anti-aliasing reaches about 2 beyond the pen)
REVIEWED_DIGITS = range(40_000, 50_000)  # MNIST training digits a hand's reviewed drawings are made from
HELD_OUT_DIGITS = range(50_000, 60_000)  # and its held-out drawings (the base model's validation slice)


@dataclass(frozen=True)
class Hand:
    """One consistent drawing style; ranges are (low, high) drawn uniformly per drawing."""

    name: str
    description: str  # one sentence, for docs and reports
    size: tuple[float, float] = (0.5, 0.8)  # digit height / canvas height
    pen: tuple[float, float] | None = None  # pen width / digit height; neither this nor pen_pixels: the page's pen
    pen_pixels: tuple[float, float] | None = None  # pen width in canvas pixels, when the pen is fixed
    outline: tuple[float, float] | None = None  # bubble digits: the outline's pen / digit height
    slant: tuple[float, float] | None = None  # degrees from upright after deskewing, forward positive
    corner: bool = False  # drawn in the top left corner instead of anywhere
    continental: bool = False  # 1 with a long flag, crossed 7

    def render(self, images: np.ndarray, labels: np.ndarray, *, seed: int) -> list[bytes]:
        """Return PNG bytes of MNIST digits (uint8 N x 28 x 28, their labels) drawn in this hand."""
        rng = np.random.default_rng(seed)
        images = np.asarray(images, dtype=np.uint8)
        skeletons = synthetic.skeletonize(images > synthetic.THRESHOLD)
        pngs = []
        for image, label, skeleton in zip(images, labels, skeletons):
            strokes = synthetic.jitter_strokes(synthetic.digit_strokes(image, skeleton), rng)
            if self.continental:
                strokes = continental_strokes(strokes, int(label), rng)
            if self.slant:
                strokes = slanted(strokes, np.radians(rng.uniform(*self.slant)))
            pngs.append(synthetic.encode(self._draw(strokes, rng)))
        return pngs

    def _draw(self, strokes: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
        """Return the strokes drawn on the canvas as RGBA: black ink on white, fully opaque."""
        points = np.concatenate(strokes)
        low, high = points.min(axis=0), points.max(axis=0)
        extent = np.maximum(high - low, 1.0)
        height = rng.uniform(*self.size) * CANVAS
        # The pen is `fixed` pixels wide, or `relative` times the digit's height.
        fixed = rng.uniform(*self.pen_pixels) if self.pen_pixels else 0.0 if self.pen else SITE_PEN
        relative = rng.uniform(*self.pen) if self.pen else 0.0
        # A digit too wide or too tall for the canvas with its ink (a slanted 2, a marker 8) is made
        # smaller rather than cut off.
        room = CANVAS - 2 * MARGIN - fixed
        scale = min(height / extent[1], room / (extent[1] * (1 + relative)), room / (extent[0] + relative * extent[1]))
        size = extent * scale
        pen = fixed + relative * size[1]
        margin = pen / 2 + MARGIN
        if self.corner:
            corner = margin + rng.uniform(0, 0.04, 2) * CANVAS
        else:
            corner = margin + rng.uniform(0, 1, 2) * np.maximum(CANVAS - size - 2 * margin, 0)
        offset = corner - low * scale

        def coverage(width: float) -> np.ndarray:
            drawn = synthetic.Pen((CANVAS, CANVAS), scale, (float(offset[0]), float(offset[1])), width, (0, 0, 0), None)
            return synthetic.draw(strokes, drawn)[..., 3]

        ink = coverage(pen)
        if self.outline:
            # The outline of a stroke `pen` wide, drawn with a thinner pen: the fat stroke minus its inside.
            line = rng.uniform(*self.outline) * size[1]
            ink = np.clip(ink.astype(np.int16) - coverage(pen - 2 * line), 0, 255).astype(np.uint8)
        grey = 255 - ink
        return np.dstack([grey, grey, grey, np.full_like(grey, 255)])


def deskewed(strokes: list[np.ndarray]) -> list[np.ndarray]:
    """Return strokes sheared horizontally so the digit stands upright (second moments, as MNIST deskewing)."""
    points = np.concatenate(strokes)
    centre = points.mean(axis=0)
    x, y = (points - centre).T
    skew = float((x * y).mean() / max(float((y * y).mean()), 1e-6))
    return [np.column_stack([s[:, 0] - skew * (s[:, 1] - centre[1]), s[:, 1]]) for s in strokes]


def slanted(strokes: list[np.ndarray], angle: float) -> list[np.ndarray]:
    """Return strokes deskewed, then leaning `angle` radians from upright (positive: top to the right)."""
    upright = deskewed(strokes)
    middle = float(np.concatenate(upright)[:, 1].mean())
    # y grows downwards: a forward slant moves the top (small y) to the right.
    return [np.column_stack([s[:, 0] - np.tan(angle) * (s[:, 1] - middle), s[:, 1]]) for s in upright]


def continental_strokes(strokes: list[np.ndarray], label: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Return the strokes of a 1 with a long flag, or of a 7 with a bar across its stem; others unchanged.

    The flag is what makes a European 1 look like a 7 to whoever learnt on American digits, and the
    reason the same people cross their sevens. (With a base as well, the shipped model reads such a
    1 right: it is the 1 without a base that it takes for a 7.)
    """
    points = np.concatenate(strokes)
    top, bottom = points[points[:, 1].argmin()], points[points[:, 1].argmax()]
    height = max(float(bottom[1] - top[1]), 1.0)
    if label == 1:
        # From the top, down to the left, about half as long as the stem.
        length, angle = rng.uniform(0.4, 0.55) * height, np.radians(rng.uniform(30, 50))
        return [*strokes, _dense(np.array([top, top + length * np.array([-np.cos(angle), np.sin(angle)])]))]
    if label == 7:
        # The bar crosses the stem a little below half height, where the stem is the only ink.
        y = top[1] + rng.uniform(0.5, 0.6) * height
        near = points[np.abs(points[:, 1] - y) < 1.0]
        x = float(near[:, 0].mean()) if len(near) else float(points[:, 0].mean())
        half = rng.uniform(0.18, 0.25) * height
        tilt = rng.uniform(-0.04, 0.04) * height
        return [*strokes, _dense(np.array([(x - half, y + tilt), (x + half, y - tilt)]))]
    return strokes


def _dense(segment: np.ndarray) -> np.ndarray:
    """Return a straight segment as a polyline with a point about every MNIST pixel, like a traced stroke."""
    count = max(2, int(np.ceil(np.hypot(*(segment[1] - segment[0])))) + 1)
    return np.linspace(segment[0], segment[1], count)


HANDS: dict[str, Hand] = {
    hand.name: hand
    for hand in (
        Hand(
            "backslant",
            "Every digit leans back by 30 to 40 degrees, drawn with the page's pen.",
            slant=(-40.0, -30.0),
        ),
        Hand(
            "marker",
            "A fat marker: the stroke is 30 to 40% as wide as the digit is tall.",
            pen=(0.3, 0.4),
        ),
        Hand(
            "thin-pen",
            "A fine pen 1 to 2 pixels wide, digits filling most of the canvas.",
            size=(0.7, 0.9),
            pen_pixels=(1.0, 2.0),
        ),
        Hand(
            "continental",
            "Ones with a long flag and no base, sevens crossed, as taught in much of Europe.",
            continental=True,
        ),
        Hand(
            "bubble",
            "Bubble digits: the outline of a stroke 22 to 32% of the digit's height wide.",
            size=(0.45, 0.7),
            pen=(0.22, 0.32),
            outline=(0.035, 0.06),
        ),
        Hand(
            "corner",
            "Small digits, 15 to 25% of the canvas tall, in its top left corner, with the page's pen.",
            size=(0.15, 0.25),
            corner=True,
        ),
    )
}


# Not a hand to learn: the page's pen, upright, anywhere. What the model gets wrong here, it gets
# wrong in every hand (the floor under each hand's errors).
PLAIN = Hand("plain", "Upright digits of any size and place, drawn with the page's pen: the reference.")


def hand_seed(name: str, part: str) -> int:
    """Return a seed fixed by a hand's name and the part of its drawings ("reviewed", "held-out")."""
    return zlib.crc32(f"{name}/{part}".encode())


def contact_sheet(pngs: list[bytes], columns: int = 10, cell: int = 112) -> np.ndarray:
    """Return a grey image of drawings side by side, each shrunk to `cell` pixels, with a thin frame."""
    import cv2

    cells = [cv2.resize(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE), (cell, cell)) for png in pngs]
    cells += [np.full((cell, cell), 255, np.uint8)] * (-len(cells) % columns)
    framed = [np.pad(image, 1, constant_values=160) for image in cells]
    rows = [np.hstack(framed[i : i + columns]) for i in range(0, len(framed), columns)]
    return np.vstack(rows)


def main() -> None:
    """Print the shipped model's accuracy on each hand, per digit; write contact sheets if asked."""
    import cv2

    from predictor.inference import Classifier
    from predictor.preprocessing import preprocess
    from training.data import load_mnist

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="held-out drawings per hand (default 1000)")
    parser.add_argument("--hands", default=",".join(HANDS), help="comma-separated names (default all)")
    parser.add_argument("--model", type=Path, default=PROJECT_ROOT / "training" / "artifacts" / "base")
    parser.add_argument("--sheets", type=Path, help="write <hand>.png contact sheets (first 60 drawings) here")
    options = parser.parse_args()

    (x_train, y_train), _ = load_mnist()
    picked = np.arange(HELD_OUT_DIGITS.start, HELD_OUT_DIGITS.start + options.count)
    images, labels = x_train[picked], y_train[picked]
    classifier = Classifier(options.model / "model.tflite")
    print("| hand | drawings | base model right | worst digits |")
    print("| --- | ---: | ---: | --- |")
    for hand in [PLAIN, *(HANDS[name] for name in options.hands.split(","))]:
        name = hand.name
        pngs = hand.render(images, labels, seed=hand_seed(name, "held-out"))
        predicted = classifier.predict_batch(np.stack([preprocess(png) for png in pngs])).argmax(axis=1)
        right = predicted == labels
        per_digit = {digit: float(right[labels == digit].mean()) for digit in range(10)}
        worst = sorted(per_digit, key=per_digit.__getitem__)[:3]
        print(
            f"| {name} | {len(pngs)} | {right.mean():.1%} | "
            + ", ".join(f"{digit}: {per_digit[digit]:.0%}" for digit in worst)
            + " |"
        )
        if options.sheets:
            options.sheets.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(options.sheets / f"{name}.png"), contact_sheet(pngs[:60]))


if __name__ == "__main__":
    main()
