"""On-the-fly augmentation that imitates canvas drawings, as vectorised TensorFlow ops on whole batches.

Every drawing reaching the model has already been cropped, scaled to a 20 px box and centred by
the site's preprocessing, so geometry only needs small jitter; what differs most from MNIST is
stroke thickness, slant and wobble. One batch is transformed with one bilinear resampling
(rotation, shear, scale, translation and elastic displacement combined), so the pipeline costs a
small fraction of a training step on a CPU. Randomness is stateless: batch i of a run with seed s
always gets the same augmentation.
"""

import math

import numpy as np
import tensorflow as tf

from predictor.preprocessing import IMAGE_SIZE
from training.config import AugmentConfig

CENTRE = (IMAGE_SIZE - 1) / 2
COARSE_GRID = 4  # the elastic field is random on a 4x4 grid and interpolated, so it bends strokes smoothly


def augment_batch(images: tf.Tensor, seed: tf.Tensor, config: AugmentConfig) -> tf.Tensor:
    """Return float32 (B, 28, 28, 1) augmented copies of float32 pixels 0..255 for a [2]-int seed."""
    images = tf.convert_to_tensor(images, tf.float32)
    batch = tf.shape(images)[0]
    seeds = tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=9))

    def uniform(i: int, low: float, high: float) -> tf.Tensor:
        return tf.random.stateless_uniform([batch], seeds[i], low, high)

    out = images
    if config.thickness:
        out = change_thickness(out, uniform(0, config.min_thickness, config.max_thickness))

    angle = uniform(1, -1, 1) * math.radians(config.max_rotation_degrees) if config.rotation else tf.zeros([batch])
    shear = uniform(2, -config.max_shear, config.max_shear) if config.shear else tf.zeros([batch])
    zoom = tf.exp(uniform(3, -1, 1) * math.log1p(config.max_scale)) if config.scale else tf.ones([batch])
    shift = config.max_translate_pixels if config.translate else 0.0
    dy, dx = uniform(4, -shift, shift), uniform(5, -shift, shift)

    # Inverse mapping: for every output pixel, where to read in the input (about the image centre).
    cos, sin = tf.cos(angle), tf.sin(angle)
    a = (cos + shear * sin) / zoom
    b = (-sin + shear * cos) / zoom
    c = sin / zoom
    d = cos / zoom
    grid_y, grid_x = tf.meshgrid(
        tf.range(IMAGE_SIZE, dtype=tf.float32) - CENTRE, tf.range(IMAGE_SIZE, dtype=tf.float32) - CENTRE, indexing="ij"
    )

    def per_image(v: tf.Tensor) -> tf.Tensor:
        return v[:, None, None]

    src_x = per_image(a) * grid_x + per_image(b) * grid_y + CENTRE - per_image(dx)
    src_y = per_image(c) * grid_x + per_image(d) * grid_y + CENTRE - per_image(dy)
    if config.elastic:
        field = tf.random.stateless_normal([batch, COARSE_GRID, COARSE_GRID, 2], seeds[6]) * config.elastic_alpha_pixels
        field = tf.image.resize(field, [IMAGE_SIZE, IMAGE_SIZE], method="bicubic")
        src_x += field[..., 0]
        src_y += field[..., 1]
    out = bilinear_sample(out, src_y, src_x)

    keep = tf.random.stateless_uniform([batch], seeds[7]) >= config.probability
    out = tf.where(keep[:, None, None, None], images, out)
    return tf.clip_by_value(out, 0.0, 255.0)


def change_thickness(images: tf.Tensor, amount: tf.Tensor) -> tf.Tensor:
    """Return images with strokes thinned (amount -1..0) or thickened (0..2, in 3x3 dilations) per image."""
    dilated1 = tf.nn.max_pool2d(images, 3, 1, "SAME")
    dilated2 = tf.nn.max_pool2d(dilated1, 3, 1, "SAME")
    # Erode with a plus-shaped neighbourhood: a 3x3 square would wipe out MNIST's thinnest strokes.
    padded = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]])
    eroded = tf.reduce_min(
        tf.stack([images, padded[:, :-2, 1:-1], padded[:, 2:, 1:-1], padded[:, 1:-1, :-2], padded[:, 1:-1, 2:]]), axis=0
    )
    t = amount[:, None, None, None]
    thinner = images + (-t) * (eroded - images)
    thicker = images + t * (dilated1 - images)
    thickest = dilated1 + (t - 1) * (dilated2 - dilated1)
    return tf.where(t < 0, thinner, tf.where(t <= 1, thicker, thickest))


def bilinear_sample(images: tf.Tensor, y: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
    """Return images (B, H, W, 1) read at float coordinates y, x (B, H, W); outside the image is 0."""
    batch = tf.shape(images)[0]
    # One pixel of zero padding makes every out-of-range read land on background.
    padded = tf.pad(images[..., 0], [[0, 0], [1, 1], [1, 1]])
    flat = tf.reshape(padded, [-1])
    width = IMAGE_SIZE + 2
    y = tf.clip_by_value(y + 1, 0, IMAGE_SIZE + 1 - 1e-3)
    x = tf.clip_by_value(x + 1, 0, IMAGE_SIZE + 1 - 1e-3)
    y0, x0 = tf.floor(y), tf.floor(x)
    wy, wx = y - y0, x - x0
    y0, x0 = tf.cast(y0, tf.int32), tf.cast(x0, tf.int32)
    y1, x1 = tf.minimum(y0 + 1, IMAGE_SIZE + 1), tf.minimum(x0 + 1, IMAGE_SIZE + 1)
    base = tf.range(batch)[:, None, None] * width * width

    def read(yy: tf.Tensor, xx: tf.Tensor) -> tf.Tensor:
        return tf.gather(flat, base + yy * width + xx)

    top = read(y0, x0) * (1 - wx) + read(y0, x1) * wx
    bottom = read(y1, x0) * (1 - wx) + read(y1, x1) * wx
    return (top * (1 - wy) + bottom * wy)[..., None]


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int,
    seed: int,
    augment: AugmentConfig | None = None,
) -> tf.data.Dataset:
    """Return an endless, shuffled tf.data pipeline of (float32 (B, 28, 28, 1), labels) batches."""
    images = np.asarray(x, dtype=np.uint8)[..., None]
    # Integer labels, or (N, 10) probability targets (a fine-tune's replay distilled from its parent).
    targets = np.asarray(y, dtype=np.float32) if np.ndim(y) == 2 else np.asarray(y, dtype=np.int32)
    dataset = tf.data.Dataset.from_tensor_slices((images, targets))
    dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=len(images) >= batch_size).repeat()

    def prepare(index: tf.Tensor, batch: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        pixels, labels = batch
        pixels = tf.cast(pixels, tf.float32)
        if augment is not None:
            pixels = augment_batch(pixels, tf.stack([tf.constant(seed, tf.int64), index]), augment)
        return pixels, labels

    return dataset.enumerate().map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
