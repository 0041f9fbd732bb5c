"""Where the shipped model lives and what an artefact directory's files are called.

No TensorFlow here: a serving-only host registers the shipped model through this module.
"""

import json
import os
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent / "artifacts" / "base"
KERAS_FILE = "model.keras"
TFLITE_FILE = "model.tflite"
METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion.png"
ARTIFACT_FILES = (KERAS_FILE, TFLITE_FILE, METRICS_FILE, CONFUSION_FILE)


def read_metrics(directory: str | os.PathLike) -> dict[str, Any]:
    """Return the metrics.json of an artefact directory."""
    return json.loads((Path(directory) / METRICS_FILE).read_text())


def is_artifact_dir(directory: str | os.PathLike) -> bool:
    """Return True if `directory` already holds any artefact file."""
    return any((Path(directory) / name).exists() for name in ARTIFACT_FILES)
