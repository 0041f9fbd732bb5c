from django.core.management.base import BaseCommand

from predictor import services
from predictor.models import ModelVersion
from training import files


class Command(BaseCommand):
    help = "Register the shipped base model as version 1 and make it active (does nothing once any version exists)."

    def handle(self, *args, **options):
        if ModelVersion.objects.exists():
            self.stdout.write("A model version is already registered; nothing to do.")
            return
        metrics = files.read_metrics(files.BASE_DIR)
        version = services.model_version_register(
            tflite_path=files.BASE_DIR / files.TFLITE_FILE,
            keras_path=files.BASE_DIR / files.KERAS_FILE,
            metrics=metrics,
            notes="The shipped base model, trained on MNIST by `manage.py train`.",
            activate=True,
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"Registered the shipped model as version {version.version} "
                f"(MNIST test accuracy {metrics['mnist_test_accuracy']:.2%}) and made it active."
            )
        )
