"""Digits typeset in fonts and drawn on canvases: a check of the model that owes nothing to training.synthetic.

The canvas-style validation set is made by the same generator as the canvas-style training drawings,
so a model could learn that generator's habits and look better on it than on drawings made any other
way. These drawings come from type instead: each digit 0-9 in 21 of the fonts matplotlib ships (so the
set is the same wherever the same matplotlib and Pillow are installed), at a random size, weight, tilt,
position, colour and canvas, on a transparent or opaque background, encoded as PNG and passed
through the site's preprocessing. Printed digits are not handwriting (a typeset 1 has a flag and a
foot, a 4 is closed, a 7 has no bar), so this complements the canvas-style figure; it does not
replace it. MNIST is not used at all.
"""

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from predictor.inference import NUM_CLASSES
from predictor.preprocessing import preprocess

# matplotlib's own fonts whose digits are ordinary lining figures (its symbol and old-style fonts are left out).
FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
    "cmr10.ttf",
    "cmb10.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
    "cmti10.ttf",
)


def font_paths() -> list[Path]:
    """Return the paths of FONT_FILES inside the installed matplotlib."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return [folder / name for name in FONT_FILES]


def typeset_png(digit: int, font_path: Path, rng: np.random.Generator) -> bytes:
    """Return PNG bytes of one digit typeset in a font on a random canvas."""
    width = int(rng.integers(200, 601))
    height = width if rng.random() < 0.5 else int(rng.integers(200, 601))
    size = int(rng.uniform(0.25, 0.7) * min(width, height))
    font = ImageFont.truetype(str(font_path), size)
    weight = int(rng.integers(0, max(1, size // 25) + 1))  # extra outline: bolder strokes
    transparent = rng.random() < 0.5
    ink = (0, 0, 0, 255) if rng.random() < 0.7 else tuple(int(v) for v in rng.integers(0, 100, 3)) + (255,)
    # The glyph is drawn on its own layer, slanted, then placed at a random spot of the canvas.
    layer = Image.new("RGBA", (2 * size, 2 * size), (0, 0, 0, 0))
    ImageDraw.Draw(layer).text(
        (size, size), str(digit), font=font, fill=ink, anchor="mm", stroke_width=weight, stroke_fill=ink
    )
    layer = layer.rotate(float(rng.uniform(-10, 10)), resample=Image.BICUBIC)
    layer = layer.crop(layer.getbbox())
    canvas = Image.new("RGBA", (width, height), (0, 0, 0, 0) if transparent else (255, 255, 255, 255))
    left = int(rng.integers(0, max(1, width - layer.width)))
    top = int(rng.integers(0, max(1, height - layer.height)))
    canvas.alpha_composite(layer, (left, top))
    out = io.BytesIO()
    (canvas if transparent else canvas.convert("RGB")).save(out, "PNG")
    return out.getvalue()


def typeset_digits(*, per_font: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return (x uint8 (N, 28, 28) model inputs, y uint8 labels): every digit `per_font` times in every font."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for font_path in font_paths():
        for digit in range(NUM_CLASSES):
            for _ in range(per_font):
                images.append(preprocess(typeset_png(digit, font_path, rng)).astype(np.uint8))
                labels.append(digit)
    return np.stack(images), np.array(labels, np.uint8)
