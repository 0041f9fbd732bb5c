"""Style-shift benchmark: does `manage.py retrain` with defaults learn a new hand from its reviewed drawings?

Run by hand from anywhere: python bench/bench_style_retrain.py [--hands a,b | --sequence a,b] [--reviewed 600]
[--held-out 1000] [--mnist 10000] [--lock FILE] [--model DIR] [--keep DIR] [--rollback] [-- retrain options]
The hands are those of bench/hands.py (default: all, one after the other, each on a site of its own).
Each goes through the product's own loop, on a scratch site served by gunicorn (2 workers):
1. the hand's reviewed and held-out drawings, MNIST test digits (dark ink on white, upscaled to the
   page's 280x280) and ordinary canvas drawings are posted to POST /api/predictions/ as the page posts
   them; the shipped model's answers are the "before";
2. a reviewer labels the reviewed drawings through the review service (what the admin's relabel action calls);
3. `manage.py retrain` runs with its defaults (options after -- are passed on) in its own process while a
   visitor keeps drawing, and the benchmark waits until the running server answers with the new version;
4. the held-out drawings, MNIST test digits and ordinary drawings are posted again; MNIST test is also
   run through the served .tflite (the figure the retrain gate uses).
--sequence a,b runs one site: a's loop, then b's reviews are added and retrain runs again, and every
hand's held-out drawings are measured after each retrain (does the model forget a when it learns b?).
Prints a before/after Markdown table per run and a summary table against the targets of docs/retraining.md.
--lock FILE holds an exclusive flock on FILE during each run (not between runs), for a shared machine.
"""

import argparse
import base64
import fcntl
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_retrain  # noqa: E402
from bench_retrain import (  # noqa: E402
    DEFAULT_MODEL,
    PROJECT_ROOT,
    canvas_pngs,
    label_drawings,
    run_command,
    scratch_environment,
    setup_site,
)
from hands import CANVAS, HANDS, HELD_OUT_DIGITS, REVIEWED_DIGITS, Hand, hand_seed  # noqa: E402

ORDINARY_DIGITS = slice(30_000, 30_500)  # MNIST training digits redrawn as ordinary canvas drawings
DIGIT_ORDER_SEED = 8  # fixes which MNIST digits each hand's slice of a range holds
CLIENTS = 4  # requests in flight while measuring: enough to keep gunicorn's 2 workers busy
# The targets of docs/retraining.md ("Style-shift benchmarks"), with retrain's defaults, for every hand.
TARGET_REMOVED = 0.6  # share of the shipped model's errors on the held-out drawings removed
TARGET_MNIST_DROP = 0.002  # largest MNIST test drop through the API (fraction)
TARGET_CLASS_DROP = 0.005  # largest drop of any one MNIST digit through the API (fraction)
TARGET_SECONDS = 180  # retrain wall time with 600 reviewed drawings on two cores


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
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            raise SystemExit(f"the API refused a drawing: {error.code} {error.read().decode()}") from None

    def predict_all(self, pngs: list[bytes]) -> list[dict]:
        """Return the API's answers for many drawings, in order, a few requests at a time."""
        with ThreadPoolExecutor(CLIENTS) as pool:
            return list(pool.map(self.predict, pngs))

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
            except (OSError, SystemExit):  # connection errors, and the API's refusals
                self.failures += 1
            self.requests += 1

    def stop(self) -> None:
        self.stopping.set()
        self.join()


@dataclass
class Measured:
    """Which answers were right, per set of drawings, one entry per served version in turn (the base first)."""

    held_out: dict[str, list[np.ndarray]]  # per hand
    held_out_labels: dict[str, np.ndarray]
    mnist_labels: np.ndarray
    mnist_api: list[np.ndarray] = field(default_factory=list)  # MNIST test digits through the API
    mnist_tflite: list[np.ndarray] = field(default_factory=list)  # raw MNIST test through the served .tflite
    ordinary: list[np.ndarray] = field(default_factory=list)  # ordinary canvas drawings through the API


def wait_for_version(site: Site, png: bytes, number: int) -> float:
    """Return the seconds until the running server answers with model version `number`."""
    started = time.perf_counter()
    while site.predict(png)["model_version"] != number:
        if time.perf_counter() - started > 30:
            raise SystemExit(f"the server did not switch to version {number} within 30 s")
        time.sleep(0.05)
    return time.perf_counter() - started


def mnist_pngs(images: np.ndarray) -> list[bytes]:
    """Return PNGs of MNIST digits as the page could send them: dark ink on white, scaled up to the canvas."""
    import cv2

    from training import synthetic

    pngs = []
    for image in images:
        grey = cv2.resize(255 - image, (CANVAS, CANVAS), interpolation=cv2.INTER_LINEAR)
        pngs.append(synthetic.encode(np.dstack([grey, grey, grey, np.full_like(grey, 255)])))
    return pngs


