"""Time `manage.py retrain` with 1,000 reviewed drawings and default settings, TensorFlow start-up included.

Run by hand from anywhere: python bench/bench_retrain.py [--model DIR] [--drawings 1000] [--keep DIR]
A scratch site (SQLite database, media and model folders in a temporary folder) gets the model in
--model registered as version 1 and --drawings canvas-style drawings of MNIST training digits, made
through the prediction service and labelled through the review service, as a reviewer would. Then
`manage.py retrain` runs in a fresh process and the wall time of that process is reported.
The helpers here are shared with bench/bench_style_retrain.py.
"""

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))
DEFAULT_MODEL = PROJECT_ROOT / "training" / "artifacts" / "base"
FIRST_DIGIT = 50_000  # drawings are made from MNIST training digits from here on
last_cpu_seconds = 0.0  # CPU time (user + system) of the last command run_command() ran


def scratch_environment(directory: Path) -> dict[str, str]:
    """Return environment variables that point a Django process at a scratch site inside `directory`."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "digitsite.settings",
        "DEBUG": "true",
        "DATABASE_URL": f"sqlite:///{directory / 'db.sqlite3'}",
        # The database cache is shared by every process of the site, as in production.
        "CACHE_URL": "dbcache://digit_cache",
        "MEDIA_ROOT": str(directory / "media"),
        "DIGIT_MODEL_ROOT": str(directory / "models"),
        "DIGIT_THROTTLE_PREDICTIONS": "",
        "DIGIT_THROTTLE_FEEDBACK": "",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


def setup_site(directory: Path, model_dir: Path):
    """Set up Django on a scratch site in `directory` with `model_dir` registered and active; return its version."""
    os.environ.update(scratch_environment(directory))
    import django

    django.setup()
    from django.core.management import call_command

    from predictor import services

    call_command("migrate", verbosity=0)
    call_command("createcachetable", verbosity=0)
    import json

    return services.model_version_register(
        tflite_path=model_dir / "model.tflite",
        keras_path=model_dir / "model.keras",
        metrics=json.loads((model_dir / "metrics.json").read_text()),
        notes="The model the scratch site started with.",
        activate=True,
    )


def canvas_pngs(images: np.ndarray, *, seed: int) -> list[bytes]:
    """Return PNGs of MNIST digits redrawn as canvas drawings (random pen, size, colours) by training.synthetic."""
    from training import synthetic

    rng = np.random.default_rng(seed)
    skeletons = synthetic.skeletonize(images > synthetic.THRESHOLD)
    return [synthetic.render_png(synthetic.trace_strokes(skeleton), rng) for skeleton in skeletons]


def create_drawings(pngs: list[bytes], labels: list[int], *, visitor: str) -> tuple[list, list[int]]:
    """Return (Drawings made by the prediction service from PNGs, their labels); unreadable PNGs are left out."""
    from predictor import services
    from predictor.preprocessing import PreprocessingError

    drawings, kept = [], []
    for png, label in zip(pngs, labels):
        try:
            drawings.append(services.drawing_create(data=png, visitor=visitor))
        except PreprocessingError:  # a tiny digit drawn with a fat pen can read as a dot
            continue
        kept.append(label)
    return drawings, kept


def label_drawings(drawings: list, labels: list[int]) -> None:
    """Give each drawing its reviewer label through the review service, as a staff member would."""
    from django.contrib.auth import get_user_model

    from predictor import services

    reviewer, _ = get_user_model().objects.get_or_create(username="reviewer", defaults={"is_staff": True})
    for digit in range(10):
        chosen = [drawing for drawing, label in zip(drawings, labels) if label == digit]
        services.drawing_relabel(drawings=chosen, true_label=digit, reviewer=reviewer)


def run_command(directory: Path, *arguments: str) -> tuple[float, str]:
    """Return (wall seconds, output) of `manage.py <arguments>` run in a new process on the scratch site."""
    global last_cpu_seconds
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "manage.py", *arguments],
        cwd=PROJECT_ROOT,
        env=scratch_environment(directory),
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    last_cpu_seconds = after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime
    if result.returncode:
        raise SystemExit(f"manage.py {' '.join(arguments)} failed:\n{result.stdout}\n{result.stderr}")
    return seconds, result.stdout


def main() -> None:
    """Build the scratch site, run retrain once, print its report and the wall time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="artefact folder of the starting model")
    parser.add_argument("--drawings", type=int, default=1000, help="reviewed drawings to make (default 1000)")
    parser.add_argument(
        "--keep", type=Path, help="build the scratch site here and keep it (default: a temporary folder)"
    )
    parser.add_argument("retrain_options", nargs="*", help="extra options for retrain, after --")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-retrain-") as temporary:
        directory = options.keep or Path(temporary)
        directory.mkdir(parents=True, exist_ok=True)
        setup_site(directory, options.model)
        from training.data import load_mnist

        (x_train, y_train), _ = load_mnist()
        picked = slice(FIRST_DIGIT, FIRST_DIGIT + options.drawings)
        started = time.perf_counter()
        pngs = canvas_pngs(x_train[picked], seed=1)
        drawings, labels = create_drawings(pngs, [int(label) for label in y_train[picked]], visitor="bench")
        label_drawings(drawings, labels)
        print(f"{len(drawings)} reviewed drawings made in {time.perf_counter() - started:.0f} s")

        seconds, output = run_command(directory, "retrain", *options.retrain_options)
        print(output)
        print(
            f"manage.py retrain took {seconds:.1f} s wall time (process start, TensorFlow import and model load "
            f"included) and {last_cpu_seconds:.1f} s of CPU time"
        )
        # Other processes on the machine stretch the wall time; the CPU time says what the run itself costs.
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average over the last 5 minutes "
            f"{os.getloadavg()[1]:.1f}"
        )


if __name__ == "__main__":
    main()
