import argparse
import contextlib
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper

from predictor import selectors, services
from predictor.models import ModelVersion, RetrainRun
from predictor.tasks import RUN_OPTIONS, RetrainAlreadyQueued, retrain_run_request
from training import retraining, runs
from training.config import FinetuneConfig, override
from training.data import load_mnist
from training.retraining import Dataset, Decision, LabelShift, Mix, Scores

if TYPE_CHECKING:
    import keras

MAX_SKIPPED_LISTED = 20
EPOCH_LINE = re.compile(r"Epoch (\d+)/(\d+)")  # what Keras prints as each epoch begins
UNCHANGED = "the model registry and the served model are unchanged."

START_CHOICES = ("first", "active")  # --start; the first is the default

Item = TypeVar("Item")


@dataclass(frozen=True)
class Anchor:
    """The first version of the active version's line and its MNIST test score (None when it is the active one)."""

    version: ModelVersion
    mnist: "retraining.Score | None"


@dataclass(frozen=True)
class Try:
    """One candidate of a run: its mix and configuration, model, export, scores as served and the gate's decision."""

    mix: Mix
    config: FinetuneConfig
    model: "keras.Model"
    exported: dict[str, Any]  # what training.export.save returned
    after: Scores
    decision: Decision
    fit_seconds: float  # 0 when it reused the fit of an earlier candidate
    directory: Path  # its .keras and .tflite

    def summary(self) -> dict[str, Any]:
        """Return the try as JSON-ready figures for the "tries" part of a version's metrics."""
        return {
            "mix": self.mix.name,
            "reviewed_share": self.mix.reviewed_share,
            "weight": self.mix.weight,
            "passed": self.decision.passed,
            **self.after.accuracies(),
            "worst_class": self.decision.worst_class,
            "worst_class_delta": self.decision.worst_class_delta,
            "fit_seconds": self.fit_seconds,
        }


