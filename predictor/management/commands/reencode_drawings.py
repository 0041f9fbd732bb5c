"""Rewrite every stored drawing image in the canonical form new drawings are stored in (see stored_png)."""

import posixpath
import uuid
from collections import Counter
from functools import partial

from django.core.files.base import ContentFile
from django.core.files.storage import Storage
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from predictor.imagefile import COSTLY_PIXELS_DIVISOR, PreprocessingError, decode_image, stored_png
from predictor.models import Drawing

BATCH_SIZE = 200
# Drawings stored before the limits were lowered were accepted up to 4096x4096 pixels, whatever their
# shape and encoding: they are read with that limit for every kind, so that each of them converts.
LEGACY_MAX_PIXELS = 4096 * 4096


class Command(BaseCommand):
    help = (
        "Re-encode stored drawing images as drawings are stored now: a PNG made from the pixels, without "
        "metadata, at most 2048 px and 256 KB. For each drawing the new file is written first, then the row "
        "is pointed at it, and the old file is deleted once that has committed, so a crash leaves at worst "
        "a file without a row (purge_orphan_files removes it). Files already in that form are left alone; "
        "running the command again converts nothing more. The model input each row keeps is not touched."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--batch-size", type=int, default=BATCH_SIZE, help=f"Rows read per query (default: {BATCH_SIZE})."
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Say what would be converted and the bytes saved; change nothing."
        )

    def handle(self, *args, **options):
        batch_size, dry_run = options["batch_size"], options["dry_run"]
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        storage = Drawing._meta.get_field("image").storage
        self.counts: Counter[str] = Counter()
        after = None
        while True:
            drawings = Drawing.objects.order_by("id")
            if after is not None:
                drawings = drawings.filter(id__gt=after)
            rows = list(drawings.values_list("id", "image")[:batch_size])
            if not rows:
                break
            after = rows[-1][0]
            for drawing_id, name in rows:
                self.counts[self._reencode(storage, drawing_id, name, dry_run=dry_run)] += 1
        self._report(dry_run)

    def _reencode(self, storage: Storage, drawing_id: uuid.UUID, name: str, *, dry_run: bool) -> str:
        """Return what became of one drawing's file: converted, canonical, changed, missing or unreadable."""
        try:
            with storage.open(name, "rb") as stored:
                data = stored.read()
        except OSError as error:
            self.stderr.write(f"Drawing {drawing_id}: image {name!r} cannot be read ({error}); left as it is.")
            return "missing"
        try:
            pixels = decode_image(
                data, max_pixels=COSTLY_PIXELS_DIVISOR * LEGACY_MAX_PIXELS, max_side=LEGACY_MAX_PIXELS
            )
        except PreprocessingError as error:
            self.stderr.write(f"Drawing {drawing_id}: image {name!r} cannot be decoded ({error}); left as it is.")
            return "unreadable"
        png = stored_png(data, pixels)
        if png == data:
            return "canonical"
        self.counts["bytes_before"] += len(data)
        self.counts["bytes_after"] += len(png)
        if dry_run:
            return "converted"
        # Beside the old file; the storage picks another name if this one is taken (an old .png).
        new_name = storage.save(posixpath.join(posixpath.dirname(name), f"{drawing_id}.png"), ContentFile(png))
        try:
            with transaction.atomic():
                # Only if the row still names the old file: it may have been deleted or changed meanwhile.
                updated = Drawing.objects.filter(pk=drawing_id, image=name).update(image=new_name)
                if updated:
                    transaction.on_commit(partial(self._delete_old_file, storage, name))
        except BaseException:
            storage.delete(new_name)
            raise
        if not updated:
            storage.delete(new_name)
            return "changed"
        return "converted"

    def _delete_old_file(self, storage: Storage, name: str) -> None:
        """Delete the old file once its row's change has committed, unless another row still names it."""
        if Drawing.objects.filter(image=name).exists():  # real drawings never share a file; keep it that way
            return
        try:
            storage.delete(name)
        except Exception as error:
            # An orphan now: purge_orphan_files removes it later.
            self.counts["not_deleted"] += 1
            self.stderr.write(f"Could not delete the old file {name}: {error}")

    def _report(self, dry_run: bool) -> None:
        counts = self.counts
        before, after = counts["bytes_before"], counts["bytes_after"]
        verb = "Would re-encode" if dry_run else "Re-encoded"
        self.stdout.write(
            self.style.SUCCESS(
                f"{verb} {counts['converted']} drawing image(s): {before:,} bytes as stored, {after:,} bytes "
                f"re-encoded ({before / 1_000_000:.1f} MB to {after / 1_000_000:.1f} MB); "
                f"{counts['canonical']} already in that form."
            )
        )
        notes = {
            "missing": "could not be read and were left as they are",
            "unreadable": "could not be decoded and were left as they are",
            "changed": "were changed or deleted while being converted and were left as they are",
            "not_deleted": "were converted, but the old file could not be deleted (purge_orphan_files removes it)",
        }
        for key, note in notes.items():
            if counts[key]:
                self.stdout.write(self.style.WARNING(f"{counts[key]} drawing image(s) {note}."))