def served_tflite_predictions(version, images: np.ndarray) -> np.ndarray:
    """Return the digits a version's served .tflite gives raw MNIST images, as the retrain gate scores them."""
    from predictor.inference import Classifier

    return Classifier(version.tflite.path).predict_batch(images.astype(np.float32)).argmax(axis=1)


def hand_drawings(hand: Hand, position: int, options, x_train: np.ndarray, y_train: np.ndarray) -> dict:
    """Return a hand's reviewed and held-out drawings and labels, from MNIST digits no other position uses."""
    parts = {}
    for part, digits, count in (
        ("reviewed", REVIEWED_DIGITS, options.reviewed),
        ("held-out", HELD_OUT_DIGITS, options.held_out),
    ):
        # One fixed shuffle of the range, cut into slices: the n-th hand of a sequence gets the n-th slice.
        order = np.random.default_rng(DIGIT_ORDER_SEED).permutation(np.arange(digits.start, digits.stop))
        picked = order[position * count : (position + 1) * count]
        if len(picked) < count:
            raise SystemExit(f"not enough MNIST digits in {digits} for {position + 1} hands of {count}")
        parts[part] = (hand.render(x_train[picked], y_train[picked], seed=hand_seed(hand.name, part)), y_train[picked])
    return parts


def right(answers: list[dict], labels: np.ndarray) -> np.ndarray:
    """Return which answers name the right digit (bool array)."""
    return np.array([answer["predicted_label"] == label for answer, label in zip(answers, labels)])


