import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from predictor import selectors, services
from predictor.inference import Classifier
from predictor.models import ModelVersion
from training import retraining
from training.config import FinetuneConfig, override
from training.data import load_mnist
from training.evaluate import evaluate
from training.retraining import Score

LOCK_FILE = ".retrain.lock"
PARITY_SIZE = 1000
MAX_SKIPPED_LISTED = 20


class Command(BaseCommand):
    help = (
        "Fine-tune the active model on the reviewed drawings mixed with MNIST digits, record the result as a new "
        "model version and serve it only if it is no worse: not worse on held-out reviewed drawings, and MNIST "
        "test accuracy within a margin. A failed or interrupted run changes nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("--epochs", type=int, help=f"passes over the training mix (default {FinetuneConfig.epochs})")
        parser.add_argument(
            "--replay", type=int, metavar="N", help=f"MNIST training digits mixed in (default {FinetuneConfig.replay_size})"
        )
        parser.add_argument(
            "--min-examples",
            type=int,
            default=settings.DIGIT_RETRAIN_MIN_EXAMPLES,
            help="stop unless at least this many reviewed drawings are usable (default %(default)s)",
        )
        parser.add_argument(
            "--mnist-margin",
            type=float,
            default=settings.DIGIT_RETRAIN_MNIST_MARGIN,
            help="largest allowed drop in MNIST test accuracy, as a fraction (default %(default)s = 0.2 points)",
        )
        parser.add_argument("--seed", type=int, help=f"random seed (default {FinetuneConfig.seed})")
        parser.add_argument("--dry-run", action="store_true", help="report what would be trained on; change nothing")
        parser.add_argument("--no-activate", action="store_true", help="train and record the version, do not serve it")
        parser.add_argument("--force", action="store_true", help="serve the new version even if it fails the gate")

    def handle(self, *args, **options):
        if options["force"] and options["no_activate"]:
            raise CommandError("--force and --no-activate contradict each other; pick one.")
        config = override(FinetuneConfig(), epochs=options["epochs"], replay_size=options["replay"], seed=options["seed"])
        if options["dry_run"]:
            self.prepare(config, options)
            self.stdout.write(self.style.SUCCESS("Dry run: nothing was trained, recorded or activated."))
            return
        try:
            # Held for the whole run, so two runs never start from the same parent or race to register.
            with retraining.exclusive_lock(Path(settings.DIGIT_MODEL_ROOT) / LOCK_FILE):
                self.retrain(config, options)
        except retraining.AlreadyRunning as error:
            raise CommandError(str(error)) from error
        except KeyboardInterrupt:
            # Nothing is recorded before the registration, which rolls itself back: nothing changed.
            raise CommandError("Interrupted: the model registry and the served model are unchanged.") from None

    def prepare(self, config: FinetuneConfig, options: dict) -> tuple[ModelVersion, dict]:
        """Return the active version and the fine-tuning dataset, after reporting both and checking its size."""
        parent = ModelVersion.objects.filter(is_active=True).first()
        if parent is None:
            raise CommandError("No model version is active: register one with `manage.py register_base_model`.")
        dataset = build_dataset()
        sizes = {**dataset["sizes"], "replay": config.replay_size}
        self.stdout.write(f"Active model: version {parent.version}")
        for line in retraining.dataset_summary(sizes, np.bincount(dataset["y"], minlength=10).tolist()):
            self.stdout.write(line)
        for drawing_id, reason in dataset["skipped"][:MAX_SKIPPED_LISTED]:
            self.stdout.write(self.style.WARNING(f"  skipped drawing {drawing_id}: {reason}"))
        if len(dataset["skipped"]) > MAX_SKIPPED_LISTED:
            self.stdout.write(self.style.WARNING(f"  ... and {len(dataset['skipped']) - MAX_SKIPPED_LISTED} more skipped"))
        if sizes["reviewed"] < options["min_examples"]:
            raise CommandError(
                f"Only {sizes['reviewed']} reviewed drawings can be used; retraining needs at least "
                f"{options['min_examples']}. Label more in the admin (Drawings, filter \"Needs review\"), "
                "or lower --min-examples."
            )
        self.stdout.write(
            f"Fine-tuning: {config.epochs} epochs, learning rate {config.learning_rate:g}, "
            f"augmentation {'on' if config.augment else 'off'}, seed {config.seed}"
        )
        return parent, dataset

    def retrain(self, config: FinetuneConfig, options: dict) -> None:
        """Fine-tune, export, evaluate, record and (if it passes the gate) activate a new version."""
        started = time.perf_counter()
        parent, dataset = self.prepare(config, options)
        # TensorFlow loads only now: --help, --dry-run and a too-small dataset answer in a second.
        from training import export
        from training.finetune import finetune

        (x_mnist, y_mnist), (x_test, y_test) = load_mnist()
        train, heldout = dataset["train"], dataset["heldout"]
        replay = retraining.replay_sample(x_mnist, y_mnist, config.replay_size, seed=config.seed)
        sets = {"heldout": heldout, "mnist": {"x": x_test, "y": y_test}, "train": train}

        with tempfile.TemporaryDirectory(prefix="retrain-") as work:
            work = Path(work)
            model = load_keras(parent, work / "parent")
            before = scores(work / "parent" / export.TFLITE_FILE, sets)
            self.stdout.write(f"Training on {len(train['y'])} drawings + {len(replay[1])} MNIST digits ...")
            fit_started = time.perf_counter()
            # A live progress bar on a terminal, one line per epoch in a log.
            model = finetune(model, train["x"], train["y"], config, replay=replay, verbose=1 if sys.stdout.isatty() else 2)
            fit_seconds = time.perf_counter() - fit_started
            try:
                exported = export.save(model, metrics={}, config=config, out_dir=work / "new", parity_images=x_test[:PARITY_SIZE])
            except export.ParityError as error:
                raise CommandError(f"{error} Nothing was recorded; the served model is unchanged.") from error
            # Both models are judged as they are served: through their .tflite, on the same arrays.
            after = scores(work / "new" / export.TFLITE_FILE, sets)

            decision = retraining.gate(
                heldout_before=before["heldout"],
                heldout_after=after["heldout"],
                mnist_before=before["mnist"],
                mnist_after=after["mnist"],
                mnist_margin=options["mnist_margin"],
            )
            self.report(parent, before, after, decision)
            activate = (decision.passed and not options["no_activate"]) or options["force"]
            # Someone may have activated another version by hand meanwhile; the gate compared against the parent.
            if activate and not ModelVersion.objects.filter(id=parent.id, is_active=True).exists():
                activate = False
                self.stdout.write(self.style.WARNING(f"Version {parent.version} is no longer active: not activating."))
            metrics = {
                **exported,
                **accuracies(after),
                "mnist_test_loss": after["mnist"].loss,
                "per_class_accuracy": after["mnist"].per_class,
                "heldout_size": after["heldout"].size,
                "before": {"version": parent.version, **accuracies(before)},
                "gate": {
                    "passed": decision.passed,
                    "forced": bool(options["force"] and not decision.passed),
                    "reasons": list(decision.reasons),
                    "mnist_margin": options["mnist_margin"],
                },
                "fit_seconds": fit_seconds,
                "train_seconds": time.perf_counter() - started,
            }
            version = services.model_version_register(
                tflite_path=work / "new" / export.TFLITE_FILE,
                keras_path=work / "new" / export.KERAS_FILE,
                metrics=metrics,
                parent=parent,
                training_data={
                    "drawing_ids": train["ids"],
                    "heldout_ids": heldout["ids"],
                    "skipped": [{"id": drawing_id, "reason": reason} for drawing_id, reason in dataset["skipped"]],
                    "sizes": {**dataset["sizes"], "replay": len(replay[1]), "mnist_test": len(y_test)},
                },
                notes=notes(parent, decision, activate),
                activate=activate,
            )
        self.conclude(version, parent, decision, activate, options, time.perf_counter() - started)

    def report(self, parent: ModelVersion, before: dict, after: dict, decision: retraining.Decision) -> None:
        """Write the before/after table and the gate's reasons."""
        rows = [
            ("held-out reviewed drawings", before["heldout"], after["heldout"]),
            ("MNIST test", before["mnist"], after["mnist"]),
            ("training part (reviewed)", before["train"], after["train"]),
        ]
        for line in retraining.score_table(rows, before_name=f"v{parent.version}"):
            self.stdout.write(line)
        verdict = "passed" if decision.passed else "FAILED"
        style = self.style.SUCCESS if decision.passed else self.style.ERROR
        self.stdout.write(style(f"Gate {verdict}:"))
        for reason in decision.reasons:
            self.stdout.write(f"  - {reason}")

    def conclude(self, version, parent, decision, activate, options, seconds: float) -> None:
        """Write what was recorded and served, and how to undo it."""
        self.stdout.write(f"Recorded version {version.version} (parent {parent.version}) in {seconds:.0f} s.")
        if activate and not decision.passed:
            self.stdout.write(
                self.style.ERROR(
                    f"FORCED: version {version.version} failed the gate and is now served anyway (--force). "
                    f"To go back: manage.py activate_model {parent.version}"
                )
            )
        elif activate:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Version {version.version} is now active; web workers switch within "
                    f"{settings.DIGIT_MODEL_CHECK_SECONDS:g} s. To go back: manage.py activate_model {parent.version}"
                )
            )
        elif options["no_activate"]:
            self.stdout.write(
                f"Not activated (--no-activate); version {parent.version} still serves. "
                f"To serve the new one: manage.py activate_model {version.version}"
            )
        else:
            self.stdout.write(
                self.style.WARNING(
                    f"Not activated: version {version.version} failed the gate; version {parent.version} still serves. "
                    f"It is kept for inspection (manage.py models); --force would have served it."
                )
            )


