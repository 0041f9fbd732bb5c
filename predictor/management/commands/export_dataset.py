"""Write the fine-tuning dataset (reviewed drawings that are not excluded) for notebooks and other tools."""

import csv
from pathlib import Path

import numpy as np
from django.core.management.base import BaseCommand, CommandError

from predictor import selectors
from predictor.imagefile import encode_png
from predictor.models import Drawing
from predictor.preprocessing import IMAGE_SIZE

FORMATS = ("npz", "csv", "png")
MANIFEST_FIELDS = (
    "index",
    "id",
    "label",
    "predicted_label",
    "confidence",
    "model_version",
    "created_at",
    "reviewed_at",
)


class Command(BaseCommand):
    help = (
        "Export the fine-tuning dataset: the 28x28 inputs, recomputed from the stored images with the current "
        "preprocessing, and the reviewer labels, plus a manifest.csv of drawing ids."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--out",
            required=True,
            type=Path,
            help="File to write (npz, csv; the manifest goes beside it as <name>.manifest.csv), "
            "or a new or empty folder (png: <label>/<id>.png and manifest.csv inside).",
        )
        parser.add_argument(
            "--format",
            choices=FORMATS,
            default="npz",
            help="npz: arrays x (N,28,28) uint8, y (N,) uint8, ids (N,) str; csv: id,label and 784 pixel "
            "columns per row; png: one image per drawing. Default: npz.",
        )

    def handle(self, *args, **options):
        out, output_format = options["out"], options["format"]
        manifest_path = prepare_output(out, output_format)
        drawings = selectors.finetuning_dataset().select_related("model_version").iterator(chunk_size=500)
        rows: list[dict] = []
        images: list = []
        skipped: list = []
        for drawing, pixels, reason in selectors.drawing_inputs(drawings):
            if pixels is None:
                skipped.append((drawing.id, reason))
                continue
            rows.append(manifest_row(drawing, index=len(rows)))
            images.append(pixels)
        x = np.stack(images) if images else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
        if output_format == "npz":
            write_npz(out, x, rows)
        elif output_format == "csv":
            write_csv(out, x, rows)
        else:
            write_pngs(out, x, rows)
        write_manifest(manifest_path, rows, with_files=output_format == "png")

        if not rows:
            self.stderr.write(self.style.WARNING("The dataset is empty: no reviewed drawing could be exported."))
        for drawing_id, reason in skipped:
            self.stderr.write(self.style.WARNING(f"Skipped drawing {drawing_id}: {reason}"))
        self.stdout.write(
            self.style.SUCCESS(
                f"Exported {len(rows)} drawings to {out} ({output_format}); manifest: {manifest_path}"
                + (f"; skipped {len(skipped)} (see above)." if skipped else ".")
            )
        )


def prepare_output(out: Path, output_format: str) -> Path:
    """Return the manifest path for `out`, after checking `out` can be written and making its folder."""
    if output_format == "png":
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise CommandError(f"--out {out} must be a new or empty folder for --format png.")
        folder, manifest = out, out / "manifest.csv"
    else:
        if out.is_dir():
            example = out / f"dataset.{output_format}"
            raise CommandError(f"--out {out} is a folder; give a file path such as {example}.")
        folder, manifest = out.parent, out.with_suffix(".manifest.csv")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CommandError(f"Cannot make the folder {folder} for --out: {error.strerror or error}.") from error
    return manifest


def manifest_row(drawing: Drawing, *, index: int) -> dict:
    """Return the manifest entry of one exported drawing."""
    return {
        "index": index,
        "id": str(drawing.id),
        "label": drawing.true_label,
        "predicted_label": drawing.predicted_label,
        "confidence": f"{drawing.confidence:.6f}",
        "model_version": drawing.model_version.version,
        "created_at": drawing.created_at.isoformat(),
        "reviewed_at": drawing.reviewed_at.isoformat() if drawing.reviewed_at else "",
    }


def write_npz(out: Path, x: np.ndarray, rows: list[dict]) -> None:
    """Write x, y and ids as a compressed .npz at exactly `out` (numpy would otherwise append .npz)."""
    y = np.array([row["label"] for row in rows], dtype=np.uint8)
    ids = np.array([row["id"] for row in rows], dtype="U36")
    with open(out, "wb") as file:
        np.savez_compressed(file, x=x, y=y, ids=ids)


def write_csv(out: Path, x: np.ndarray, rows: list[dict]) -> None:
    """Write one line per drawing: id, label and its pixels row by row (p0 .. p783)."""
    with open(out, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "label", *(f"p{i}" for i in range(IMAGE_SIZE * IMAGE_SIZE))])
        for row, pixels in zip(rows, x):
            writer.writerow([row["id"], row["label"], *pixels.ravel().tolist()])


def write_pngs(out: Path, x: np.ndarray, rows: list[dict]) -> None:
    """Write each input as <label>/<id>.png under `out`, recording the file in its manifest row."""
    for row, pixels in zip(rows, x):
        folder = out / str(row["label"])
        folder.mkdir(exist_ok=True)
        (folder / f"{row['id']}.png").write_bytes(encode_png(pixels))
        row["file"] = f"{row['label']}/{row['id']}.png"


def write_manifest(path: Path, rows: list[dict], *, with_files: bool) -> None:
    """Write the manifest: one line per exported drawing, in the order of the exported arrays."""
    fields = [*MANIFEST_FIELDS, "file"] if with_files else list(MANIFEST_FIELDS)
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