class Command(BaseCommand):
    help = (
        "Fine-tune the first version of the active version's line on the reviewed drawings mixed with MNIST digits, "
        "record the result as a new model version and serve it only if it is no worse: not worse on held-out "
        "reviewed drawings, and MNIST test accuracy, overall and for each digit, within a margin of the active "
        "version and of that first version. A failed or interrupted run changes nothing. "
        "Each run is recorded as a retrain run (admin: Retrain runs); one runs at a time, on every host."
    )

    # Read once from the options by handle().
    config: FinetuneConfig
    mixes: tuple[Mix, ...]  # the candidates tried in turn, until one passes the gate
    start: str  # which version is fine-tuned: the first version of the active one's line, or the active one
    min_examples: int
    mnist_margin: float
    class_margin: float
    no_activate: bool
    force: bool
    # The run being executed; None for a dry run, which records nothing.
    run: RetrainRun | None = None

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--epochs", type=int, help=f"passes over the training mix (default {FinetuneConfig.epochs})"
        )
        parser.add_argument(
            "--replay",
            type=int,
            metavar="N",
            help=f"MNIST training digits mixed in (default {FinetuneConfig.replay_size})",
        )
        parser.add_argument(
            "--reviewed-share",
            type=float,
            metavar="SHARE",
            help="share of each training batch taken from the reviewed drawings, 0 to 1; 0 pools them with the "
            "replay digits; given, only that mix is tried, as fitted. Default: "
            # argparse formats help with %: the names' "50%" must be written "50%%".
            + "; then ".join(mix.name.replace("%", "%%") for mix in retraining.MIXES)
            + "; each only if the gate refuses the model of the one before",
        )
        # Defaults are None and resolved in handle(), so a run records only the options it was given.
        parser.add_argument(
            "--min-examples",
            type=int,
            help=f"stop unless at least this many reviewed drawings are usable (default {settings.DIGIT_RETRAIN_MIN_EXAMPLES})",
        )
        parser.add_argument(
            "--mnist-margin",
            type=float,
            help="largest allowed drop in MNIST test accuracy, as a fraction "
            f"(default {settings.DIGIT_RETRAIN_MNIST_MARGIN} = {100 * settings.DIGIT_RETRAIN_MNIST_MARGIN:g} points)",
        )
        parser.add_argument(
            "--class-margin",
            type=float,
            help="largest allowed drop in any one digit's MNIST test accuracy, as a fraction "
            f"(default {settings.DIGIT_RETRAIN_CLASS_MARGIN}; 0.01 = 1 point)",
        )
        parser.add_argument("--seed", type=int, help=f"random seed (default {FinetuneConfig.seed})")
        parser.add_argument(
            "--start",
            choices=START_CHOICES,
            help="which version to fine-tune on all the reviews: the first version of the active version's line "
            "(its parent's parent ..., default; every served version is then one fine-tune from it) or the "
            "active version",
        )
        parser.add_argument("--dry-run", action="store_true", help="report what would be trained on; change nothing")
        served = parser.add_mutually_exclusive_group()
        served.add_argument("--no-activate", action="store_true", help="train and record the version, do not serve it")
        served.add_argument("--force", action="store_true", help="serve the new version even if it fails the gate")
        parser.add_argument(
            "--if-new",
            type=int,
            metavar="N",
            help="retrain only if at least N reviews were made since the last run that passed or failed the gate "
            "(and none is queued or running); otherwise say why and exit 0. For cron",
        )
        parser.add_argument(
            "--queue", action="store_true", help="queue the run for the task worker (manage.py db_worker) and return"
        )
        # Not for people: the task worker executes a run it has taken from the queue (training.runs).
        parser.add_argument("--run", type=int, help=argparse.SUPPRESS)

    def handle(self, *args: Any, **options: Any) -> None:
        share = options["reviewed_share"]
        if share is not None and not 0 <= share < 1:
            raise CommandError(f"--reviewed-share must be at least 0 and below 1, not {share:g}.")
        self.config = override(
            FinetuneConfig(), epochs=options["epochs"], replay_size=options["replay"], seed=options["seed"]
        )
        self.mixes = retraining.MIXES if share is None else (Mix(share),)
        self.start = first_given(options["start"], START_CHOICES[0])
        self.min_examples = first_given(options["min_examples"], settings.DIGIT_RETRAIN_MIN_EXAMPLES)
        self.mnist_margin = first_given(options["mnist_margin"], settings.DIGIT_RETRAIN_MNIST_MARGIN)
        self.class_margin = first_given(options["class_margin"], settings.DIGIT_RETRAIN_CLASS_MARGIN)
        self.no_activate = options["no_activate"]
        self.force = options["force"]
        if options["dry_run"]:
            parent = self.prepare()[0]
            self.stdout.write(describe_start(*self.starting_point(parent), parent))
            self.stdout.write(self.style.SUCCESS("Dry run: nothing was trained, recorded or activated."))
            return
        source = "command" if options["if_new"] is None else "schedule"
        if options["if_new"] is not None and not self.enough_new_reviews(options["if_new"]):
            return
        # Options left at their defaults are not recorded (a 0 is a value given, unlike None or False).
        given = {
            name: options[name]
            for name in sorted(RUN_OPTIONS)
            if options[name] is not None and options[name] is not False
        }
        if options["queue"]:
            try:
                run = retrain_run_request(requested_by=None, source=source, options=given)
            except RetrainAlreadyQueued as error:
                raise CommandError(str(error)) from error
            self.stdout.write(
                self.style.SUCCESS(f"Queued retrain #{run.pk}: the task worker (manage.py db_worker) executes it.")
            )
            return
        if options["run"] is not None:
            run = RetrainRun.objects.get(id=options["run"])
            if run.status != RetrainRun.Status.RUNNING:
                raise CommandError(f"Retrain #{run.pk} is not running ({run.get_status_display()}).")
        else:
            try:
                # Refused while another run is running on any host: two runs never start from the same parent.
                run = runs.retrain_run_begin(source=source, options=given)
            except runs.AlreadyRunning as error:
                raise CommandError(str(error)) from error
        self.execute_run(run, echo=options.get("stdout") or sys.stdout)

    def enough_new_reviews(self, wanted: int) -> bool:
        """Return True if at least `wanted` reviews were made since the last finished run and no run is pending."""
        runs.fail_stale_runs()
        pending = RetrainRun.objects.filter(status__in=[RetrainRun.Status.QUEUED, RetrainRun.Status.RUNNING]).first()
        if pending is not None:
            self.stdout.write(f"Retrain #{pending.pk} is {pending.get_status_display()}: not starting another.")
            return False
        new, last = runs.reviews_since_last_run()
        if last is None:
            since = "in all (no run has finished yet)"
        else:
            since = f"since retrain #{last.pk} started ({runs.when(last.started_at)})"
        if new < wanted:
            self.stdout.write(f"{new} new reviews {since}; --if-new asks for {wanted}: not retraining.")
            return False
        self.stdout.write(f"{new} new reviews {since}: retraining.")
        return True

    def execute_run(self, run: RetrainRun, *, echo: TextIO) -> None:
        """Retrain as `run`: what is written goes to its log too, then record how it ended."""
        self.run = run
        log = runs.RunLog(run, echo=echo)
        self.stdout = OutputWrapper(log)
        asked = f", asked for by {run.requested_by.get_username()}" if run.requested_by else ""
        self.stdout.write(f"Retrain #{run.pk} on {run.host} ({run.source}{asked}).")
        try:
            version, decision, activated = self.retrain(run)
        except BaseException as error:
            reason = failure_reason(error)
            log.close()
            # Into the log only: the terminal gets the error from Django as always (or the traceback).
            runs.retrain_run_append(run=run, text=f"{reason}\n")
            last_line = reason.splitlines()[-1] if reason else type(error).__name__
            runs.retrain_run_finish(run=run, status=RetrainRun.Status.FAILED, progress=last_line)
            if isinstance(error, KeyboardInterrupt):
                # Nothing is recorded before the registration, which rolls itself back: nothing changed.
                raise CommandError(f"Interrupted: {UNCHANGED}") from None
            raise
        log.close()
        if activated and not decision.passed:
            outcome = f"version {version.version} failed the gate and is served anyway (--force)"
        elif activated:
            outcome = f"version {version.version} passed the gate and is served"
        else:
            outcome = f"version {version.version} recorded, not served"
        status = RetrainRun.Status.PASSED if decision.passed else RetrainRun.Status.FAILED_GATE
        runs.retrain_run_finish(run=run, status=status, progress=outcome, version=version)

    def step(self, progress: str) -> None:
        """Record the progress of the run and a sign of life (nothing on a dry run)."""
        if self.run is not None:
            runs.retrain_run_beat(run=self.run, progress=progress)

    def reading(self, inputs: Iterable[Item]) -> Iterator[Item]:
        """Yield `inputs`, recording a sign of life every few hundred drawings read."""
        for count, item in enumerate(inputs):
            if count % runs.HEARTBEAT_EVERY == 0:
                self.step(f"reading reviewed drawings: {count}")
            yield item

    def epoch_progress(self, line: str) -> None:
        """Record "epoch 3/5" as the progress when Keras starts an epoch."""
        match = EPOCH_LINE.match(line)
        if match:
            self.step(f"fine-tuning: epoch {match[1]}/{match[2]}")

    def prepare(self) -> tuple[ModelVersion, Dataset, LabelShift]:
        """Return the active version, the fine-tuning dataset and its label shift, after reporting them."""
        parent = ModelVersion.objects.filter(is_active=True).first()
        if parent is None:
            raise CommandError("No model version is active: register one with `manage.py register_base_model`.")
        self.step("reading reviewed drawings")
        # Read into a list first (three small columns a row): on SQLite, a read left open while the
        # heartbeat writes makes that write fail with "database is locked" once a visitor's drawing
        # has been stored meanwhile, whatever the busy timeout.
        drawings = list(selectors.finetuning_dataset().only("id", "image", "true_label"))
        # The stored image through the serving preprocessing, so training sees what serving would see today.
        dataset = retraining.build_dataset(self.reading(selectors.drawing_inputs(drawings)))
        shift = measure_shift_since(parent, dataset)
        self.stdout.write(f"Active model: version {parent.version}")
        for line in retraining.dataset_summary(dataset, replay=self.config.replay_size):
            self.stdout.write(line)
        for drawing_id, reason in dataset.skipped[:MAX_SKIPPED_LISTED]:
            self.stdout.write(self.style.WARNING(f"  skipped drawing {drawing_id}: {reason}"))
        if len(dataset.skipped) > MAX_SKIPPED_LISTED:
            self.stdout.write(self.style.WARNING(f"  ... and {len(dataset.skipped) - MAX_SKIPPED_LISTED} more skipped"))
        self.stdout.write(shift.describe())
        if shift.warning:
            self.stdout.write(self.style.WARNING(f"Warning: {shift.warning}"))
        if dataset.reviewed < self.min_examples:
            raise CommandError(
                f"Only {dataset.reviewed} reviewed drawings can be used; retraining needs at least "
                f'{self.min_examples}. Label more in the admin (Drawings, filter "Needs review"), '
                "or lower --min-examples."
            )
        mix = "; if the gate refuses its model, ".join(mix.name for mix in self.mixes)
        self.stdout.write(
            f"Fine-tuning: {self.config.epochs} epochs, learning rate {self.config.learning_rate:g}, {mix}, "
            f"augmentation {'on' if self.config.augment else 'off'}, seed {self.config.seed}"
        )
        return parent, dataset, shift

    def starting_point(self, parent: ModelVersion) -> tuple[ModelVersion, ModelVersion]:
        """Return (the version to fine-tune, the first version of the line) for the active version `parent`."""
        first = first_of_line(parent)
        return (first if self.start == "first" else parent), first

    def retrain(self, run: RetrainRun) -> tuple[ModelVersion, Decision, bool]:
        """Return the new version, the gate's decision and whether it is served, having fine-tuned, evaluated and recorded it."""
        started = time.perf_counter()
        parent, dataset, shift = self.prepare()
        self.step("loading TensorFlow, MNIST and the active model")
        # TensorFlow loads only now: --help, --dry-run and a too-small dataset answer in a second.
        from training import export

        (x_mnist, y_mnist), (x_test, y_test) = load_mnist()
        replay = retraining.replay_sample(x_mnist, y_mnist, self.config.replay_size, seed=self.config.seed)
        start, first = self.starting_point(parent)

        with tempfile.TemporaryDirectory(prefix="retrain-") as work:
            work = Path(work)
            copies = {version.pk: copy_artefacts(version, work / f"v{version.version}") for version in {parent, first}}
            model = export.load(copies[start.pk])
            self.step(f"scoring version {parent.version}")
            before = retraining.score(copies[parent.pk] / export.TFLITE_FILE, dataset, x_test, y_test)
            first_mnist = None
            if first.pk != parent.pk:
                self.step(f"scoring version {first.version}")
                first_mnist = retraining.score_mnist(copies[first.pk] / export.TFLITE_FILE, x_test, y_test)
            anchor = Anchor(first, first_mnist)
            self.stdout.write(describe_start(start, first, parent))
            self.stdout.write(f"Training on {len(dataset.train.y)} drawings + {len(replay[1])} MNIST digits ...")
            # The strongest mix first: a mix that learns a hand harder can cost MNIST more than the gate
            # allows, and then the next, gentler one is tried (docs/retraining.md measures them).
            tries: list[Try] = []
            fits: dict[float, tuple[keras.Model, float]] = {}  # reviewed share -> (fine-tuned model, fit seconds)
            for number, mix in enumerate(self.mixes, start=1):
                tried = self.fit_and_judge(
                    run,
                    model,
                    mix,
                    fits,
                    dataset,
                    replay,
                    (x_test, y_test),
                    before,
                    anchor,
                    shift,
                    work / f"try-{number}",
                )
                tries.append(tried)
                self.report(parent, before, tried, number=number, of=len(self.mixes))
                if tried.decision.passed:
                    break
            chosen = tries[-1]
            decision = chosen.decision
            activate = (decision.passed and not self.no_activate) or self.force
            superseded = False
            metrics = {
                **chosen.exported,
                **chosen.after.accuracies(),
                "mnist_test_loss": chosen.after.mnist.loss,
                "per_class_accuracy": chosen.after.mnist.per_class,
                # Per epoch: loss and accuracy on the training mix, and on the held-out reviewed drawings.
                "history": epoch_history(chosen.model),
                "confusion": chosen.after.mnist.confusion,
                "confusion_heldout": chosen.after.heldout.confusion,
                "heldout_size": chosen.after.heldout.size,
                "before": {"version": parent.version, **before.accuracies()},
                "start": {"version": start.version, "choice": self.start},
                # The first version of the line, which the gate's MNIST checks compare with too.
                "first": None
                if first_mnist is None
                else {
                    "version": first.version,
                    "mnist_test_accuracy": first_mnist.accuracy,
                    "per_class_accuracy": first_mnist.per_class,
                },
                "gate": {
                    **decision.to_metrics(),
                    "forced": self.force and not decision.passed,
                    "mnist_margin": self.mnist_margin,
                    "class_margin": self.class_margin,
                },
                # Every mix tried, in order; the last is the one recorded here.
                "tries": [tried.summary() for tried in tries],
                "fit_seconds": sum(tried.fit_seconds for tried in tries),
                "train_seconds": time.perf_counter() - started,
            }
            self.step("recording the new version")
            version = services.model_version_register(
                tflite_path=chosen.directory / export.TFLITE_FILE,
                keras_path=chosen.directory / export.KERAS_FILE,
                metrics=metrics,
                parent=parent,
                training_data={
                    "drawing_ids": dataset.train.ids,
                    "heldout_ids": dataset.heldout.ids,
                    "skipped": [{"id": drawing_id, "reason": reason} for drawing_id, reason in dataset.skipped],
                    "sizes": {**dataset.sizes(), "replay": len(replay[1]), "mnist_test": len(y_test)},
                    # What the next run's label shift is measured against.
                    "label_counts": dataset.label_counts(),
                },
                notes=notes(parent, start, tries, activate),
                activate=activate,
                source="retrain",
            )
            # Someone may have activated another version by hand meanwhile (the gate compared against the
            # parent): the registration activates only while the parent is still active, in its transaction.
            if activate and not version.is_active:
                activate, superseded = False, True
        self.conclude(version, parent, decision, activate, superseded, time.perf_counter() - started)
        return version, decision, activate

    def fit_and_judge(
        self,
        run: RetrainRun,
        model: "keras.Model",
        mix: Mix,
        fits: "dict[float, tuple[keras.Model, float]]",
        dataset: Dataset,
        replay: tuple[np.ndarray, np.ndarray],
        test: tuple[np.ndarray, np.ndarray],
        before: Scores,
        anchor: "Anchor",
        shift: LabelShift,
        directory: Path,
    ) -> Try:
        """Return the candidate `mix` of `model`, exported into `directory`, scored as served and gated.

        A mix whose reviewed share was fitted already (in `fits`) reuses that fine-tune; a new fit is added to `fits`.
        """
        from training import export
        from training.finetune import between, finetune

        self.stdout.write(f"Mix: {mix.name}")
        config = override(self.config, reviewed_share=mix.reviewed_share)
        x_test, y_test = test
        fit_seconds = 0.0
        if mix.reviewed_share in fits:
            self.stdout.write("  (the fine-tune above, not fitted again)")
        else:
            fit_started = time.perf_counter()
            # A live progress bar on a terminal, one line per epoch in a log.
            verbose = 1 if sys.stdout.isatty() else 2
            # Keras prints to sys.stdout: its lines go to the run's log too, and each epoch into its progress.
            with (
                runs.RunLog(run, echo=sys.stdout, on_line=self.epoch_progress) as keras_output,
                contextlib.redirect_stdout(keras_output),
            ):
                fitted = finetune(
                    model,
                    dataset.train.x,
                    dataset.train.y,
                    config,
                    replay=replay,
                    # Measured after each epoch for the record (the version page's curves), never chosen on.
                    watch=(dataset.heldout.x, dataset.heldout.y),
                    verbose=verbose,
                )
            fit_seconds = time.perf_counter() - fit_started
            fits[mix.reviewed_share] = (fitted, fit_seconds)
        tuned = fits[mix.reviewed_share][0]
        if mix.weight < 1:
            tuned = between(model, tuned, mix.weight)
        self.step("exporting")
        try:
            exported = export.save(
                tuned, metrics={}, config=config, out_dir=directory, parity_images=x_test[: export.PARITY_SIZE]
            )
        except export.ParityError as error:
            raise CommandError(f"{error} Nothing was recorded; the served model is unchanged.") from error
        # Both models are judged as they are served: through their .tflite, on the same arrays.
        self.step("evaluating the new model")
        after = retraining.score(directory / export.TFLITE_FILE, dataset, x_test, y_test)
        decision = retraining.gate(
            heldout_before=before.heldout,
            heldout_after=after.heldout,
            mnist_before=before.mnist,
            mnist_after=after.mnist,
            mnist_margin=self.mnist_margin,
            class_margin=self.class_margin,
            label_shift=shift,
            mnist_first=anchor.mnist,
            first_name=f"v{anchor.version.version}, the first version of this line",
        )
        return Try(mix, config, tuned, exported, after, decision, fit_seconds, directory)

    def report(self, parent: ModelVersion, before: Scores, tried: Try, *, number: int, of: int) -> None:
        """Write the before/after table of one try, the gate's reasons and its warnings."""
        after, decision = tried.after, tried.decision
        rows = [
            ("held-out reviewed drawings", before.heldout, after.heldout),
            ("MNIST test", before.mnist, after.mnist),
            ("training part (reviewed)", before.train, after.train),
        ]
        for line in retraining.score_table(rows, before_name=f"v{parent.version}"):
            self.stdout.write(line)
        verdict = "passed" if decision.passed else "FAILED"
        style = self.style.SUCCESS if decision.passed else self.style.ERROR
        self.stdout.write(style(f"Gate {verdict}:"))
        for reason in decision.reasons:
            self.stdout.write(f"  - {reason}")
        for warning in decision.warnings:
            self.stdout.write(self.style.WARNING(f"  ! {warning}"))
        if not decision.passed and number < of:
            self.stdout.write(f"Trying the next mix ({number + 1} of {of}).")

    def conclude(
        self,
        version: ModelVersion,
        parent: ModelVersion,
        decision: Decision,
        activate: bool,
        superseded: bool,
        seconds: float,
    ) -> None:
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
        elif superseded:
            # The registration says why, in the same words it adds to the version's notes.
            self.stdout.write(self.style.WARNING(version.not_activated_reason))
        elif self.no_activate:
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


