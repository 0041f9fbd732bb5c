"""Show that retraining fixes a drawing style the model gets wrong, measured through the running site's API.

Run by hand from anywhere: python bench/demo_style_retrain.py [--model DIR] [--population 1500] [--relabel 300]
The demonstration of docs/retraining.md: one case of bench/bench_style_retrain.py with the "bubble" hand
of bench/hands.py (each digit drawn as the outline of a very thick stroke). --population bubble drawings
are posted to the served site, a reviewer labels --relabel of them, `manage.py retrain` runs with default
settings while a visitor keeps drawing, the held-out rest, ordinary drawings and MNIST test are measured
again on the new version, and `activate_model 1` rolls back, all without restarting the server.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_style_retrain  # noqa: E402
from bench_retrain import DEFAULT_MODEL  # noqa: E402


def main() -> None:
    """Run the bubble-digit case of the style-shift benchmark, with a rollback at the end."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="artefact folder of the starting model")
    parser.add_argument("--population", type=int, default=1500, help="bubble drawings posted (default 1500)")
    parser.add_argument("--relabel", type=int, default=300, help="how many of them a reviewer labels (default 300)")
    parser.add_argument("--keep", type=Path, help="build the scratch site here and keep it")
    parser.add_argument("retrain_options", nargs="*", help="extra options for retrain, after --")
    options = parser.parse_args()
    arguments = ["--hands", "bubble", "--reviewed", str(options.relabel)]
    arguments += ["--held-out", str(options.population - options.relabel), "--model", str(options.model), "--rollback"]
    arguments += ["--keep", str(options.keep)] if options.keep else []
    bench_style_retrain.main([*arguments, "--", *options.retrain_options])


if __name__ == "__main__":
    main()
