"""`manage.py reencode_drawings`: files stored as submitted become the canonical PNG, one row at a time, safely."""

import io
import struct
import uuid
import zlib

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, InMemoryStorage, default_storage
from django.core.management import CommandError, call_command
from django.db.models import QuerySet
from PIL import Image

from predictor import services
from predictor.imagefile import decode_image, image_header, stored_png
from predictor.models import Drawing
from predictor.tests.drawings import WHITE, draw, encode


def with_text_chunk(png, size):
    body = b"Comment\x00" + b"my secret " * (size // 10)
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    return png[:33] + chunk + png[33:]


def exif_jpeg():
    exif = Image.Exif()
    exif[0x010E] = "secret description"
    return encode(draw("7", (800, 600), background=WHITE).convert("RGB"), "JPEG", quality=90, exif=exif.tobytes())


OLD_FILES = {
    "jpg": exif_jpeg,
    "png": lambda: with_text_chunk(encode(draw(background=WHITE)), 500_000),
    "webp": lambda: encode(draw("0", (1200, 1200)), "WEBP", lossless=True),
}


@pytest.fixture
def stored_as_submitted(make_drawing):
    """Return a function that makes a drawing whose file is `data` as it was once stored, byte for byte."""

    def make(data, extension, size=None):
        drawing_id = uuid.uuid4()
        name = default_storage.save(f"drawings/2025/01/02/{drawing_id}.{extension}", ContentFile(data))
        width, height = size or image_header(data)[1:]
        return make_drawing(id=drawing_id, image=name, image_width=width, image_height=height)

    return make


@pytest.fixture
def reencode(django_capture_on_commit_callbacks):
    """Return a function that runs the command and its after-commit deletions; gives (stdout, stderr)."""

    def run(*args):
        out, err = io.StringIO(), io.StringIO()
        with django_capture_on_commit_callbacks(execute=True):
            call_command("reencode_drawings", *args, stdout=out, stderr=err)
        return out.getvalue(), err.getvalue()

    return run


def read(name):
    with default_storage.open(name, "rb") as stored:
        return stored.read()


@pytest.mark.django_db
def test_files_stored_as_submitted_become_canonical_pngs_and_the_old_files_go(stored_as_submitted, reencode):
    old = {ext: (stored_as_submitted(make(), ext), make()) for ext, make in OLD_FILES.items()}
    out, err = reencode()
    assert "Re-encoded 3 drawing image(s)" in out and err == ""
    for ext, (drawing, data) in old.items():
        converted = Drawing.objects.get(id=drawing.id)
        assert converted.image.name.startswith("drawings/2025/01/02/") and converted.image.name.endswith(".png")
        stored = read(converted.image.name)
        assert stored == stored_png(data, decode_image(data))
        assert b"secret" not in stored
        assert not default_storage.exists(drawing.image.name), ext
        # What the model saw and the submitted size stay as they were.
        assert bytes(converted.input_pixels) == bytes(drawing.input_pixels)
        assert (converted.image_width, converted.image_height) == (drawing.image_width, drawing.image_height)
    assert image_header(read(Drawing.objects.get(id=old["webp"][0].id).image.name))[1:] == (1200, 1200)


@pytest.mark.django_db
def test_a_second_run_and_new_drawings_need_nothing(active_model, reencode):
    services.drawing_create(data=encode(draw()), visitor="v")
    old = services.drawing_create(data=exif_jpeg(), visitor="v")
    name = default_storage.save(f"drawings/2025/01/02/{old.id}.jpg", ContentFile(exif_jpeg()))
    Drawing.objects.filter(id=old.id).update(image=name)  # as it was stored before
    assert "Re-encoded 1 drawing image(s)" in reencode()[0]
    names = set(Drawing.objects.values_list("image", flat=True))
    out, _ = reencode()
    assert "Re-encoded 0 drawing image(s)" in out and "2 already in that form" in out
    assert set(Drawing.objects.values_list("image", flat=True)) == names


@pytest.mark.django_db
def test_dry_run_says_what_would_change_and_changes_nothing(stored_as_submitted, reencode):
    drawings = [stored_as_submitted(make(), ext) for ext, make in OLD_FILES.items()]
    out, _ = reencode("--dry-run")
    assert "Would re-encode 3 drawing image(s)" in out and " MB to " in out
    for drawing in drawings:
        assert Drawing.objects.get(id=drawing.id).image.name == drawing.image.name
        assert default_storage.exists(drawing.image.name)
    assert len(default_storage.listdir("drawings/2025/01/02")[1]) == 3


@pytest.mark.django_db
def test_rows_are_read_in_batches(stored_as_submitted, reencode):
    for _ in range(5):
        stored_as_submitted(exif_jpeg(), "jpg")
    out, _ = reencode("--batch-size", "2")
    assert "Re-encoded 5 drawing image(s)" in out
    assert all(name.endswith(".png") for name in Drawing.objects.values_list("image", flat=True))
    with pytest.raises(CommandError, match="at least 1"):
        reencode("--batch-size", "0")


@pytest.mark.django_db
def test_missing_and_undecodable_files_are_reported_and_left_alone(stored_as_submitted, make_drawing, reencode):
    missing = make_drawing(image="drawings/2025/01/02/gone.png")
    broken = stored_as_submitted(b"\x89PNG\r\n\x1a\n" + bytes(100), "png", size=(280, 280))
    good = stored_as_submitted(exif_jpeg(), "jpg")
    out, err = reencode()
    assert "Re-encoded 1 drawing image(s)" in out
    assert "1 drawing image(s) could not be read" in out and "1 drawing image(s) could not be decoded" in out
    assert str(missing.id) in err and str(broken.id) in err
    assert Drawing.objects.get(id=missing.id).image.name == missing.image.name
    assert Drawing.objects.get(id=broken.id).image.name == broken.image.name and default_storage.exists(
        broken.image.name
    )
    assert Drawing.objects.get(id=good.id).image.name.endswith(".png")


@pytest.mark.django_db
def test_a_failed_row_update_keeps_the_old_file_and_removes_the_new(stored_as_submitted, reencode, monkeypatch):
    drawing = stored_as_submitted(exif_jpeg(), "jpg")

    def fail(self, **fields):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(QuerySet, "update", fail)
    with pytest.raises(RuntimeError):
        reencode()
    assert Drawing.objects.get(id=drawing.id).image.name == drawing.image.name
    assert default_storage.listdir("drawings/2025/01/02")[1] == [drawing.image.name.rsplit("/", 1)[1]]


@pytest.mark.django_db
def test_a_row_deleted_while_its_file_is_converted_leaves_no_file(stored_as_submitted, reencode, monkeypatch):
    drawing = stored_as_submitted(exif_jpeg(), "jpg")
    save = FileSystemStorage.save

    def save_then_lose_the_row(self, name, content, **kwargs):
        Drawing.objects.filter(id=drawing.id).delete()  # as purge_drawings could, at this moment
        return save(self, name, content, **kwargs)

    monkeypatch.setattr(FileSystemStorage, "save", save_then_lose_the_row)
    out, _ = reencode()
    assert "1 drawing image(s) were changed or deleted while being converted" in out
    assert default_storage.listdir("drawings/2025/01/02")[1] == [drawing.image.name.rsplit("/", 1)[1]]


@pytest.mark.django_db
def test_it_works_through_the_storage_api_alone(settings, stored_as_submitted, reencode):
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "django.core.files.storage.InMemoryStorage"}}
    storage = Drawing._meta.get_field("image").storage
    assert isinstance(storage, InMemoryStorage)  # its files are in memory alone: a path on disk names nothing
    drawing = stored_as_submitted(exif_jpeg(), "jpg")
    out, _ = reencode()
    assert "Re-encoded 1 drawing image(s)" in out
    converted = Drawing.objects.get(id=drawing.id)
    assert not storage.exists(drawing.image.name)
    assert image_header(read(converted.image.name)) == ("png", 800, 600)


@pytest.mark.django_db
def test_a_file_two_rows_name_is_deleted_only_when_neither_does(make_drawing, reencode):
    name = default_storage.save("drawings/2025/01/02/shared.jpg", ContentFile(exif_jpeg()))
    first, second = make_drawing(image=name), make_drawing(image=name)
    reencode("--batch-size", "1")
    first_name = Drawing.objects.get(id=first.id).image.name
    second_name = Drawing.objects.get(id=second.id).image.name
    assert first_name.endswith(".png") and second_name.endswith(".png") and first_name != second_name
    assert read(first_name) == read(second_name)
    assert not default_storage.exists(name)


@pytest.mark.django_db
def test_a_file_larger_than_what_is_accepted_now_is_scaled_to_the_largest_side(stored_as_submitted, reencode):
    legacy = stored_as_submitted(encode(draw("7", (4000, 1000), background=WHITE), compress_level=1), "png")
    reencode()
    assert image_header(read(Drawing.objects.get(id=legacy.id).image.name)) == ("png", 2048, 512)