def epoch_history(model: "keras.Model") -> dict[str, list[float]] | None:
    """Return the per-epoch figures Keras kept of the model's last fit, or None if it was not fitted here."""
    fitted = getattr(model, "history", None)
    if fitted is None or not isinstance(getattr(fitted, "history", None), dict):
        return None
    return {key: [float(value) for value in values] for key, values in fitted.history.items()}


def measure_shift_since(parent: ModelVersion, dataset: Dataset) -> LabelShift:
    """Return the label shift of the reviews `parent` was not trained or judged on, from the labels it recorded."""
    recorded = parent.training_data or {}
    seen = {*recorded.get("drawing_ids", ()), *recorded.get("heldout_ids", ())}
    return retraining.measure_label_shift(
        dataset.label_counts(excluding=seen), recorded.get("label_counts"), since=f"v{parent.version}"
    )


def copy_artefacts(version: ModelVersion, directory: Path) -> Path:
    """Return `directory`, after copying the .keras and .tflite of `version` out of model storage into it."""
    from training import export

    directory.mkdir()
    # Through the storage API rather than a path, so artefacts kept in object storage work too.
    for field, name in ((version.keras, export.KERAS_FILE), (version.tflite, export.TFLITE_FILE)):
        with field.open("rb") as source:
            (directory / name).write_bytes(source.read())
    return directory


