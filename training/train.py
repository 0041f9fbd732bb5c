"""Train the digit classifier from scratch, calibrate it, evaluate it and export it (`manage.py train`).

train() is the learning step alone; run() is the whole job the command performs.
"""

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from predictor.inference import NUM_CLASSES
from predictor.preprocessing import IMAGE_SIZE
from training import export
from training.augment import make_dataset
from training.config import TrainConfig
from training.data import load_mnist, split_validation
from training.evaluate import evaluate, fit_temperature, predict_probabilities
from training.files import BASE_DIR
from training.model import build_model, logits_model, with_temperature
from training.synthetic import render_digits


@dataclass
class Data:
    """The arrays a training run uses: uint8 images (N, 28, 28) and uint8 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray  # held-out MNIST training digits
    y_val: np.ndarray
    x_canvas: np.ndarray  # the same held-out digits drawn as canvas strokes and preprocessed like the site
    y_canvas: np.ndarray
    x_test: np.ndarray  # MNIST test: only for the final report
    y_test: np.ndarray


def prepare_data(config: TrainConfig, log: Callable[[str], None] = print) -> Data:
    """Return the training, validation, canvas-style validation and test arrays for `config`."""
    (x_all, y_all), (x_test, y_test) = load_mnist()
    (x_train, y_train), (x_val, y_val) = split_validation(x_all, y_all, config.validation_size)
    if config.train_limit:
        x_train, y_train = x_train[: config.train_limit], y_train[: config.train_limit]
    x_canvas, y_canvas = np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8), np.zeros((0,), np.uint8)
    if config.synthetic_size or config.canvas_val_size:
        start = time.perf_counter()
        rng = np.random.default_rng(config.seed)
        if config.canvas_val_size:
            # A fixed seed apart from the run's, so every run is validated on the same drawings.
            n = min(config.canvas_val_size, len(x_val))
            x_canvas, y_canvas = render_digits(x_val[:n], seed=10_000, workers=config.workers), y_val[:n]
        if config.synthetic_size:
            pick = rng.choice(len(x_train), size=min(config.synthetic_size, len(x_train)), replace=False)
            x_synth = render_digits(x_train[pick], seed=config.seed, workers=config.workers)
            x_train = np.concatenate([x_train, x_synth])
            y_train = np.concatenate([y_train, y_train[pick]])
        log(
            f"rendered {len(x_canvas)} canvas-style validation and {config.synthetic_size} training drawings "
            f"in {time.perf_counter() - start:.0f} s"
        )
    return Data(x_train, y_train, x_val, y_val, x_canvas, y_canvas, x_test, y_test)


def compile_model(
    model: keras.Model,
    *,
    learning_rate: Any,
    weight_decay: float,
    label_smoothing: float,
    soft_targets: bool = False,
) -> None:
    """Compile `model` with AdamW and (label-smoothed) cross-entropy on integer labels, or on (N, 10)
    probability targets with `soft_targets`."""
    optimizer = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay)
    # Decay only convolution and dense kernels, not BatchNorm scales or biases.
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    if soft_targets:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
    elif label_smoothing:
        loss = _SparseSmoothed(label_smoothing)
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])


@keras.saving.register_keras_serializable(package="training")
class _SparseSmoothed(keras.losses.Loss):
    """Cross-entropy with label smoothing for integer labels."""

    def __init__(self, smoothing: float, name: str = "sparse_smoothed_crossentropy") -> None:
        super().__init__(name=name)
        self.smoothing = smoothing

    def call(self, y_true: Any, y_pred: Any) -> Any:
        one_hot = keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32"), NUM_CLASSES)
        return keras.losses.categorical_crossentropy(one_hot, y_pred, label_smoothing=self.smoothing)

    def get_config(self) -> dict[str, Any]:
        return {"smoothing": self.smoothing, "name": self.name}


def train(
    config: TrainConfig, data: Data, *, verbose: int | None = None
) -> tuple[keras.Model, keras.callbacks.History]:
    """Return (model, history): a model trained on data.x_train, restored to its best validation epoch."""
    keras.utils.set_random_seed(config.seed)
    model = build_model(widths=config.widths, dropout=config.dropout)
    steps = max(1, len(data.x_train) // config.batch_size)
    total = steps * config.epochs
    warmup = min(int(steps * config.warmup_epochs), total // 2)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate / 20,
        decay_steps=max(1, total - warmup),
        alpha=0.01,
        warmup_target=config.learning_rate,
        warmup_steps=warmup,
    )
    compile_model(
        model, learning_rate=schedule, weight_decay=config.weight_decay, label_smoothing=config.label_smoothing
    )
    dataset = make_dataset(
        data.x_train, data.y_train, batch_size=config.batch_size, seed=config.seed, augment=config.augment
    )
    # Model selection looks at held-out MNIST and canvas-style drawings, never at MNIST test.
    x_val = np.concatenate([data.x_val, data.x_canvas]).astype(np.float32)[..., None]
    y_val = np.concatenate([data.y_val, data.y_canvas])
    # Patience as long as the run: never stop early, only come back to the best epoch at the end.
    best = keras.callbacks.EarlyStopping(
        monitor="val_accuracy", mode="max", patience=config.epochs, restore_best_weights=True
    )
    if verbose is None:
        # A live progress bar on a terminal; one line per epoch in a log file.
        verbose = 1 if sys.stdout.isatty() else 2
    history = model.fit(
        dataset,
        epochs=config.epochs,
        steps_per_epoch=steps,
        validation_data=(x_val, y_val),
        validation_batch_size=500,
        callbacks=[best],
        shuffle=False,  # the dataset shuffles itself, reproducibly
        verbose=verbose,
    )
    history.best_epoch = best.best_epoch + 1  # counted from 1, as Keras prints epochs
    return model, history


def calibrate(model: keras.Model, x: np.ndarray, y: np.ndarray) -> tuple[keras.Model, float]:
    """Return (model with a fitted softmax temperature baked in, temperature), fitted on (x, y)."""
    logits = predict_probabilities(logits_model(model), x) if len(x) else np.zeros((0, NUM_CLASSES))
    temperature = fit_temperature(logits, y) if len(x) else 1.0
    return with_temperature(model, temperature), temperature


def run(
    config: TrainConfig,
    out_dir: str | Path = BASE_DIR,
    *,
    force: bool = False,
    log: Callable[[str], None] = print,
    verbose: int | None = None,
) -> dict[str, Any]:
    """Train, calibrate, evaluate and export a model into `out_dir`; return the metrics written.

    Refuses (FileExistsError) to replace existing artefacts unless `force`.
    """
    out_dir = Path(out_dir)
    if export.is_artifact_dir(out_dir) and not force:
        raise FileExistsError(f"{out_dir} already holds a model; pass --force to replace it.")
    started = time.perf_counter()
    log(f"config: {config}")
    data = prepare_data(config, log)
    log(
        f"training on {len(data.x_train)} images, validating on {len(data.x_val)} MNIST + "
        f"{len(data.x_canvas)} canvas-style drawings"
    )
    fit_started = time.perf_counter()
    model, history = train(config, data, verbose=verbose)
    fit_seconds = time.perf_counter() - fit_started

    # Calibrate on the first half of both validation sets; report calibration on the other half.
    half_val, half_canvas = len(data.x_val) // 2, len(data.x_canvas) // 2
    temperature = 1.0
    ece_before = (
        evaluate(model, data.x_canvas[half_canvas:], data.y_canvas[half_canvas:])["ece"] if half_canvas else None
    )
    if config.calibrate:
        x_cal = np.concatenate([data.x_val[:half_val], data.x_canvas[:half_canvas]])
        y_cal = np.concatenate([data.y_val[:half_val], data.y_canvas[:half_canvas]])
        model, temperature = calibrate(model, x_cal, y_cal)

    test = evaluate(model, data.x_test, data.y_test)
    val = evaluate(model, data.x_val, data.y_val)
    has_canvas = len(data.x_canvas) > 0
    canvas = evaluate(model, data.x_canvas, data.y_canvas) if has_canvas else None
    ece_canvas = (
        evaluate(model, data.x_canvas[half_canvas:], data.y_canvas[half_canvas:])["ece"] if has_canvas else None
    )
    metrics = {
        "mnist_test_accuracy": test["accuracy"],
        "mnist_test_loss": test["loss"],
        "canvas_val_accuracy": canvas["accuracy"] if canvas else None,
        "canvas_val_size": len(data.x_canvas),
        "mnist_val_accuracy": val["accuracy"],
        "per_class_accuracy": test["per_class_accuracy"],
        "per_class_accuracy_canvas": canvas["per_class_accuracy"] if canvas else None,
        "confusion": test["confusion"],
        "confusion_canvas": canvas["confusion"] if canvas else None,
        # Measured on the half of the canvas-style set that the temperature was not fitted on.
        "ece_canvas": ece_canvas,
        "ece_canvas_uncalibrated": ece_before if has_canvas else None,
        "ece_mnist_test": test["ece"],
        "temperature": temperature,
        "best_epoch": history.best_epoch,
        "history": {k: [float(v) for v in values] for k, values in history.history.items()},
        "fit_seconds": fit_seconds,
        "train_images": len(data.x_train),
        "train_seconds": time.perf_counter() - started,
    }
    metrics = export.save(
        model, metrics=metrics, config=config, out_dir=out_dir, parity_images=data.x_test[: config.parity_size]
    )
    log(summary(metrics, out_dir))
    return metrics


def summary(metrics: dict[str, Any], out_dir: Path) -> str:
    """Return a short human-readable summary of exported metrics."""

    def share(key: str) -> str:
        return "n/a" if metrics.get(key) is None else f"{metrics[key]:.2%}"

    return (
        f"saved {out_dir}: MNIST test {share('mnist_test_accuracy')}, canvas val {share('canvas_val_accuracy')}, "
        f"ECE canvas {share('ece_canvas')}, {metrics['params']:,} params, {metrics['tflite_bytes']:,} bytes .tflite, "
        f"{metrics['train_seconds']:.0f} s"
    )