def build_dataset() -> dict:
    """Return the reviewed drawings as arrays, split by id into "train" and "heldout", plus "skipped" and "sizes"."""
    ids, images, labels, skipped = [], [], [], []
    drawings = selectors.finetuning_dataset().only("id", "image", "true_label").iterator(chunk_size=500)
    # The stored image through the serving preprocessing, so training sees what serving would see today.
    for drawing, pixels, reason in selectors.drawing_inputs(drawings):
        if pixels is None:
            skipped.append((str(drawing.id), reason))
            continue
        ids.append(str(drawing.id))
        images.append(pixels)
        labels.append(drawing.true_label)
    x = np.stack(images) if images else np.zeros((0, 28, 28), np.uint8)
    y = np.array(labels, dtype=np.uint8)
    train_index, heldout_index = retraining.split_by_id(ids)

    def part(index: np.ndarray) -> dict:
        return {"ids": [ids[i] for i in index], "x": x[index], "y": y[index]}

    train, heldout = part(train_index), part(heldout_index)
    sizes = {"reviewed": len(ids), "skipped": len(skipped), "train": len(train["ids"]), "heldout": len(heldout["ids"])}
    return {"train": train, "heldout": heldout, "skipped": skipped, "sizes": sizes, "y": y}


def load_keras(version: ModelVersion, directory: Path):
    """Return the Keras model of `version`, after copying its .keras and .tflite out of model storage into `directory`."""
    from training import export

    directory.mkdir()
    # Through the storage API rather than a path, so artefacts kept in object storage work too.
    for field, name in ((version.keras, export.KERAS_FILE), (version.tflite, export.TFLITE_FILE)):
        with field.open("rb") as source:
            (directory / name).write_bytes(source.read())
    return export.load(directory)