def first_of_line(version: ModelVersion) -> ModelVersion:
    """Return the first version of `version`'s line: the one it was retrained from, and so on back (itself if none)."""
    ancestors = selectors.model_version_ancestors(version=version)
    return ModelVersion.objects.get(pk=ancestors[-1].pk) if ancestors else version


def describe_start(start: ModelVersion, first: ModelVersion, parent: ModelVersion) -> str:
    """Return the report's line saying which version is fine-tuned and what the gate compares with."""
    if first.pk == parent.pk:
        return f"Starting from version {start.version}, the active version; the gate compares with it."
    which = "the first of the active version's line" if start.pk == first.pk else "the active version"
    return (
        f"Starting from version {start.version}, {which}; the gate compares with version {parent.version} "
        f"(active) and, on MNIST, with version {first.version} (the first of its line)."
    )


def notes(parent: ModelVersion, start: ModelVersion, tries: list[Try], activate: bool) -> str:
    """Return the version's notes: its origin, then the gate's verdict, reasons and warnings, and the mixes refused before."""
    decision = tries[-1].decision
    if activate and not decision.passed:
        outcome = "gate FAILED, activated with --force"
    elif decision.passed:
        outcome = "gate passed" + ("" if activate else ", not activated")
    else:
        outcome = "gate failed, not activated"
    mix = tries[-1].mix.name
    details = [*decision.reasons, *(f"Warning: {warning}" for warning in decision.warnings)]
    for number, tried in enumerate(tries[:-1]):
        details.append(
            f"Tried {'first' if number == 0 else 'next'}: {tried.mix.name}; refused: "
            + "; ".join(tried.decision.refusals)
        )
    origin = f"v{parent.version}" if start.pk == parent.pk else f"v{start.version} to follow v{parent.version}"
    return f"Retrained from {origin} ({mix}): {outcome}.\n" + "\n".join(details)


def first_given(value: Any, default: Any) -> Any:
    """Return `value` unless it is None, else `default`."""
    return default if value is None else value


def failure_reason(error: BaseException) -> str:
    """Return what a run's log says about the exception that ended it (with the traceback if unexpected)."""
    if isinstance(error, KeyboardInterrupt | SystemExit):
        return f"Interrupted: {UNCHANGED}"
    if isinstance(error, CommandError | runs.RunStopped):
        return str(error)
    return "".join(traceback.format_exception(error)).rstrip()
