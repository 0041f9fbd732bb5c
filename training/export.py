"""The artefact format: one directory holding model.keras, model.tflite, metrics.json and confusion.png.

save() writes everything into a temporary sibling directory and renames it into place, so an
interrupted or failed export never leaves a half-written model where the site could load it.
"""

import contextlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import keras
import numpy as np

from predictor.inference import NUM_CLASSES
from predictor.preprocessing import IMAGE_SIZE
from training.config import FinetuneConfig, TrainConfig
from training.evaluate import predict_probabilities
from training.files import (  # noqa: F401  (the format's names, used as export.X by its callers)
    ARTIFACT_FILES,
    CONFUSION_FILE,
    KERAS_FILE,
    METRICS_FILE,
    TFLITE_FILE,
    is_artifact_dir,
    read_metrics,
)

PARITY_SIZE = 1000
PARITY_TOLERANCE = 1e-4


class ParityError(RuntimeError):
    """The .tflite does not give the same probabilities as the Keras model."""


def to_tflite(model: keras.Model) -> bytes:
    """Return float32 .tflite bytes of `model` (no quantisation), taking (1, 28, 28, 1) pixels 0..255."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    # The converter prints the traced signature to stdout; keep command output readable.
    with contextlib.redirect_stdout(io.StringIO()):
        return converter.convert()


def tflite_probabilities(tflite: bytes | str | os.PathLike, x: np.ndarray) -> np.ndarray:
    """Return float32 (N, 10) probabilities of a .tflite (bytes or path) run one image at a time with LiteRT."""
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(tflite, (bytes, bytearray)):
        interpreter = Interpreter(model_content=bytes(tflite))
    else:
        interpreter = Interpreter(model_path=os.fspath(tflite))
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    x = np.asarray(x, dtype=np.float32).reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE, 1)
    out = np.empty((len(x), NUM_CLASSES), dtype=np.float32)
    # Batch 1, exactly as the site serves a drawing.
    for i, image in enumerate(x):
        interpreter.set_tensor(input_index, image)
        interpreter.invoke()
        out[i] = interpreter.get_tensor(output_index)[0]
    return out


def check_parity(model: keras.Model, tflite: bytes, x: np.ndarray, tolerance: float = PARITY_TOLERANCE) -> float:
    """Return the largest |Keras - TFLite| probability difference on x; raise ParityError above `tolerance`."""
    diff = float(np.max(np.abs(predict_probabilities(model, x) - tflite_probabilities(tflite, x))))
    if not diff <= tolerance:
        raise ParityError(
            f"TFLite and Keras probabilities differ by {diff:.2e} (> {tolerance:.0e}) on {len(x)} images; "
            "the model was not exported."
        )
    return diff


def save(
    model: keras.Model,
    *,
    metrics: dict[str, Any],
    config: TrainConfig | FinetuneConfig,
    out_dir: str | os.PathLike,
    parity_images: np.ndarray,
    tolerance: float = PARITY_TOLERANCE,
) -> dict[str, Any]:
    """Write the artefacts of `model` into `out_dir` atomically and return the metrics written.

    Adds "params", "tflite_bytes", "tflite_max_abs_diff", "seed" and "config" to `metrics`.
    `parity_images` (N, 28, 28) are where the .tflite must agree with Keras (PARITY_SIZE MNIST test
    images in practice). Replaces an existing `out_dir` (callers decide whether that is allowed).
    Raises ParityError before touching `out_dir`.
    """
    out_dir = Path(out_dir)
    tflite = to_tflite(model)
    diff = check_parity(model, tflite, parity_images, tolerance)
    config_dict = config.to_dict()
    metrics = {
        **metrics,
        "params": int(model.count_params()),
        "tflite_bytes": len(tflite),
        "tflite_max_abs_diff": diff,
        "seed": config_dict.get("seed"),
        "config": config_dict,
    }
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the finished directory is an ordinary one
        model.save(tmp / KERAS_FILE)
        (tmp / TFLITE_FILE).write_bytes(tflite)
        (tmp / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
        if "confusion" in metrics:
            plot_confusion(metrics["confusion"], tmp / CONFUSION_FILE)
        # The reloaded .keras must answer like the model in memory, or the export is useless.
        np.testing.assert_allclose(
            predict_probabilities(load(tmp), parity_images[:100]),
            predict_probabilities(model, parity_images[:100]),
            atol=1e-6,
        )
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return metrics


def load(directory: str | os.PathLike) -> keras.Model:
    """Return the (uncompiled) Keras model saved in an artefact directory."""
    # Uncompiled: the training loss and optimizer state are not part of the artefact's contract.
    return keras.models.load_model(Path(directory) / KERAS_FILE, compile=False)


def plot_confusion(confusion: list[list[int]] | np.ndarray, path: str | os.PathLike) -> None:
    """Write a confusion-matrix heat map (true rows, predicted columns) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(6, 5.5), dpi=100)
    # Log colour scale: the diagonal holds ~1000 per class and the mistakes a handful.
    ax.imshow(np.log1p(matrix), cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            ax.text(j, i, str(count), ha="center", va="center", fontsize=7, color="white" if i == j else "black")
    ax.set(xticks=range(NUM_CLASSES), yticks=range(NUM_CLASSES), xlabel="predicted label", ylabel="true label")
    ax.set_title("MNIST test confusion")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _replace_dir(new: Path, target: Path) -> None:
    """Rename `new` to `target`, moving an existing `target` aside first and deleting it after."""
    if not target.exists():
        os.replace(new, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, old / target.name)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old / target.name, target)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
