"""Augmentation ablation: train the same small model as configured, then with one part switched the other way.

A part the configuration uses is switched off ("without ..."); a part it leaves out is switched on
("with ..."), so the table answers the same question whichever way the shipped configuration went.

Every run uses train() with the same seed, so the initial weights, the batch order and the random draws
of the other augmentations are identical; only the switched part differs. Each run is judged on
the canvas-style validation drawings and on the held-out MNIST training digits, never on MNIST test.

An ablation affordable on a CPU takes a few hundred optimizer steps per run. BatchNormalization's
running statistics (momentum 0.99) need about as many steps to forget their starting values, so
after a short run they lag far behind the weights and inference-mode accuracy is erratic (anywhere
from chance to near the training accuracy). Each run therefore sets the running statistics from one
large batch of its own augmented training images before it is scored ("precise BatchNorm").
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import keras
import numpy as np

from training.augment import make_dataset
from training.config import AugmentConfig, TrainConfig
from training.evaluate import evaluate
from training.train import Data, train

# Each entry names a part and the AugmentConfig fields that switch it off; the opposite values switch it on.
SWITCHES: dict[str, dict[str, bool]] = {
    "rotation and shear": {"rotation": False, "shear": False},
    "scale and translation": {"scale": False, "translate": False},
    "stroke thickness": {"thickness": False},
    "elastic distortion": {"elastic": False},
}
SYNTHETIC = "canvas-style training drawings"
SETTLE_IMAGES = 2048  # training images whose statistics replace BatchNorm's running averages


@dataclass(frozen=True)
class AblationRow:
    """The result of one ablation run."""

    change: str  # "as configured" for the reference run, else "without <part>" or "with <part>"
    canvas_val_accuracy: float
    mnist_val_accuracy: float
    train_images: int
    seconds: float


def without_synthetic(config: TrainConfig, data: Data) -> Data:
    """Return `data` without the canvas-style renders that prepare_data(config) appended to x_train."""
    # prepare_data appends min(synthetic_size, real images) renders after the real training images.
    real = len(data.x_train) - min(config.synthetic_size, len(data.x_train) // 2)
    return replace(data, x_train=data.x_train[:real], y_train=data.y_train[:real])


def toggle(augment: AugmentConfig, name: str, off: dict[str, bool]) -> tuple[str, AugmentConfig]:
    """Return (label, augment) with the part `name` switched off if `augment` uses it, else switched on."""
    if all(getattr(augment, field) == value for field, value in off.items()):
        return f"with {name}", replace(augment, **{field: not value for field, value in off.items()})
    return f"without {name}", replace(augment, **off)


def settle_batchnorm(model: keras.Model, x: np.ndarray) -> None:
    """Set every BatchNormalization layer's running mean and variance to the statistics of the batch x (N, 28, 28, 1)."""
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    try:
        # Momentum 0 makes the running averages equal to this batch's statistics, layer after layer.
        for layer in norms:
            layer.momentum = 0.0
        model(np.asarray(x, dtype=np.float32), training=True)
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum


def training_sample(config: TrainConfig, data: Data, size: int = SETTLE_IMAGES) -> np.ndarray:
    """Return float32 (size, 28, 28, 1): the first augmented training batches a run with `config` sees."""
    dataset = make_dataset(
        data.x_train, data.y_train, batch_size=config.batch_size, seed=config.seed, augment=config.augment
    )
    batches = [pixels.numpy() for pixels, _ in dataset.take(math.ceil(size / config.batch_size))]
    return np.concatenate(batches)[:size]


def ablate(
    config: TrainConfig,
    data: Data,
    switches: dict[str, dict[str, bool]] = SWITCHES,
    *,
    log: Callable[[str], None] = print,
) -> list[AblationRow]:
    """Return one AblationRow for the run as configured, then one per part switched the other way.

    When `config.synthetic_size` is set (and `data` came from prepare_data(config)), a last run
    trains without the canvas-style training drawings.
    """
    augment = config.augment or AugmentConfig()
    runs: list[tuple[str, TrainConfig, Data]] = [("as configured", replace(config, augment=augment), data)]
    for name, off in switches.items():
        label, changed = toggle(augment, name, off)
        runs.append((label, replace(config, augment=changed), data))
    if config.synthetic_size:
        without = replace(config, augment=augment, synthetic_size=0)
        runs.append((f"without {SYNTHETIC}", without, without_synthetic(config, data)))

    rows = []
    for name, run_config, run_data in runs:
        started = time.perf_counter()
        model, _ = train(run_config, run_data, verbose=0)
        settle_batchnorm(model, training_sample(run_config, run_data))
        row = AblationRow(
            change=name,
            canvas_val_accuracy=evaluate(model, run_data.x_canvas, run_data.y_canvas)["accuracy"],
            mnist_val_accuracy=evaluate(model, run_data.x_val, run_data.y_val)["accuracy"],
            train_images=len(run_data.x_train),
            seconds=time.perf_counter() - started,
        )
        log(
            f"{name:<40} canvas val {row.canvas_val_accuracy:.4f}  MNIST val {row.mnist_val_accuracy:.4f}  "
            f"({row.train_images} images, {row.seconds:.0f} s)"
        )
        rows.append(row)
    return rows
