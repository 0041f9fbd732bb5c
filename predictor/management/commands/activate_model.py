from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from predictor import services
from predictor.inference import Classifier, ModelLoadError
from predictor.models import ModelVersion


class Command(BaseCommand):
    help = (
        "Serve model version N from now on; this is also the rollback. Running web workers switch to it "
        "within a second or two, without a restart."
    )

    def add_arguments(self, parser):
        parser.add_argument("version", type=int, help="the version number, as the API reports it in model_version")

    def handle(self, *args, **options):
        number = options["version"]
        version = ModelVersion.objects.filter(version=number).first()
        if version is None:
            known = ", ".join(str(v) for v in ModelVersion.objects.order_by("version").values_list("version", flat=True))
            raise CommandError(f"There is no model version {number}. Known versions: {known or 'none'} (see `manage.py models`).")
        if version.is_active:
            self.stdout.write(f"Version {number} is already active; nothing changed.")
            return
        # Refuse before switching: a version whose artefact cannot load would take the whole site down.
        try:
            Classifier(version.tflite.path)
        except ModelLoadError as error:
            raise CommandError(f"Version {number} cannot be served: {error}") from error
        gate = version.metrics.get("gate") or {}
        if gate.get("passed") is False:
            self.stdout.write(
                self.style.WARNING(
                    f"Version {number} failed its promotion gate when it was trained: "
                    + "; ".join(gate.get("reasons", []))
                )
            )
        previous = ModelVersion.objects.filter(is_active=True).values_list("version", flat=True).first()
        services.model_version_activate(version=version)
        self.stdout.write(
            self.style.SUCCESS(
                f"Version {number} now answers predictions"
                + (f" (was version {previous}; to undo: manage.py activate_model {previous})" if previous else "")
                + f". Running web workers switch within {settings.DIGIT_MODEL_CHECK_SECONDS:g} s."
            )
        )
