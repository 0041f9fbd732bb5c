"""Train the digit classifier from scratch, calibrate it, evaluate it and export it.

    python -m training.train --out training/artifacts/base --force
    python manage.py train --quick --out /some/dir

train() is the learning step alone; run() is the whole job the command performs.
"""

import argparse
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np

from training import export
from training.augment import make_dataset
from training.config import TrainConfig, override
from training.data import load_mnist, split_validation
from training.evaluate import evaluate, fit_temperature, predict_probabilities
from training.model import build_model, logits_model, with_temperature

BASE_DIR = Path(__file__).resolve().parent / "artifacts" / "base"
QUICK = {"epochs": 1, "train_limit": 600, "synthetic_size": 200, "canvas_val_size": 200, "validation_size": 500}


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


class KeepBest(keras.callbacks.Callback):
    """Remember the weights of the epoch with the best validation accuracy and restore them at the end."""

    def __init__(self) -> None:
        super().__init__()
        self.best_accuracy = -1.0
        self.best_epoch = 0
        self.best_weights: list[np.ndarray] | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        accuracy = (logs or {}).get("val_accuracy", -1.0)
        # Ties go to the later epoch: the learning rate is lower there.
        if accuracy >= self.best_accuracy:
            self.best_accuracy, self.best_epoch = accuracy, epoch + 1
            self.best_weights = self.model.get_weights()

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


def prepare_data(config: TrainConfig, log: Callable[[str], None] = print) -> Data:
    """Return the training, validation, canvas-style validation and test arrays for `config`."""
    (x_all, y_all), (x_test, y_test) = load_mnist()
    (x_train, y_train), (x_val, y_val) = split_validation(x_all, y_all, config.validation_size)
    if config.train_limit:
        x_train, y_train = x_train[: config.train_limit], y_train[: config.train_limit]
    x_canvas, y_canvas = np.zeros((0, 28, 28), np.uint8), np.zeros((0,), np.uint8)
    if config.synthetic_size or config.canvas_val_size:
        from training.synthetic import render_digits

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
        log(f"rendered {len(x_canvas)} canvas-style validation and {config.synthetic_size} training drawings "
            f"in {time.perf_counter() - start:.0f} s")
    return Data(x_train, y_train, x_val, y_val, x_canvas, y_canvas, x_test, y_test)


def compile_model(model: keras.Model, *, learning_rate: Any, weight_decay: float, label_smoothing: float) -> None:
    """Compile `model` with AdamW and (label-smoothed) cross-entropy on integer labels."""
    optimizer = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay)
    # Decay only convolution and dense kernels, not BatchNorm scales or biases.
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    if label_smoothing:
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
        one_hot = keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32"), 10)
        return keras.losses.categorical_crossentropy(one_hot, y_pred, label_smoothing=self.smoothing)

    def get_config(self) -> dict[str, Any]:
        return {"smoothing": self.smoothing, "name": self.name}


def train(config: TrainConfig, data: Data, *, verbose: int | None = None) -> tuple[keras.Model, keras.callbacks.History]:
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
    compile_model(model, learning_rate=schedule, weight_decay=config.weight_decay, label_smoothing=config.label_smoothing)
    dataset = make_dataset(data.x_train, data.y_train, batch_size=config.batch_size, seed=config.seed, augment=config.augment)
    # Model selection looks at held-out MNIST and canvas-style drawings, never at MNIST test.
    x_val = np.concatenate([data.x_val, data.x_canvas]).astype(np.float32)[..., None]
    y_val = np.concatenate([data.y_val, data.y_canvas])
    keep_best = KeepBest()
    if verbose is None:
        # A live progress bar on a terminal; one line per epoch in a log file.
        verbose = 1 if sys.stdout.isatty() else 2
    history = model.fit(
        dataset,
        epochs=config.epochs,
        steps_per_epoch=steps,
        validation_data=(x_val, y_val),
        validation_batch_size=500,
        callbacks=[keep_best],
        shuffle=False,  # the dataset shuffles itself, reproducibly
        verbose=verbose,
    )
    history.best_epoch = keep_best.best_epoch
    return model, history


def calibrate(model: keras.Model, x: np.ndarray, y: np.ndarray) -> tuple[keras.Model, float]:
    """Return (model with a fitted softmax temperature baked in, temperature), fitted on (x, y)."""
    logits = predict_probabilities(logits_model(model), x) if len(x) else np.zeros((0, 10))
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
    log(f"training on {len(data.x_train)} images, validating on {len(data.x_val)} MNIST + "
        f"{len(data.x_canvas)} canvas-style drawings")
    fit_started = time.perf_counter()
    model, history = train(config, data, verbose=verbose)
    fit_seconds = time.perf_counter() - fit_started

    # Calibrate on the first half of both validation sets; report calibration on the other half.
    half_val, half_canvas = len(data.x_val) // 2, len(data.x_canvas) // 2
    temperature = 1.0
    ece_before = evaluate(model, data.x_canvas[half_canvas:], data.y_canvas[half_canvas:])["ece"] if half_canvas else None
    if config.calibrate:
        x_cal = np.concatenate([data.x_val[:half_val], data.x_canvas[:half_canvas]])
        y_cal = np.concatenate([data.y_val[:half_val], data.y_canvas[:half_canvas]])
        model, temperature = calibrate(model, x_cal, y_cal)

    test = evaluate(model, data.x_test, data.y_test)
    val = evaluate(model, data.x_val, data.y_val)
    has_canvas = len(data.x_canvas) > 0
    canvas = evaluate(model, data.x_canvas, data.y_canvas) if has_canvas else None
    ece_canvas = evaluate(model, data.x_canvas[half_canvas:], data.y_canvas[half_canvas:])["ece"] if has_canvas else None
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
    metrics = export.save(model, metrics=metrics, config=config, out_dir=out_dir, parity_images=data.x_test[: config.parity_size])
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the training options shared by `python -m training.train` and `manage.py train`."""
    parser.add_argument("--epochs", type=int, help=f"epochs to train (default {TrainConfig.epochs})")
    parser.add_argument("--out", type=Path, default=None, help="artefact directory (default training/artifacts/base)")
    parser.add_argument("--seed", type=int, help=f"random seed (default {TrainConfig.seed})")
    parser.add_argument("--quick", action="store_true", help="smoke run: a small slice for one epoch, in seconds")
    parser.add_argument("--force", action="store_true", help="replace an existing model in --out")
    parser.add_argument("--synthetic-size", type=int, help="canvas-style training renders (0 = none)")
    parser.add_argument("--canvas-val-size", type=int, help="canvas-style validation renders (0 = none)")
    parser.add_argument("--no-augment", action="store_true", help="train without on-the-fly augmentation")


def config_from_options(options: dict[str, Any]) -> TrainConfig:
    """Return the TrainConfig described by parsed command-line options."""
    config = TrainConfig()
    if options.get("quick"):
        config = override(config, **QUICK)
    config = override(
        config,
        epochs=options.get("epochs"),
        seed=options.get("seed"),
        synthetic_size=options.get("synthetic_size"),
        canvas_val_size=options.get("canvas_val_size"),
    )
    if options.get("no_augment"):
        config = replace(config, augment=None)
    return config


def main(argv: list[str] | None = None) -> int:
    """Parse argv, run training and return a process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    options = vars(parser.parse_args(argv))
    try:
        run(config_from_options(options), options["out"] or BASE_DIR, force=options["force"])
    except (FileExistsError, export.ParityError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
