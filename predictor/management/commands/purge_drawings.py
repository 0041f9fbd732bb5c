"""Delete the drawings nobody reviewed within the retention period, rows and stored images together."""

import uuid
from collections import Counter
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.core.files.storage import Storage
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.db.models import BooleanField, ExpressionWrapper, Q, QuerySet
from django.utils import timezone

from predictor.models import Drawing, ModelVersion
from predictor.selectors import review_queue_q

BATCH_SIZE = 500
MANIFEST_KEYS = ("drawing_ids", "heldout_ids")


def expired_drawings(*, cutoff: datetime) -> QuerySet[Drawing]:
    """Return the unreviewed drawings created before `cutoff`, oldest first: what retention may delete.

    Unreviewed means no reviewer label and not excluded. Visitor feedback and a place in the review
    queue do not keep a drawing: anyone can put one there. Drawings in a training manifest are not
    filtered out here (see training_manifest_ids).
    """
    return Drawing.objects.filter(created_at__lt=cutoff, true_label__isnull=True, is_excluded=False).order_by(
        "created_at", "id"
    )


def training_manifest_ids() -> set[uuid.UUID]:
    """Return the ids of every drawing a model version was trained or evaluated on (its training_data)."""
    ids = set()
    for training_data in ModelVersion.objects.values_list("training_data", flat=True):
        for key in MANIFEST_KEYS:
            for drawing_id in (training_data or {}).get(key, []):
                try:
                    ids.add(uuid.UUID(str(drawing_id)))
                except ValueError:
                    continue
    return ids


class Command(BaseCommand):
    help = (
        "Delete unreviewed drawings (no reviewer label, not excluded) older than --older-than days, "
        "with their stored images, except those a model version was trained or evaluated on. Rows go "
        "first, in one transaction per batch; their files are deleted once that transaction has "
        "committed, so a crash leaves at worst files without rows (purge_orphan_files removes them)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than",
            type=int,
            default=settings.DIGIT_RETENTION_DAYS,
            metavar="DAYS",
            help=f"Age in days above which an unreviewed drawing is deleted (default: DIGIT_RETENTION_DAYS, "
            f"{settings.DIGIT_RETENTION_DAYS}).",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=BATCH_SIZE,
            help=f"Rows deleted per transaction (default: {BATCH_SIZE}).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be deleted and freed; change nothing."
        )

    def handle(self, *args, **options):
        days, batch_size, dry_run = options["older_than"], options["batch_size"], options["dry_run"]
        if days < 1:
            raise CommandError("--older-than must be at least 1 day.")
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        cutoff = timezone.now() - timedelta(days=days)
        storage = Drawing._meta.get_field("image").storage
        protected = training_manifest_ids()
        candidates = expired_drawings(cutoff=cutoff).annotate(
            in_queue=ExpressionWrapper(review_queue_q(), output_field=BooleanField())
        )
        self.counts: Counter[str] = Counter()
        after = None
        while True:
            with transaction.atomic():
                batch = candidates
                if after is not None:
                    # Keyset paging: rows kept (in a manifest) stay behind, deleted ones are gone.
                    batch = batch.filter(Q(created_at__gt=after[0]) | Q(created_at=after[0], id__gt=after[1]))
                if not dry_run:
                    # Locked until commit, so a reviewer cannot label a drawing as it is being deleted.
                    batch = batch.select_for_update()
                rows = list(batch.values("id", "created_at", "image", "in_queue")[:batch_size])
                if not rows:
                    break
                after = rows[-1]["created_at"], rows[-1]["id"]
                doomed = [row for row in rows if row["id"] not in protected]
                self.counts["protected"] += len(rows) - len(doomed)
                self.counts["rows"] += len(doomed)
                self.counts["in_queue"] += sum(bool(row["in_queue"]) for row in doomed)
                names = {row["image"] for row in doomed if row["image"]}
                if dry_run:
                    self._measure_files(storage, names)
                    continue
                Drawing.objects.filter(pk__in=[row["id"] for row in doomed]).delete()
                # A file another row still names stays (real drawings never share one; keep it that way).
                names -= set(Drawing.objects.filter(image__in=names).values_list("image", flat=True))
                transaction.on_commit(partial(self._delete_files, storage, sorted(names)))
        self._report(cutoff, dry_run)

    def _measure_files(self, storage: Storage, names: set[str]) -> None:
        """Add the number and total size of the stored `names` to the counts; missing ones apart."""
        for name in names:
            try:
                self.counts["bytes"] += storage.size(name)
                self.counts["files"] += 1
            except OSError:
                self.counts["missing"] += 1

    def _delete_files(self, storage: Storage, names: list[str]) -> None:
        """Delete the stored `names` (their rows are committed as deleted), counting what happened."""
        for name in names:
            try:
                storage.delete(name)
                self.counts["files"] += 1
            except FileNotFoundError:
                self.counts["missing"] += 1
            except Exception as error:
                # The row is gone already; the file is an orphan that purge_orphan_files will remove.
                self.counts["failed"] += 1
                self.stderr.write(f"Could not delete {name}: {error}")

    def _report(self, cutoff: datetime, dry_run: bool) -> None:
        counts = self.counts
        verb = "Would delete" if dry_run else "Deleted"
        summary = (
            f"{verb} {counts['rows']} unreviewed drawing(s) created before {cutoff:%Y-%m-%d %H:%M} UTC "
            f"({counts['in_queue']} of them in the review queue) and {counts['files']} stored file(s)"
        )
        if dry_run:
            summary += f", freeing {counts['bytes']:,} bytes ({counts['bytes'] / 1_000_000:.1f} MB)"
        self.stdout.write(self.style.SUCCESS(summary + "."))
        if counts["missing"]:
            self.stdout.write(f"{counts['missing']} file(s) were already missing.")
        if counts["protected"]:
            self.stdout.write(
                f"Kept {counts['protected']} old unreviewed drawing(s) that a model version was trained or "
                "evaluated on."
            )
        if counts["failed"]:
            self.stdout.write(
                self.style.WARNING(
                    f"{counts['failed']} file(s) could not be deleted; `manage.py purge_orphan_files` removes "
                    "them later."
                )
            )
