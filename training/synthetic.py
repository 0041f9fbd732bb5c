"""Canvas-style drawings made from MNIST digits: skeleton -> pen strokes -> PNG -> the site's preprocessing.

A person drawing on the site's canvas makes smooth strokes of one pen width, anti-aliased with round
caps and joins, at any size and position on a canvas of any shape. MNIST digits are scanned pen
strokes that were blurred and scaled. To show the model drawings like the site's, each MNIST digit
is thinned to its one-pixel skeleton (Zhang-Suen), traced into polylines (free ends pushed back out
to where the ink ended), smoothed, jittered, redrawn with a random pen on a random canvas, encoded
as PNG and passed through `predictor.preprocessing` exactly as a submitted drawing is. Everything random comes from a numpy Generator, so a seed fixes
the output, whatever the number of worker processes.
"""

import multiprocessing
from dataclasses import dataclass

import cv2
import numpy as np

from predictor.preprocessing import IMAGE_SIZE, PreprocessingError, preprocess

THRESHOLD = 96  # MNIST ink above this is part of the stroke before thinning
MIN_SPUR = 2  # skeleton branches this short ending in a junction are thinning artefacts
CHUNK = 250  # digits per task; each chunk has its own seed, so results do not depend on workers
MIN_CANVAS, MAX_CANVAS = 200, 800
SITE_PEN_FRACTION = 1 / 14  # the drawing page's pen is 1/14 of the canvas width
MIN_CONTRAST = 140  # stroke/background colour distance, well above the site's noise level
# The 8 neighbours in clockwise order from north (Zhang-Suen's P2..P9), as (row, column) offsets.
NEIGHBOURS = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))


@dataclass(frozen=True)
class Pen:
    """How one drawing is rendered."""

    canvas: tuple[int, int]  # (width, height) in pixels
    scale: float  # canvas pixels per MNIST pixel
    offset: tuple[float, float]  # canvas position of MNIST coordinate (0, 0)
    width: float  # stroke width in canvas pixels
    colour: tuple[int, int, int]  # stroke colour (RGB)
    background: tuple[int, int, int] | None  # None = transparent canvas


def skeletonize(binary: np.ndarray) -> np.ndarray:
    """Return the one-pixel-wide Zhang-Suen skeleton (bool) of a binary image (H, W) or batch (N, H, W)."""
    image = np.asarray(binary, dtype=bool)
    batch = image[None] if image.ndim == 2 else image
    padded = np.pad(batch, ((0, 0), (1, 1), (1, 1))).astype(np.uint8)
    height, width = batch.shape[1:]
    # Thinning a whole batch at once: each pass is a handful of array operations over all images.
    while True:
        changed = False
        for step in (0, 1):
            p = [padded[:, 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width] for dy, dx in NEIGHBOURS]
            count = sum(p)
            transitions = sum((p[i] == 0) & (p[(i + 1) % 8] == 1) for i in range(8))
            if step == 0:
                outside = (p[0] * p[2] * p[4] == 0) & (p[2] * p[4] * p[6] == 0)
            else:
                outside = (p[0] * p[2] * p[6] == 0) & (p[0] * p[4] * p[6] == 0)
            centre = padded[:, 1:-1, 1:-1]
            remove = (centre == 1) & (count >= 2) & (count <= 6) & (transitions == 1) & outside
            if remove.any():
                centre[remove] = 0
                changed = True
        if not changed:
            break
    result = padded[:, 1:-1, 1:-1].astype(bool)
    return result[0] if image.ndim == 2 else result


