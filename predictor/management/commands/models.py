from django.core.management.base import BaseCommand

from predictor import selectors


class Command(BaseCommand):
    help = "List the model versions with their metrics, what they were trained on, and which one is active."

    def handle(self, *args, **options):
        stats = selectors.model_version_stats()
        if not stats:
            self.stdout.write("No model versions yet. Register the shipped model with `manage.py register_base_model`.")
            return
        self.stdout.write(
            f"  {'version':<9}{'created':<18}{'parent':<8}{'MNIST test':>11}{'held-out':>10}"
            f"{'trained on':>12}{'live':>16}  notes"
        )
        for row in stats:
            version = row.version
            metrics, sizes = version.metrics, version.training_data.get("sizes", {})
            heldout = metrics.get("heldout_accuracy")
            live = f"{row.accuracy:.1%} of {row.reviewed}" if row.accuracy is not None else "-"
            line = (
                f"{'*' if version.is_active else ' '} {'v' + str(version.version):<9}"
                f"{version.created_at:%Y-%m-%d %H:%M}  {('v' + str(version.parent.version)) if version.parent else '-':<8}"
                f"{_percent(metrics.get('mnist_test_accuracy'), 2):>11}"
                f"{_percent(heldout):>10}"
                f"{sizes.get('train', '-'):>12}{live:>16}  {version.notes.splitlines()[0] if version.notes else ''}"
            )
            self.stdout.write(self.style.SUCCESS(line) if version.is_active else line)
        self.stdout.write(
            "* = active. held-out: accuracy on the reviewed drawings held out from its retraining; "
            "trained on: reviewed drawings in its training part; live: accuracy on reviewed drawings it judged. "
            "Switch with `manage.py activate_model N`."
        )


def _percent(value, digits: int = 1) -> str:
    """Return a share as a percentage, or a dash when it is unknown."""
    return "-" if value is None else f"{100 * value:.{digits}f}%"
