"""Show that retraining fixes a drawing style the model gets wrong, measured through the running site's API.

Run by hand from anywhere: python bench/demo_style_retrain.py [--model DIR] [--population 1500] [--relabel 300]
The style is "bubble digits": each digit drawn as the outline of a very thick stroke, as people doodle
bubble letters (docs/retraining.md). The shipped model reads most of them wrong. Steps, on a scratch site:
1. serve the site with gunicorn (2 workers) and post a population of bubble drawings to the API;
2. a reviewer labels --relabel of them through the review service; the rest stay held out;
3. `manage.py retrain` runs in its own process with default settings while the server keeps running;
4. the held-out bubble drawings, ordinary canvas drawings and MNIST test are measured again,
   against the same server, which now answers with the new version; then `activate_model 1` rolls back.
"""

import argparse
import base64
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_retrain import (  # noqa: E402
    DEFAULT_MODEL,
    PROJECT_ROOT,
    canvas_pngs,
    label_drawings,
    run_command,
    scratch_environment,
    setup_site,
)

CANVAS = 400
BUBBLE_WIDTH = (0.22, 0.32)  # width of the (hollow) stroke / digit height; the site's pen gives about 0.1-0.2
PEN_WIDTH = (0.035, 0.06)  # width of the outline / digit height
POPULATION_DIGITS = slice(40_000, 50_000)  # MNIST training digits the population is drawn from
ORDINARY_DIGITS = slice(30_000, 30_500)  # and the ordinary canvas drawings


def bubble_pngs(images: np.ndarray, *, seed: int) -> list[bytes]:
    """Return PNGs of MNIST digits redrawn as bubble digits: the outline of a very thick stroke, black on white."""
    from training import synthetic

    rng = np.random.default_rng(seed)
    pngs = []
    for skeleton in synthetic.skeletonize(images > synthetic.THRESHOLD):
        strokes = synthetic.jitter_strokes(synthetic.trace_strokes(skeleton), rng)
        points = np.concatenate(strokes)
        low, high = points.min(axis=0), points.max(axis=0)
        digit = rng.uniform(0.45, 0.7) * CANVAS
        scale = digit / max(float((high - low).max()), 1.0)
        outer = rng.uniform(*BUBBLE_WIDTH) * digit
        pen = rng.uniform(*PEN_WIDTH) * digit
        margin = outer / 2 + 2
        room = np.maximum(CANVAS - (high - low) * scale - 2 * margin, 0)
        offset = margin + rng.uniform(0, 1, 2) * room - low * scale

        def coverage(width: float) -> np.ndarray:
            drawn = synthetic.Pen((CANVAS, CANVAS), scale, (float(offset[0]), float(offset[1])), width, (0, 0, 0), None)
            return synthetic.draw(strokes, drawn)[..., 3].astype(np.int16)

        # The outline of a stroke `outer` wide, drawn with a pen `pen` wide: the fat stroke minus its inside.
        ink = np.clip(coverage(outer) - coverage(outer - 2 * pen), 0, 255).astype(np.uint8)
        grey = 255 - ink
        pngs.append(synthetic.encode(np.dstack([grey, grey, grey, np.full_like(grey, 255)]), opaque_as_rgb=True))
    return pngs


class Site:
    """The scratch site served by gunicorn, as a visitor's browser reaches it."""

    def __init__(self, directory: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "digitsite.wsgi", "--bind", f"127.0.0.1:{self.port}", "--workers", "2"],
            cwd=PROJECT_ROOT,
            env=scratch_environment(directory),
            stderr=subprocess.DEVNULL,
        )
        for _ in range(100):
            try:
                self.get("/api/health/")
                return
            except OSError:
                time.sleep(0.2)
        raise SystemExit("gunicorn did not start")

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as response:
            return json.load(response)

    def predict(self, png: bytes) -> dict:
        """Return the API's answer for one drawing, sent as the page sends it (a PNG data URL)."""
        body = json.dumps({"image": "data:image/png;base64," + base64.b64encode(png).decode("ascii")}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/predictions/", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


class Traffic(threading.Thread):
    """A visitor drawing about ten times a second, counting failed requests and the versions that answer."""

    def __init__(self, site: Site, pngs: list[bytes]) -> None:
        super().__init__(daemon=True)
        self.site, self.pngs = site, pngs
        self.requests, self.failures, self.versions = 0, 0, []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.1):
            try:
                version = self.site.predict(self.pngs[self.requests % len(self.pngs)])["model_version"]
                if not self.versions or self.versions[-1] != version:
                    self.versions.append(version)
            except OSError:  # urllib's HTTPError and connection errors
                self.failures += 1
            self.requests += 1

    def stop(self) -> None:
        self.stopping.set()
        self.join()


def measure(site: Site, pngs: list[bytes], labels: np.ndarray) -> tuple[float, set[int], list[dict]]:
    """Return (accuracy, model versions that answered, the answers) of the API on labelled drawings."""
    answers = [site.predict(png) for png in pngs]
    correct = np.mean([answer["predicted_label"] == label for answer, label in zip(answers, labels)])
    return float(correct), {answer["model_version"] for answer in answers}, answers