def trace_strokes(skeleton: np.ndarray) -> list[np.ndarray]:
    """Return the skeleton (bool (H, W)) as polylines: float arrays (K, 2) of (x, y) pixel coordinates."""
    pixels = {(int(r), int(c)) for r, c in zip(*np.nonzero(skeleton))}
    graph = {p: _links(p, pixels) for p in pixels}
    nodes = [p for p in sorted(pixels) if len(graph[p]) != 2]
    seen: set[frozenset] = set()
    paths: list[list[tuple[int, int]]] = []

    def walk(start: tuple[int, int], step: tuple[int, int]) -> list[tuple[int, int]]:
        path, previous, current = [start], start, step
        seen.add(frozenset((start, step)))
        while True:
            path.append(current)
            if len(graph[current]) != 2 or current == start:
                return path
            nxt = next(n for n in graph[current] if n != previous)
            if frozenset((current, nxt)) in seen:
                return path
            seen.add(frozenset((current, nxt)))
            previous, current = current, nxt

    for node in nodes:
        if not graph[node]:
            paths.append([node, node])  # an isolated dot
        for neighbour in sorted(graph[node]):
            if frozenset((node, neighbour)) not in seen:
                paths.append(walk(node, neighbour))
    # What is left are closed loops without any end or junction (a "0" drawn in one go).
    for pixel in sorted(pixels):
        for neighbour in sorted(graph[pixel]):
            if frozenset((pixel, neighbour)) not in seen:
                paths.append(walk(pixel, neighbour))

    def is_spur(path: list[tuple[int, int]]) -> bool:
        degrees = sorted((len(graph[path[0]]), len(graph[path[-1]])))
        return len(path) <= MIN_SPUR and degrees[0] == 1 and degrees[1] >= 3

    kept = [p for p in paths if not is_spur(p)] or paths
    return [np.array([(c, r) for r, c in path], dtype=np.float64) for path in kept]