def class_changes(before: np.ndarray, after: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Return each digit's accuracy change (fraction), given which answers were right before and after."""
    return np.array([after[labels == d].mean() - before[labels == d].mean() for d in range(10)])


def run(hands: list[Hand], options, directory: Path) -> list[dict]:
    """Run the loop for `hands` in sequence on one scratch site; print its tables; return the summary rows."""
    base = setup_site(directory, options.model)
    from predictor.models import Drawing, ModelVersion
    from training.data import load_mnist

    (x_train, y_train), (x_test, y_test) = load_mnist()
    data = {hand.name: hand_drawings(hand, i, options, x_train, y_train) for i, hand in enumerate(hands)}
    mnist = mnist_pngs(x_test[: options.mnist])
    ordinary_pngs, ordinary_labels = canvas_pngs(x_train[ORDINARY_DIGITS], seed=6), y_train[ORDINARY_DIGITS]
    measured = Measured(
        held_out={name: [] for name in data},
        held_out_labels={name: parts["held-out"][1] for name, parts in data.items()},
        mnist_labels=y_test[: options.mnist],
    )

    def measure(version) -> None:
        for name, parts in data.items():
            measured.held_out[name].append(right(site.predict_all(parts["held-out"][0]), parts["held-out"][1]))
        measured.mnist_api.append(right(site.predict_all(mnist), measured.mnist_labels))
        measured.ordinary.append(right(site.predict_all(ordinary_pngs), ordinary_labels))
        measured.mnist_tflite.append(served_tflite_predictions(version, x_test) == y_test)

    site = Site(directory)
    try:
        started = time.perf_counter()
        reviewed_answers = {name: site.predict_all(parts["reviewed"][0]) for name, parts in data.items()}
        measure(base)
        print(
            f"posted {len(hands) * (options.reviewed + options.held_out)} hand drawings, {len(mnist)} MNIST digits "
            f"and {len(ordinary_pngs)} ordinary drawings to v{base.version} in {time.perf_counter() - started:.0f} s"
        )
        versions, retrains = [base.version], []
        for hand in hands:
            answers, labels = reviewed_answers[hand.name], data[hand.name]["reviewed"][1]
            drawings = {str(d.id): d for d in Drawing.objects.filter(id__in=[a["id"] for a in answers])}
            label_drawings([drawings[a["id"]] for a in answers], [int(label) for label in labels])

            # A visitor keeps drawing while the model is retrained and swapped: no request may fail.
            traffic = Traffic(site, ordinary_pngs)
            if options.traffic:
                traffic.start()
            seconds, report = run_command(directory, "retrain", *options.retrain_options)
            cpu = bench_retrain.last_cpu_seconds
            print(f"\nretrain with {hand.name}'s {len(answers)} reviews added:\n\n```\n{report.rstrip()}\n```")
            new = ModelVersion.objects.order_by("-version").first()
            served = ModelVersion.objects.get(is_active=True)
            switch = wait_for_version(site, ordinary_pngs[0], served.version)
            if options.traffic:
                time.sleep(1)
                traffic.stop()
            print(
                f"retrain took {seconds:.0f} s ({cpu:.0f} s CPU); "
                + (
                    f"the server answered with v{new.version} {switch:.1f} s after the command ended"
                    if new.is_active
                    else f"v{new.version} was NOT activated (see the report): the site still serves v{served.version}"
                )
                + (
                    f"; meanwhile a visitor sent {traffic.requests} drawings, {traffic.failures} failed, "
                    f"versions answering in turn: {' -> '.join(map(str, traffic.versions))}"
                    if options.traffic
                    else ""
                )
            )
            versions.append(served.version)
            retrains.append({"hand": hand.name, "seconds": seconds, "cpu": cpu, "served": bool(new.is_active)})
            measure(served)

        if options.rollback:
            run_command(directory, "activate_model", str(base.version))
            print(
                f"\nactivate_model {base.version}: the running server answered with v{base.version} again "
                f"{wait_for_version(site, ordinary_pngs[0], base.version):.1f} s after the command ended"
            )
    finally:
        site.stop()

    print_run_table(hands, versions, measured)
    return summary_rows(hands, retrains, measured)


def print_run_table(hands: list[Hand], versions: list[int], measured: Measured) -> None:
    """Print the before/after table of one run: a column per served version, a row per set of drawings."""
    columns = [f"v{versions[0]} (before)"] + [f"v{v} (after {h.name})" for v, h in zip(versions[1:], hands)]
    print(f"\n| measured through the API (gunicorn, 2 workers) | size | {' | '.join(columns)} |")
    print("| --- | ---: |" + " ---: |" * len(columns))

    def row(title: str, results: list[np.ndarray], digits: int = 1) -> None:
        print(f"| {title} | {len(results[0])} | {' | '.join(f'{r.mean():.{digits}%}' for r in results)} |")

    for hand in hands:
        row(f"held-out {hand.name} drawings (never labelled)", measured.held_out[hand.name])
    row("ordinary canvas drawings", measured.ordinary)
    row("MNIST test through the API", measured.mnist_api, 2)
    row("MNIST test (served .tflite)", measured.mnist_tflite, 2)
    worst = ["—"]
    for after in measured.mnist_api[1:]:
        changes = class_changes(measured.mnist_api[0], after, measured.mnist_labels)
        worst.append(fallen_most(changes))
    print(f"| MNIST digit that fell most (API) | | {' | '.join(worst)} |")
    for hand in hands:
        results, labels = measured.held_out[hand.name], measured.held_out_labels[hand.name]
        per_digit = ", ".join(
            f"{d}: {results[0][labels == d].mean():.0%} -> {results[-1][labels == d].mean():.0%}" for d in range(10)
        )
        print(f"\nheld-out {hand.name} per digit, v{versions[0]} -> v{versions[-1]}: {per_digit}")


def fallen_most(changes: np.ndarray) -> str:
    """Return "digit: change" for the digit whose accuracy fell most, or "none fell"."""
    digit = int(np.argmin(changes))
    return f"{digit}: {100 * changes[digit]:+.2f}p" if changes[digit] < 0 else "none fell"


def summary_rows(hands: list[Hand], retrains: list[dict], measured: Measured) -> list[dict]:
    """Return a summary row per retrain, and per earlier hand measured again after a later hand's retrain."""
    rows = []
    for stage, retrain in enumerate(retrains, start=1):
        mnist_api, mnist_tflite = measured.mnist_api, measured.mnist_tflite
        classes = class_changes(mnist_api[0], mnist_api[stage], measured.mnist_labels)
        for hand in hands[:stage]:
            before, after = measured.held_out[hand.name][0], measured.held_out[hand.name][stage]
            rows.append(
                {
                    **retrain,
                    "hand": hand.name if hand.name == retrain["hand"] else f"{hand.name}, after {retrain['hand']}",
                    "held_out": len(before),
                    "errors_before": int((~before).sum()),
                    "errors_after": int((~after).sum()),
                    "mnist_api": float(mnist_api[stage].mean() - mnist_api[0].mean()),
                    "mnist_tflite": float(mnist_tflite[stage].mean() - mnist_tflite[0].mean()),
                    "class_deltas": classes.tolist(),
                }
            )
    return rows


def print_summary(rows: list[dict]) -> None:
    """Print the summary table: one row per hand (and per earlier hand after a later retrain)."""
    print(
        f"\ntargets: at least {TARGET_REMOVED:.0%} of the errors removed, MNIST through the API down at most "
        f"{100 * TARGET_MNIST_DROP:.1f} points and no digit more than {100 * TARGET_CLASS_DROP:.1f}, "
        f"retrain at most {TARGET_SECONDS} s\n"
    )
    print(
        "| hand | held-out | errors before | errors after | share removed | MNIST Δ (API) | MNIST Δ (.tflite) "
        "| worst digit Δ (API) | retrain s (CPU s) | targets |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for row in rows:
        if row.get("failed"):
            print(f"| {row['hand']} | the run failed: see its output above | | | | | | | | |")
            continue
        removed = 1 - row["errors_after"] / row["errors_before"] if row["errors_before"] else 0.0
        missed = [
            name
            for name, failed in (
                ("not served", not row["served"]),
                ("errors", removed < TARGET_REMOVED),
                ("MNIST", row["mnist_api"] < -TARGET_MNIST_DROP),
                ("digit", min(row["class_deltas"]) < -TARGET_CLASS_DROP),
                ("time", row["seconds"] > TARGET_SECONDS),
            )
            if failed
        ]
        print(
            f"| {row['hand']} | {row['held_out']} | {row['errors_before']} | {row['errors_after']} | {removed:.0%} "
            f"| {100 * row['mnist_api']:+.2f}p | {100 * row['mnist_tflite']:+.2f}p "
            f"| {fallen_most(np.array(row['class_deltas']))} "
            f"| {row['seconds']:.0f} ({row['cpu']:.0f}) | {'met' if not missed else 'missed: ' + ', '.join(missed)} |"
        )


@contextmanager
def locked(path: Path | None):
    """Hold an exclusive flock on `path` (the same lock as flock(1)) for the duration; nothing when None."""
    if path is None:
        yield
        return
    with open(path, "a") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


def code_version() -> str:
    """Return the commit the benchmark runs on, marked when the checkout has changes."""
    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit


def parse_options(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument("--hands", default=",".join(HANDS), help="hands, each on a site of its own (default all)")
    chosen.add_argument("--sequence", help="hands whose reviews are added one after the other on one site")
    parser.add_argument("--reviewed", type=int, default=600, help="reviewed drawings per hand (default 600)")
    parser.add_argument("--held-out", type=int, default=1000, help="held-out drawings per hand (default 1000)")
    parser.add_argument("--mnist", type=int, default=10_000, help="MNIST test digits sent through the API")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="artefact folder of the starting model")
    parser.add_argument("--lock", type=Path, help="hold an exclusive flock on this file during each run")
    parser.add_argument("--rollback", action="store_true", help="activate the starting model again at the end")
    parser.add_argument("--keep", type=Path, help="build the scratch sites here and keep them")
    parser.add_argument(
        "--no-traffic", dest="traffic", action="store_false", help="no visitor drawing while retrain runs"
    )
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)  # where a child run writes its rows
    parser.add_argument("retrain_options", nargs="*", help="extra options for retrain, after --")
    options = parser.parse_args(argv)
    if not 1 <= options.mnist <= 10_000:
        parser.error("--mnist takes 1 to 10000 (the MNIST test digits)")
    names = (options.sequence or options.hands).split(",")
    unknown = [name for name in names if name not in HANDS]
    if unknown:
        parser.error(f"unknown hand {', '.join(unknown)}; the hands are {', '.join(HANDS)}")
    options.runs = [names] if options.sequence else [[name] for name in names]
    return options


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark: one run in this process, or each of several runs in a process of its own."""
    options = parse_options(argv)
    if len(options.runs) == 1:
        for name in options.runs[0]:
            print(f"# {name}: {HANDS[name].description}")
        print(
            f"\ncode {code_version()}, retrain options: {' '.join(options.retrain_options) or 'the defaults'}; "
            f"load average {os.getloadavg()[1]:.1f} over the last 5 minutes",
            flush=True,
        )
        with tempfile.TemporaryDirectory(prefix="bench-style-") as temporary, locked(options.lock):
            directory = options.keep or Path(temporary)
            directory.mkdir(parents=True, exist_ok=True)
            rows = run([HANDS[name] for name in options.runs[0]], options, directory)
        if options.result:
            options.result.write_text(json.dumps(rows))
        else:
            print_summary(rows)
        print(f"load average {os.getloadavg()[1]:.1f} over the last 5 minutes")
        return

    # Django is set up once per process, on one site: each hand gets a fresh process and site.
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-style-") as temporary:
        for names in options.runs:
            result = Path(temporary) / "rows.json"
            child = [sys.executable, __file__, "--hands", ",".join(names), "--result", str(result)]
            child += ["--reviewed", str(options.reviewed), "--held-out", str(options.held_out)]
            child += ["--mnist", str(options.mnist), "--model", str(options.model)]
            child += ["--rollback"] * options.rollback + ["--no-traffic"] * (not options.traffic)
            child += ["--keep", str(options.keep / names[0])] if options.keep else []
            with locked(options.lock):
                failed = subprocess.run([*child, "--", *options.retrain_options]).returncode
            # A run that failed (its output says why) does not stop the others.
            rows += [{"hand": name, "failed": True} for name in names] if failed else json.loads(result.read_text())
            print()
    print_summary(rows)


if __name__ == "__main__":
    main()