def mnist_test_accuracy(version) -> float:
    """Return the MNIST test accuracy of a version's served .tflite."""
    from predictor.inference import Classifier
    from training.data import load_mnist

    _, (x_test, y_test) = load_mnist()
    probabilities = Classifier(version.tflite.path).predict_batch(x_test.astype(np.float32))
    return float(np.mean(probabilities.argmax(axis=1) == y_test))


def wait_for_version(site: Site, png: bytes, number: int) -> float:
    """Return the seconds until the running server answers with model version `number`."""
    started = time.perf_counter()
    while site.predict(png)["model_version"] != number:
        if time.perf_counter() - started > 30:
            raise SystemExit(f"the server did not switch to version {number} within 30 s")
        time.sleep(0.05)
    return time.perf_counter() - started


def main() -> None:
    """Run the demonstration and print its figures as a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="artefact folder of the starting model")
    parser.add_argument("--population", type=int, default=1500, help="bubble drawings posted (default 1500)")
    parser.add_argument("--relabel", type=int, default=300, help="how many of them a reviewer labels (default 300)")
    parser.add_argument("--keep", type=Path, help="build the scratch site here and keep it")
    parser.add_argument("retrain_options", nargs="*", help="extra options for retrain, after --")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="demo-retrain-") as temporary:
        directory = options.keep or Path(temporary)
        directory.mkdir(parents=True, exist_ok=True)
        base = setup_site(directory, options.model)
        from predictor.models import Drawing, ModelVersion
        from training.data import load_mnist

        (x_train, y_train), _ = load_mnist()
        rng = np.random.default_rng(3)
        population = rng.choice(
            np.arange(POPULATION_DIGITS.start, POPULATION_DIGITS.stop), options.population, replace=False
        )
        style_pngs, style_labels = bubble_pngs(x_train[population], seed=5), y_train[population]
        ordinary_pngs, ordinary_labels = canvas_pngs(x_train[ORDINARY_DIGITS], seed=6), y_train[ORDINARY_DIGITS]

        site = Site(directory)
        try:
            started = time.perf_counter()
            style_before, versions, answers = measure(site, style_pngs, style_labels)
            print(
                f"posted {len(answers)} bubble drawings in {time.perf_counter() - started:.0f} s; "
                f"version {versions} reads {style_before:.1%} of them right"
            )
            reviewed, held_out = np.arange(options.relabel), np.arange(options.relabel, len(answers))
            drawings = {str(d.id): d for d in Drawing.objects.filter(id__in=[answers[i]["id"] for i in reviewed])}
            label_drawings([drawings[answers[i]["id"]] for i in reviewed], [int(style_labels[i]) for i in reviewed])
            held_before = float(np.mean([answers[i]["predicted_label"] == style_labels[i] for i in held_out]))
            ordinary_before, _, _ = measure(site, ordinary_pngs, ordinary_labels)

            # A visitor keeps drawing while the model is retrained and swapped: no request may fail.
            traffic = Traffic(site, ordinary_pngs)
            traffic.start()
            seconds, report = run_command(directory, "retrain", *options.retrain_options)
            print(report)
            new = ModelVersion.objects.order_by("-version").first()
            if not new.is_active:
                traffic.stop()
                raise SystemExit("the retrained version was not activated; see the report above")
            switch = wait_for_version(site, style_pngs[0], new.version)
            held_after, versions_after, _ = measure(site, [style_pngs[i] for i in held_out], style_labels[held_out])
            ordinary_after, _, _ = measure(site, ordinary_pngs, ordinary_labels)
            mnist_before, mnist_after = mnist_test_accuracy(base), mnist_test_accuracy(new)

            run_command(directory, "activate_model", str(base.version))
            rollback = wait_for_version(site, style_pngs[0], base.version)
            time.sleep(1)
            traffic.stop()
        finally:
            site.stop()

    print(
        f"\nretrain took {seconds:.0f} s; the running server answered with version {new.version} "
        f"{switch:.1f} s after the command ended; rollback took {rollback:.1f} s to reach the server"
    )
    print(
        f"meanwhile a visitor sent {traffic.requests} drawings: {traffic.failures} failed; "
        f"versions answering in turn: {' -> '.join(map(str, traffic.versions))}\n"
    )
    print(
        f"| measured through the API (gunicorn, 2 workers) | size | v{base.version} (before) | v{new.version} (after) |"
    )
    print("| --- | ---: | ---: | ---: |")
    print(f"| held-out bubble drawings (never labelled) | {len(held_out)} | {held_before:.1%} | {held_after:.1%} |")
    print(f"| ordinary canvas drawings | {len(ordinary_labels)} | {ordinary_before:.1%} | {ordinary_after:.1%} |")
    print(f"| MNIST test (served .tflite) | 10000 | {mnist_before:.2%} | {mnist_after:.2%} |")
    print(f"\nversions answering after retrain: {sorted(versions_after)}")


if __name__ == "__main__":
    main()
