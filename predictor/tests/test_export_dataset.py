import csv
import io

import cv2
import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command
from django.urls import reverse

from predictor import services
from predictor.models import Drawing
from predictor.preprocessing import preprocess
from predictor.tests.drawings import canvas_png, data_url


@pytest.fixture
def dataset(make_drawing, mnist_train):
    """Four labelled drawings of different MNIST digits (one excluded), plus two that are not in the dataset."""
    images, labels = mnist_train
    drawings = []
    for i in range(4):
        name = default_storage.save(f"drawings/digit{i}.png", ContentFile(canvas_png(images[i])))
        drawings.append(make_drawing(image=name, true_label=int(labels[i]), is_excluded=i == 3))
    make_drawing(confidence=0.3)
    make_drawing(feedback_label=1)
    return {"included": drawings[:3], "excluded": drawings[3], "images": images[:3]}


def export(tmp_path, output_format, name):
    out = tmp_path / name
    stdout, stderr = io.StringIO(), io.StringIO()
    call_command("export_dataset", "--out", str(out), "--format", output_format, stdout=stdout, stderr=stderr)
    return out, stdout.getvalue(), stderr.getvalue()


def read_manifest(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


@pytest.mark.django_db
def test_npz_export_loads_in_numpy_with_labels_and_ids(tmp_path, dataset):
    out, stdout, _ = export(tmp_path, "npz", "data.npz")

    with np.load(out) as data:  # no pickles: plain arrays only
        x, y, ids = data["x"], data["y"], data["ids"]
    included = sorted(dataset["included"], key=lambda d: d.id)
    assert x.dtype == np.uint8 and x.shape == (3, 28, 28)
    assert y.dtype == np.uint8 and y.tolist() == [d.true_label for d in included]
    assert ids.tolist() == [str(d.id) for d in included]
    manifest = read_manifest(tmp_path / "data.manifest.csv")
    assert [row["id"] for row in manifest] == ids.tolist()
    assert [int(row["label"]) for row in manifest] == y.tolist()
    assert {row["model_version"] for row in manifest} == {"1"}
    assert "Exported 3 drawings" in stdout


@pytest.mark.django_db
def test_export_recomputes_inputs_from_the_stored_images(tmp_path, dataset):
    out, _, _ = export(tmp_path, "npz", "data.npz")
    with np.load(out) as data:
        by_id = dict(zip(data["ids"].tolist(), data["x"]))
    for drawing, image in zip(dataset["included"], dataset["images"]):
        np.testing.assert_array_equal(by_id[str(drawing.id)], preprocess(canvas_png(image)))


@pytest.mark.django_db
def test_exported_inputs_are_what_the_served_model_saw(
    tmp_path, api_client, active_model, mnist_train, django_user_model
):
    images, labels = mnist_train
    for i in range(3):
        response = api_client.post("/api/predictions/", {"image": data_url(canvas_png(images[i]))}, format="json")
        assert response.status_code == 201
    reviewer = django_user_model.objects.create_user("reviewer", is_staff=True)
    services.drawing_confirm(drawings=Drawing.objects.all(), reviewer=reviewer)

    out, _, _ = export(tmp_path, "npz", "served.npz")
    with np.load(out) as data:
        for drawing_id, x, y in zip(data["ids"], data["x"], data["y"]):
            drawing = Drawing.objects.get(id=drawing_id)
            np.testing.assert_array_equal(x, drawing.input_array)
            assert y == drawing.predicted_label == drawing.true_label


@pytest.mark.django_db
def test_csv_export_has_one_row_of_784_pixels_per_drawing(tmp_path, dataset):
    npz, _, _ = export(tmp_path, "npz", "data.npz")
    out, _, _ = export(tmp_path, "csv", "data.csv")

    with open(out, newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0][:3] == ["id", "label", "p0"] and len(rows[0]) == 2 + 784
    with np.load(npz) as data:
        assert [row[0] for row in rows[1:]] == data["ids"].tolist()
        assert [int(row[1]) for row in rows[1:]] == data["y"].tolist()
        pixels = np.array([row[2:] for row in rows[1:]], dtype=np.uint8).reshape(-1, 28, 28)
        np.testing.assert_array_equal(pixels, data["x"])
    assert len(read_manifest(tmp_path / "data.manifest.csv")) == 3


@pytest.mark.django_db
def test_png_export_writes_a_folder_per_label_and_a_manifest(tmp_path, dataset):
    npz, _, _ = export(tmp_path, "npz", "data.npz")
    out, _, _ = export(tmp_path, "png", "pngs")

    manifest = read_manifest(out / "manifest.csv")
    with np.load(npz) as data:
        expected = dict(zip(data["ids"].tolist(), zip(data["x"], data["y"].tolist())))
    assert [row["id"] for row in manifest] == list(expected)
    for row in manifest:
        x, y = expected[row["id"]]
        assert row["file"] == f"{y}/{row['id']}.png"
        np.testing.assert_array_equal(cv2.imread(str(out / row["file"]), cv2.IMREAD_UNCHANGED), x)


@pytest.mark.django_db
def test_export_matches_the_admin_dataset_filter(tmp_path, dataset, admin_client):
    out, _, _ = export(tmp_path, "npz", "data.npz")
    response = admin_client.get(reverse("admin:predictor_drawing_changelist"), {"dataset": "yes"})
    shown = {str(d.id): d.true_label for d in response.context["cl"].result_list}
    with np.load(out) as data:
        assert dict(zip(data["ids"].tolist(), data["y"].tolist())) == shown


@pytest.mark.django_db
def test_missing_or_corrupt_images_are_skipped_and_reported(tmp_path, dataset, make_drawing):
    missing = make_drawing(image="drawings/gone.png", true_label=2)
    corrupt_name = default_storage.save("drawings/corrupt.png", ContentFile(b"\x89PNG\r\n\x1a\n not really"))
    corrupt = make_drawing(image=corrupt_name, true_label=4)

    out, stdout, stderr = export(tmp_path, "npz", "data.npz")

    with np.load(out) as data:
        assert len(data["ids"]) == 3 and str(missing.id) not in data["ids"] and str(corrupt.id) not in data["ids"]
    assert str(missing.id) in stderr and str(corrupt.id) in stderr
    assert "skipped 2" in stdout


@pytest.mark.django_db
def test_empty_dataset_exports_empty_arrays(tmp_path, make_drawing):
    make_drawing()
    out, _, stderr = export(tmp_path, "npz", "empty.npz")
    with np.load(out) as data:
        assert data["x"].shape == (0, 28, 28) and data["y"].shape == (0,) and data["ids"].shape == (0,)
    assert "empty" in stderr


@pytest.mark.django_db
def test_npz_is_written_exactly_at_the_given_path(tmp_path, dataset):
    out, _, _ = export(tmp_path, "npz", "nested/folder/dataset")
    assert out.is_file() and not out.with_name("dataset.npz").exists()
    assert (tmp_path / "nested/folder/dataset.manifest.csv").is_file()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "output_format, make_out",
    [
        ("npz", lambda tmp: tmp),  # a folder where a file is needed
        ("csv", lambda tmp: tmp),
        ("png", lambda tmp: (tmp / "file.txt", (tmp / "file.txt").write_text("x"))[0]),  # a file
        ("png", lambda tmp: (tmp / "full", (tmp / "full").mkdir(), (tmp / "full/old.png").write_text("x"))[0]),
        ("npz", lambda tmp: (tmp / "file.txt", (tmp / "file.txt").write_text("x"))[0] / "data.npz"),
    ],
)
def test_bad_out_is_a_clear_command_error(tmp_path, dataset, output_format, make_out):
    out = make_out(tmp_path)
    with pytest.raises(CommandError, match="--out"):
        call_command("export_dataset", "--out", str(out), "--format", output_format, stdout=io.StringIO())
