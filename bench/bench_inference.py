"""Time the serving path per drawing: data URL -> 28x28 input (decode + preprocess), inference, total.

Run by hand from anywhere: python bench/bench_inference.py [--model PATH] [-n 500]
The drawings are canvas-like PNGs (transparent background, round anti-aliased strokes) of 280x280
and 1000x1000 pixels, sent as base64 data URLs as the page does.
"""

import argparse
import base64
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from predictor.imagefile import decode_payload  # noqa: E402
from predictor.inference import Classifier  # noqa: E402
from predictor.preprocessing import preprocess  # noqa: E402

DEFAULT_MODEL = PROJECT_ROOT / "training" / "artifacts" / "base" / "model.tflite"
CANVAS_SIZES = (280, 1000)
DISTINCT_DRAWINGS = 20
WARM_UP = 20


def make_data_urls(size: int, rng: np.random.Generator) -> list[str]:
    """Return data URLs of random scribbles that look like hand-drawn digits on a transparent canvas."""
    urls = []
    for _ in range(DISTINCT_DRAWINGS):
        canvas = np.zeros((size, size, 4), np.uint8)
        points = rng.uniform(0.2 * size, 0.8 * size, (int(rng.integers(3, 7)), 2)).astype(np.int32)
        # OpenCV draws thick lines with round caps and joins, like the page's pen (1/14 of the canvas).
        cv2.polylines(canvas, [points], False, (20, 20, 20, 255), max(2, size // 14), cv2.LINE_AA)
        png = cv2.imencode(".png", canvas, [cv2.IMWRITE_PNG_COMPRESSION, 6])[1].tobytes()
        urls.append("data:image/png;base64," + base64.b64encode(png).decode("ascii"))
    return urls


def time_drawings(classifier: Classifier, urls: list[str], count: int) -> dict[str, np.ndarray]:
    """Return per-drawing nanoseconds for preprocessing, inference and both, after a warm-up."""
    for url in urls[:WARM_UP]:
        classifier.predict(preprocess(decode_payload(url)))
    timings = np.zeros((count, 2), np.int64)
    for i in range(count):
        url = urls[i % len(urls)]
        started = time.perf_counter_ns()
        pixels = preprocess(decode_payload(url))
        preprocessed = time.perf_counter_ns()
        classifier.predict(pixels)
        timings[i] = preprocessed - started, time.perf_counter_ns() - preprocessed
    return {"decode + preprocess": timings[:, 0], "inference": timings[:, 1], "total": timings.sum(axis=1)}


def main() -> None:
    """Print median and p99 milliseconds per drawing for each canvas size, and the machine."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="a .tflite file (default: shipped model)")
    parser.add_argument("-n", type=int, default=500, help="drawings per canvas size (default 500)")
    args = parser.parse_args()
    if not args.model.exists():
        parser.error(f"no model at {args.model}; train one first or pass --model")

    classifier = Classifier(args.model)
    print(f"machine: {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}")
    print(f"model: {args.model} ({args.model.stat().st_size / 1024:.0f} KiB), {args.n} drawings per size")
    rng = np.random.default_rng(0)
    for size in CANVAS_SIZES:
        urls = make_data_urls(size, rng)
        average_kib = sum(len(url) for url in urls) / len(urls) / 1024
        print(f"\n{size}x{size} canvas (data URL {average_kib:.1f} KiB on average)")
        for step, nanoseconds in time_drawings(classifier, urls, args.n).items():
            median, p99 = np.percentile(nanoseconds, [50, 99]) / 1e6
            print(f"  {step:20s} median {median:7.3f} ms   p99 {p99:7.3f} ms")


if __name__ == "__main__":
    main()
