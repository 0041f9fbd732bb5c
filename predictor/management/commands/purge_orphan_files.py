"""Remove stored drawing images that no Drawing row refers to (left by a crash between file and row)."""

from collections.abc import Iterator
from datetime import timedelta

from django.core.files.storage import Storage
from django.core.management.base import BaseCommand
from django.utils import timezone

from predictor.models import Drawing

DRAWINGS_FOLDER = "drawings"
BATCH_SIZE = 500


def stored_files(storage: Storage, folder: str) -> Iterator[str]:
    """Yield the name of every file under `folder` in `storage`, depth first (none if there is no folder)."""
    try:
        folders, files = storage.listdir(folder)
    except FileNotFoundError:  # a local folder not made yet; a bucket lists nothing instead
        return
    for name in files:
        yield f"{folder}/{name}"
    for name in folders:
        yield from stored_files(storage, f"{folder}/{name}")


class Command(BaseCommand):
    help = (
        "Delete drawing images that have no Drawing row: what a process killed between writing the file "
        "and committing the row leaves behind. Files younger than --min-age are kept, since a request may "
        "be between those two steps right now."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--min-age",
            type=int,
            default=3600,
            help="Only files older than this many seconds are candidates (default: 3600).",
        )
        parser.add_argument("--dry-run", action="store_true", help="List the orphans without deleting them.")

    def handle(self, *args, **options):
        storage = Drawing._meta.get_field("image").storage
        cutoff = timezone.now() - timedelta(seconds=options["min_age"])
        orphans, batch, listed = [], [], 0
        # Listed, never tested with exists(): a bucket has no folder objects for exists() to find.
        for name in stored_files(storage, DRAWINGS_FOLDER):
            listed += 1
            batch.append(name)
            if len(batch) == BATCH_SIZE:
                orphans += self._orphans(batch, storage, cutoff)
                batch = []
        if not listed:
            self.stdout.write("No stored drawings.")
            return
        orphans += self._orphans(batch, storage, cutoff)

        verb = "Would delete" if options["dry_run"] else "Deleted"
        for name in orphans:
            if not options["dry_run"]:
                storage.delete(name)
            self.stdout.write(f"{verb} {name}", self.style.WARNING)
        self.stdout.write(self.style.SUCCESS(f"{verb} {len(orphans)} orphan file(s)."))

    def _orphans(self, names: list[str], storage: Storage, cutoff) -> list[str]:
        """Return those of `names` that no row refers to and that were last modified before `cutoff`."""
        referenced = set(Drawing.objects.filter(image__in=names).values_list("image", flat=True))
        return [name for name in names if name not in referenced and storage.get_modified_time(name) < cutoff]