def scores(tflite: Path, sets: dict[str, dict]) -> dict[str, Score]:
    """Return the Score of the .tflite model on each evaluation set (an empty set has no accuracy)."""
    classifier = Classifier(tflite, num_threads=os.cpu_count() or 1)
    result = {}
    for name, data in sets.items():
        if len(data["y"]) == 0:
            result[name] = Score(0, None)
            continue
        evaluation = evaluate(classifier, data["x"], data["y"])
        result[name] = Score(len(data["y"]), evaluation["accuracy"], evaluation["loss"], evaluation["per_class_accuracy"])
    return result


def accuracies(scores: dict[str, Score]) -> dict[str, float | None]:
    """Return the metrics keys of the accuracies in `scores`."""
    return {
        "heldout_accuracy": scores["heldout"].accuracy,
        "mnist_test_accuracy": scores["mnist"].accuracy,
        "train_accuracy": scores["train"].accuracy,
    }


def notes(parent: ModelVersion, decision: retraining.Decision, activate: bool) -> str:
    """Return the version's notes: its origin, then the gate's verdict and reasons."""
    if activate and not decision.passed:
        outcome = "gate FAILED, activated with --force"
    elif decision.passed:
        outcome = "gate passed" + ("" if activate else ", not activated")
    else:
        outcome = "gate failed, not activated"
    return f"Retrained from v{parent.version}: {outcome}.\n" + "\n".join(decision.reasons)
