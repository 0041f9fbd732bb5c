from django.core.management.base import BaseCommand, CommandError

from training import export
from training.train import BASE_DIR, add_arguments, config_from_options, run


class Command(BaseCommand):
    help = "Train the digit classifier from MNIST and write model.keras, model.tflite and metrics.json."

    def add_arguments(self, parser):
        add_arguments(parser)

    def handle(self, *args, **options):
        out = options["out"] or BASE_DIR
        try:
            metrics = run(config_from_options(options), out, force=options["force"], log=self.stdout.write)
        except (FileExistsError, export.ParityError) as error:
            raise CommandError(str(error)) from error
        self.stdout.write(
            self.style.SUCCESS(
                f"Model written to {out} (MNIST test accuracy {metrics['mnist_test_accuracy']:.4f})."
            )
        )
