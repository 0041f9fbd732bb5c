"""Time the model alone: one drawing at a time through predictor.inference.Classifier, as the site serves it.

Run by hand from anywhere: python bench/bench_model.py [--model PATH] [-n 2000] [--training]
Prints the .tflite size and the median and p99 inference time per drawing (batch 1, one thread),
measured on MNIST test digits and on canvas-style drawings preprocessed as the site does.
With --training it also compares the augmentation pipeline's throughput with a training step's, to
show that augmentation does not starve training.
"""

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from predictor.inference import Classifier  # noqa: E402
from training.data import load_mnist  # noqa: E402

DEFAULT_MODEL = PROJECT_ROOT / "training" / "artifacts" / "base" / "model.tflite"
WARM_UP = 50
SIZE_BUDGET_BYTES = 1_000_000
TIME_BUDGET_MS = 0.5


def time_predictions(classifier: Classifier, images: np.ndarray, n: int) -> np.ndarray:
    """Return the wall time in milliseconds of n single-drawing predictions cycling through images."""
    for image in images[:WARM_UP]:
        classifier.predict(image)
    times = np.empty(n)
    for i in range(n):
        image = images[i % len(images)]
        start = time.perf_counter()
        classifier.predict(image)
        times[i] = time.perf_counter() - start
    return times * 1000


def training_throughput(batches: int = 30) -> None:
    """Print images/s of the augmentation pipeline alone and of training steps on ready batches."""
    import keras

    from training.augment import make_dataset
    from training.config import TrainConfig
    from training.model import build_model
    from training.train import compile_model

    config = TrainConfig()
    (x, y), _ = load_mnist()
    for name, augment in (("pipeline, no augmentation", None), ("pipeline, augmentation", config.augment)):
        batches_iter = iter(make_dataset(x[:20000], y[:20000], batch_size=config.batch_size, seed=0, augment=augment))
        next(batches_iter)
        start = time.perf_counter()
        for _ in range(batches):
            next(batches_iter)
        print(f"  {name:28s} {batches * config.batch_size / (time.perf_counter() - start):9,.0f} images/s")
    keras.utils.set_random_seed(0)
    model = build_model(widths=config.widths, dropout=config.dropout)
    compile_model(model, learning_rate=1e-3, weight_decay=config.weight_decay, label_smoothing=0.0)
    batch = x[: config.batch_size, ..., None].astype(np.float32), y[: config.batch_size]
    for _ in range(3):
        model.train_on_batch(*batch)
    start = time.perf_counter()
    for _ in range(batches // 3):
        model.train_on_batch(*batch)
    step = (time.perf_counter() - start) / (batches // 3)
    print(
        f"  {'training step (batch ' + str(config.batch_size) + ')':28s} {config.batch_size / step:9,.0f} images/s "
        f"({step * 1000:.0f} ms per step)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=Path, default=DEFAULT_MODEL, help="the .tflite file (default: the shipped base model)"
    )
    parser.add_argument("-n", type=int, default=2000, help="predictions to time per set (default 2000)")
    parser.add_argument(
        "--training", action="store_true", help="also time the augmentation pipeline and a training step"
    )
    args = parser.parse_args()

    classifier = Classifier(args.model)
    size = args.model.stat().st_size
    _, (x_test, _) = load_mnist()
    from training.synthetic import render_digits

    sets = {
        "MNIST test digits": x_test[:500].astype(np.float32),
        "canvas-style drawings": render_digits(x_test[:200], seed=0).astype(np.float32),
    }
    print(f"model {args.model.name}: {size:,} bytes ({size / 1e6:.2f} MB; budget {SIZE_BUDGET_BYTES / 1e6:.1f} MB)")
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}; batch 1, {args.n} predictions per set"
    )
    for name, images in sets.items():
        times = time_predictions(classifier, images, args.n)
        median, p99 = np.median(times), np.percentile(times, 99)
        verdict = "within" if median <= TIME_BUDGET_MS else "OVER"
        print(f"  {name:22s} median {median:.3f} ms  p99 {p99:.3f} ms  ({verdict} the {TIME_BUDGET_MS} ms budget)")
    if args.training:
        print("training input pipeline vs model (images per second):")
        training_throughput()


if __name__ == "__main__":
    main()
