from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from predictor import services
from predictor.models import ModelVersion


class Command(BaseCommand):
    help = (
        "Serve model version N from now on; this is also the rollback. Running web workers switch to it "
        "within a second or two, without a restart. A version whose file cannot be loaded is refused; one "
        "that failed its promotion gate needs --confirm-failed-gate."
    )

    def add_arguments(self, parser):
        parser.add_argument("version", type=int, help="the version number, as the API reports it in model_version")
        parser.add_argument(
            "--confirm-failed-gate",
            action="store_true",
            help="serve it even though it failed its promotion gate when it was trained (recorded with the activation)",
        )

    def handle(self, *args, **options):
        number = options["version"]
        version = ModelVersion.objects.filter(version=number).first()
        if version is None:
            known = ", ".join(
                str(v) for v in ModelVersion.objects.order_by("version").values_list("version", flat=True)
            )
            raise CommandError(
                f"There is no model version {number}. Known versions: {known or 'none'} (see `manage.py models`)."
            )
        if version.is_active:
            self.stdout.write(f"Version {number} is already active; nothing changed.")
            return
        previous = ModelVersion.objects.filter(is_active=True).values_list("version", flat=True).first()
        try:
            services.model_version_activate(
                version=version, source="command", confirm_failed_gate=options["confirm_failed_gate"]
            )
        except services.FailedGateNotConfirmed as error:
            raise CommandError(
                f"{error} Nothing changed. To serve it anyway: manage.py activate_model {number} --confirm-failed-gate"
            ) from error
        except services.ActivationRefused as error:
            raise CommandError(str(error)) from error
        failures = services.model_version_gate_failures(version=version)
        if failures is not None:
            self.stdout.write(
                self.style.WARNING(
                    f"Version {number} failed its promotion gate when it was trained ("
                    + ("; ".join(failures) or "no reason recorded")
                    + "); it is served because you confirmed it, and the activation records that."
                )
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"Version {number} now answers predictions"
                + (f" (was version {previous}; to undo: manage.py activate_model {previous})" if previous else "")
                + f". Running web workers switch within {settings.DIGIT_MODEL_CHECK_SECONDS:g} s."
            )
        )