def _links(pixel: tuple[int, int], pixels: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """Return the skeleton neighbours of a pixel, skipping diagonals already joined through a side pixel."""
    r, c = pixel
    links = set()
    for dr, dc in NEIGHBOURS:
        other = (r + dr, c + dc)
        if other not in pixels:
            continue
        # A diagonal step next to an L-shaped corner would make a fake three-way junction.
        if dr and dc and ((r + dr, c) in pixels or (r, c + dc) in pixels):
            continue
        links.add(other)
    return links


def digit_strokes(image: np.ndarray, skeleton: np.ndarray | None = None) -> list[np.ndarray]:
    """Return the pen strokes (polylines in MNIST pixel coordinates) of one MNIST digit uint8 (28, 28).

    `skeleton` may be passed when already computed (skeletonize() is faster on a whole batch).
    """
    binary = np.asarray(image) > THRESHOLD
    strokes = trace_strokes(skeletonize(binary) if skeleton is None else skeleton)
    radius = cv2.distanceTransform(binary.astype(np.uint8), cv2.DIST_L2, 3)
    return extend_free_ends(strokes, radius)


def extend_free_ends(strokes: list[np.ndarray], radius: np.ndarray) -> list[np.ndarray]:
    """Return strokes whose free ends are pushed out to where the original ink ended.

    Thinning eats a stroke's end back by about its half-width, so a thick MNIST stroke redrawn
    with a thin pen would come out short (the foot of a 2, the top of a 5). `radius` is the
    distance transform of the digit's ink: the half-width of the stroke at each skeleton pixel.
    """
    ends: dict[tuple[float, float], int] = {}
    for stroke in strokes:
        for point in (stroke[0], stroke[-1]):
            ends[tuple(point)] = ends.get(tuple(point), 0) + 1
    out = []
    for stroke in strokes:
        stroke = stroke.copy()
        if len(stroke) >= 2 and not np.array_equal(stroke[0], stroke[-1]):
            for index, inward in ((0, min(3, len(stroke) - 1)), (-1, -1 - min(3, len(stroke) - 1))):
                end = stroke[index]
                if ends[tuple(end)] != 1:
                    continue  # a junction shared with another stroke
                direction = end - stroke[inward]
                length = np.hypot(*direction)
                if length:
                    reach = max(float(radius[int(end[1]), int(end[0])]) - 1.0, 0.0)
                    stroke = _with_end(stroke, index, end + direction / length * reach)
        out.append(stroke)
    return out


def _with_end(stroke: np.ndarray, index: int, point: np.ndarray) -> np.ndarray:
    """Return the polyline with `point` added before its first (index 0) or after its last point."""
    return np.vstack([point, stroke]) if index == 0 else np.vstack([stroke, point])


def jitter_strokes(strokes: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Return strokes with a random slant/stretch, a wobble and smoothed corners, as a hand would draw them."""
    angle = np.radians(rng.uniform(-8, 8))
    shear = rng.uniform(-0.15, 0.15)
    stretch = np.exp(rng.uniform(-0.15, 0.15))
    matrix = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) @ np.array(
        [[stretch, shear], [0.0, 1 / stretch]]
    )
    centre = np.concatenate(strokes).mean(axis=0)
    out = []
    for stroke in strokes:
        points = (stroke - centre) @ matrix.T + centre
        points = points + rng.normal(0, 0.2, points.shape)
        out.append(_smooth(points))
    return out


def _smooth(points: np.ndarray, passes: int = 2) -> np.ndarray:
    """Return the polyline with interior points averaged with their neighbours (ends stay put)."""
    points = points.copy()
    for _ in range(passes):
        if len(points) < 3:
            break
        points[1:-1] = 0.25 * points[:-2] + 0.5 * points[1:-1] + 0.25 * points[2:]
    return points


def random_pen(strokes: list[np.ndarray], rng: np.random.Generator, *, transparent: bool | None = None) -> Pen:
    """Return a random canvas, digit size and position, pen width and colours for these strokes."""
    width = int(rng.integers(MIN_CANVAS, MAX_CANVAS + 1))
    height = width if rng.random() < 0.5 else int(rng.integers(MIN_CANVAS, MAX_CANVAS + 1))
    points = np.concatenate(strokes)
    low, high = points.min(axis=0), points.max(axis=0)
    extent = max(float((high - low).max()), 1.0)
    digit = rng.uniform(0.2, 0.85) * min(width, height)
    scale = digit / extent
    if rng.random() < 0.5:
        pen = width * SITE_PEN_FRACTION * rng.uniform(0.6, 1.3)  # the site's own pen
    else:
        pen = digit * np.exp(rng.uniform(np.log(0.05), np.log(0.3)))
    # Very thick pens on small digits fill every hole: keep the pen at most ~1/3 of the digit.
    pen = float(np.clip(pen, 1.5, 0.35 * digit))
    size = (high - low) * scale
    margin = pen / 2 + 1
    room = np.maximum(np.array([width, height]) - size - 2 * margin, 0)
    corner = margin + rng.uniform(0, 1, 2) * room
    offset = corner - low * scale
    if transparent is None:
        transparent = rng.random() < 0.4
    colour, background = _colours(rng, transparent)
    return Pen((width, height), float(scale), (float(offset[0]), float(offset[1])), pen, colour, background)


def _colours(rng: np.random.Generator, transparent: bool) -> tuple[tuple[int, int, int], tuple[int, int, int] | None]:
    """Return (stroke, background) colours far enough apart to be seen; background None when transparent."""
    if transparent:
        colour = (0, 0, 0) if rng.random() < 0.6 else tuple(int(v) for v in rng.integers(0, 256, 3))
        return colour, None
    if rng.random() < 0.8:
        background = (255, 255, 255) if rng.random() < 0.7 else tuple(int(v) for v in rng.integers(200, 256, 3))
        dark = rng.random() < 0.7
        colour = (0, 0, 0) if dark else tuple(int(v) for v in rng.integers(0, 256 - MIN_CONTRAST, 3))
    else:
        background = (0, 0, 0) if rng.random() < 0.7 else tuple(int(v) for v in rng.integers(0, 50, 3))
        colour = (
            (255, 255, 255) if rng.random() < 0.7 else tuple(int(v) for v in rng.integers(MIN_CONTRAST + 50, 256, 3))
        )
    return colour, background


def draw(strokes: list[np.ndarray], pen: Pen) -> np.ndarray:
    """Return the drawing as uint8 RGBA (H, W, 4): anti-aliased strokes with round caps and joins."""
    width, height = pen.canvas
    coverage = np.zeros((height, width), np.uint8)
    shift = 4  # OpenCV takes fixed-point coordinates: 4 fractional bits = 1/16 pixel
    thickness = max(1, int(round(pen.width)))
    polylines = [
        np.round((stroke * pen.scale + np.array(pen.offset)) * (1 << shift)).astype(np.int32).reshape(-1, 1, 2)
        for stroke in strokes
    ]
    # OpenCV draws thick polylines as capsules per segment: round caps and round joins, as a canvas does.
    cv2.polylines(coverage, polylines, False, 255, thickness, cv2.LINE_AA, shift)
    # Compositing through a 256-entry table per channel: one lookup per pixel instead of float maths.
    alpha = np.arange(256, dtype=np.float64) / 255
    if pen.background is None:
        tables = [np.where(alpha > 0, value, 0) for value in pen.colour] + [np.arange(256)]
    else:
        tables = [np.round(alpha * c + (1 - alpha) * b) for c, b in zip(pen.colour, pen.background)]
        tables.append(np.full(256, 255))
    # Transparent pixels stay (0, 0, 0, 0), as on a cleared canvas.
    return cv2.merge([cv2.LUT(coverage, table.astype(np.uint8)) for table in tables])


def crop_to_drawing(strokes: list[np.ndarray], pen: Pen) -> Pen:
    """Return the pen moved onto the smallest whole-pixel window of its canvas that holds all the ink.

    The site's preprocessing crops to the ink anyway, and shifting by whole pixels keeps every
    anti-aliased pixel value, so a drawing rendered on the window preprocesses to exactly the same
    28x28 as on the full canvas, while encoding and decoding far fewer pixels.
    """
    points = np.concatenate(strokes) * pen.scale + np.array(pen.offset)
    margin = pen.width / 2 + 3
    width, height = pen.canvas
    left, top = (max(0, int(np.floor(v - margin))) for v in points.min(axis=0))
    right = min(width, int(np.ceil(points[:, 0].max() + margin)) + 1)
    bottom = min(height, int(np.ceil(points[:, 1].max() + margin)) + 1)
    offset = (pen.offset[0] - left, pen.offset[1] - top)
    return Pen((right - left, bottom - top), pen.scale, offset, pen.width, pen.colour, pen.background)


def encode(rgba: np.ndarray, *, opaque_as_rgb: bool = False) -> bytes:
    """Return PNG bytes of an RGBA drawing (as RGB when asked and fully opaque, like some exporters)."""
    if opaque_as_rgb and (rgba[..., 3] == 255).all():
        image = cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGR)
    else:
        image = cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA)
    # Fastest compression: the bytes are decoded again at once, and the pixels are the same at any level.
    return cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes()


def render_png(
    strokes: list[np.ndarray], rng: np.random.Generator, *, transparent: bool | None = None, crop: bool = False
) -> bytes:
    """Return PNG bytes of a random canvas drawing of strokes from digit_strokes().

    With `crop`, only the window of the canvas holding the ink is encoded (see crop_to_drawing);
    the random choices, and so the preprocessed result, are the same either way.
    """
    strokes = jitter_strokes(strokes, rng)
    pen = random_pen(strokes, rng, transparent=transparent)
    if crop:
        pen = crop_to_drawing(strokes, pen)
    return encode(draw(strokes, pen), opaque_as_rgb=rng.random() < 0.5)


def render_digit(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    strokes: list[np.ndarray] | None = None,
    crop: bool = True,
    attempts: int = 5,
) -> np.ndarray:
    """Return the site's uint8 (28, 28) model input for one MNIST digit redrawn as a canvas drawing.

    `strokes` may be passed when already traced; a digit that cannot be drawn comes back unchanged.
    """
    strokes = digit_strokes(image) if strokes is None else strokes
    if not strokes:
        return np.asarray(image, dtype=np.uint8)
    for _ in range(attempts):
        try:
            return preprocess(render_png(strokes, rng, crop=crop)).astype(np.uint8)
        except PreprocessingError:
            # A tiny digit drawn with a fat pen can look like a lone dot to the site; draw again.
            continue
    return np.asarray(image, dtype=np.uint8)


def render_digits(images: np.ndarray, *, seed: int, workers: int = 1, crop: bool = True) -> np.ndarray:
    """Return uint8 (N, 28, 28) canvas-style model inputs for MNIST digits (N, 28, 28); same seed, same output."""
    images = np.asarray(images, dtype=np.uint8)
    chunks = [images[i : i + CHUNK] for i in range(0, len(images), CHUNK)]
    seeds = np.random.SeedSequence(seed).spawn(len(chunks))
    tasks = [(chunk, chunk_seed, crop) for chunk, chunk_seed in zip(chunks, seeds)]
    if workers > 1 and len(tasks) > 1:
        # Spawned (not forked) workers: the parent usually has TensorFlow's threads running.
        with multiprocessing.get_context("spawn").Pool(min(workers, len(tasks))) as pool:
            parts = pool.map(_render_chunk, tasks)
    else:
        parts = [_render_chunk(task) for task in tasks]
    return np.concatenate(parts) if parts else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)


def _render_chunk(task: tuple[np.ndarray, np.random.SeedSequence, bool]) -> np.ndarray:
    """Return canvas-style renders of one chunk of digits with the chunk's own generator."""
    images, seed, crop = task
    cv2.setNumThreads(1)
    rng = np.random.default_rng(seed)
    skeletons = skeletonize(images > THRESHOLD)  # one batched thinning for the whole chunk
    rendered = [
        render_digit(image, rng, strokes=digit_strokes(image, sk), crop=crop) for image, sk in zip(images, skeletons)
    ]
    return np.stack(rendered) if rendered else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
