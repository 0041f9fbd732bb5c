from dataclasses import replace
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from training import export
from training.config import TrainConfig, override
from training.train import BASE_DIR, run

# --quick: a small slice of MNIST for one epoch, so that a smoke run takes seconds.
QUICK = {"epochs": 1, "train_limit": 600, "synthetic_size": 200, "canvas_val_size": 200, "validation_size": 500}


class Command(BaseCommand):
    help = "Train the digit classifier from MNIST and write model.keras, model.tflite and metrics.json."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--epochs", type=int, help=f"epochs to train (default {TrainConfig.epochs})")
        parser.add_argument(
            "--out", type=Path, default=BASE_DIR, help="artefact directory (default training/artifacts/base)"
        )
        parser.add_argument("--seed", type=int, help=f"random seed (default {TrainConfig.seed})")
        parser.add_argument("--quick", action="store_true", help="smoke run: a small slice for one epoch, in seconds")
        parser.add_argument("--force", action="store_true", help="replace an existing model in --out")
        parser.add_argument("--synthetic-size", type=int, help="canvas-style training renders (0 = none)")
        parser.add_argument("--canvas-val-size", type=int, help="canvas-style validation renders (0 = none)")
        parser.add_argument("--no-augment", action="store_true", help="train without on-the-fly augmentation")

    def handle(self, *args: Any, **options: Any) -> None:
        config = override(TrainConfig(), **QUICK) if options["quick"] else TrainConfig()
        config = override(
            config,
            epochs=options["epochs"],
            seed=options["seed"],
            synthetic_size=options["synthetic_size"],
            canvas_val_size=options["canvas_val_size"],
        )
        if options["no_augment"]:
            config = replace(config, augment=None)
        out: Path = options["out"]
        try:
            metrics = run(config, out, force=options["force"], log=self.stdout.write)
        except (FileExistsError, export.ParityError) as error:
            raise CommandError(str(error)) from error
        self.stdout.write(
            self.style.SUCCESS(f"Model written to {out} (MNIST test accuracy {metrics['mnist_test_accuracy']:.4f}).")
        )
