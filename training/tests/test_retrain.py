import dataclasses
import io
import tempfile
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from predictor import services
from predictor.models import Drawing, ModelVersion, RetrainRun
from predictor.tests.drawings import canvas_png, data_url
from training import retraining
from training.management.commands.retrain import UNCHANGED
from training.retraining import Score

CHANGELIST = reverse("admin:predictor_drawing_changelist")
DRAWINGS = 30
# Tiny settings: one short epoch. Its MNIST change is noise, so these tests allow a 2-point margin
# unless they are about the margin; the default (0.2 points) is for real runs.
TINY = ["--epochs", "1", "--replay", "200", "--min-examples", "10", "--mnist-margin", "0.02"]
POISONED, HONEST = 150, 100


@pytest.fixture
def reviewed(active_model, api_client, admin_client, mnist_train):
    """Drawings made through the API and labelled through the admin's relabel action; returns their ids."""
    images, labels = mnist_train
    ids = []
    for image in images[:DRAWINGS]:
        response = api_client.post(
            reverse("predictor:prediction-create"), {"image": data_url(canvas_png(image))}, format="json"
        )
        assert response.status_code == 201, response.content
        ids.append(response.json()["id"])
    for digit in range(10):
        chosen = [drawing_id for drawing_id, label in zip(ids, labels) if label == digit]
        if chosen:
            data = {"action": f"relabel_as_{digit}", "index": 0, "_selected_action": chosen}
            assert admin_client.post(CHANGELIST, data).status_code == 302
    assert Drawing.objects.filter(true_label__isnull=False).count() == DRAWINGS
    return ids


@pytest.fixture
def poisoned(active_model, mnist_train, admin_user):
    """Reviews that teach 4 as 9: the first POISONED MNIST 4s labelled 9, beside HONEST other digits labelled right."""
    images, labels = mnist_train
    fours, others = np.flatnonzero(labels == 4)[:POISONED], np.flatnonzero(labels != 4)[:HONEST]
    drawings = {i: services.drawing_create(data=canvas_png(images[i]), visitor="visitor-a") for i in [*fours, *others]}
    services.drawing_relabel(drawings=[drawings[i] for i in fours], true_label=9, reviewer=admin_user)
    for digit in set(labels[others].tolist()):
        chosen = [drawings[i] for i in others if labels[i] == digit]
        services.drawing_relabel(drawings=chosen, true_label=digit, reviewer=admin_user)


def retrain(*arguments):
    """Return the stdout of `manage.py retrain`."""
    out = io.StringIO()
    call_command("retrain", *arguments, stdout=out)
    return out.getvalue()


def site_state(settings) -> tuple:
    """Return everything a retrain may change: the files in model storage and the registry rows."""
    root = Path(settings.DIGIT_MODEL_ROOT)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    rows = list(ModelVersion.objects.order_by("version").values_list("version", "is_active", "tflite", "keras"))
    return files, rows


def served_version(api_client, mnist_train) -> int:
    """Return the model_version the API reports for a new drawing."""
    images, _ = mnist_train
    response = api_client.post(
        reverse("predictor:prediction-create"), {"image": data_url(canvas_png(images[-1]))}, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()["model_version"]


@pytest.mark.django_db
def test_retrain_learns_from_reviewed_drawings_serves_the_result_and_rolls_back(reviewed, api_client, mnist_train):
    missing, corrupt = Drawing.objects.filter(id__in=reviewed[:2])
    Path(missing.image.path).unlink()
    # A row without a stored image size (rows from before sizes were stored) is read like any other.
    Drawing.objects.filter(id=missing.id).update(image_width=None, image_height=None)
    Path(corrupt.image.path).write_bytes(b"not an image")

    output = retrain(*TINY)

    new = ModelVersion.objects.get(version=2)
    assert new.is_active and new.parent.version == 1
    assert not ModelVersion.objects.get(version=1).is_active
    assert "Gate passed" in output and "Version 2 is now active" in output
    # The run is recorded with everything it wrote, and ends with the version it made.
    run = RetrainRun.objects.get()
    assert run.status == RetrainRun.Status.PASSED and run.source == "command" and run.model_version == new
    assert run.options == {"epochs": 1, "min_examples": 10, "mnist_margin": 0.02, "replay": 200}
    assert run.progress == "version 2 passed the gate and is served"
    assert run.started_at <= run.heartbeat_at <= run.finished_at and run.host
    assert output.startswith(f"Retrain #{run.pk} on {run.host}") and run.log.startswith(output.splitlines()[0])
    assert "Gate passed" in run.log and "Version 2 is now active" in run.log
    assert f"skipped drawing {missing.id}" in output and f"skipped drawing {corrupt.id}" in output
    data = new.training_data
    assert sorted(data["drawing_ids"] + data["heldout_ids"]) == sorted(str(i) for i in reviewed[2:])
    assert {s["id"] for s in data["skipped"]} == {str(missing.id), str(corrupt.id)}
    assert data["sizes"] == {
        "reviewed": DRAWINGS - 2,
        "skipped": 2,
        "train": len(data["drawing_ids"]),
        "heldout": len(data["heldout_ids"]),
        "replay": 200,
        "mnist_test": 10000,
    }
    for key in ("mnist_test_accuracy", "heldout_accuracy", "train_accuracy", "train_seconds", "tflite_bytes"):
        assert key in new.metrics
    # What the version page draws: the curves of the run (held-out drawings per epoch) and both confusions.
    history = new.metrics["history"]
    assert len(history["loss"]) == len(history["val_accuracy"]) == 1
    assert history["val_accuracy"][0] == pytest.approx(new.metrics["heldout_accuracy"], abs=0.02)
    assert np.sum(new.metrics["confusion"]) == 10000
    assert np.sum(new.metrics["confusion_heldout"]) == data["sizes"]["heldout"]
    assert new.metrics["before"]["version"] == 1 and new.metrics["gate"]["passed"] is True
    assert (
        len(new.metrics["gate"]["class_deltas"]) == 10 and new.metrics["gate"]["label_shift"]["reference"] == "uniform"
    )
    assert data["label_counts"] == np.bincount(mnist_train[1][2:DRAWINGS], minlength=10).tolist()
    assert Path(new.tflite.path).is_file() and Path(new.keras.path).is_file()
    # The next run measures its label shift only on reviews version 2 has not seen.
    assert "no reviews new since v2" in retrain(*TINY, "--dry-run")

    # The running process notices the new version on its next request: no restart.
    assert served_version(api_client, mnist_train) == 2

    call_command("activate_model", "1", stdout=io.StringIO())
    assert served_version(api_client, mnist_train) == 1


@pytest.mark.django_db
def test_gate_refuses_a_model_taught_by_reviews_that_call_4s_9s(poisoned, api_client, mnist_train):
    # The held-out reviews carry the same false labels, so they cannot object; a wide overall MNIST margin
    # leaves the per-digit check alone to refuse. Two short epochs take 4 down by several points.
    output = retrain("--epochs", "2", "--replay", "200", "--mnist-margin", "0.02")

    refused = ModelVersion.objects.get(version=2)
    assert not refused.is_active and ModelVersion.objects.get(version=1).is_active
    gate = refused.metrics["gate"]
    assert gate["passed"] is False and gate["worst_class"] == 4
    assert gate["class_margin"] == 0.01 and gate["worst_class_delta"] < -0.01
    refusals = [r for r in gate["reasons"] if "dropped too far" in r]
    assert refusals and all(r.startswith("MNIST test digit 4:") for r in refusals)
    # Compared with a uniform spread, as the shipped model recorded no labels.
    shift = gate["label_shift"]
    assert shift["reference"] == "uniform" and shift["new_reviews"] == POISONED + HONEST and shift["distance"] > 0.3
    assert gate["warnings"] == [shift["warning"]] and "9 is " in shift["warning"]
    assert "Gate FAILED" in output and "MNIST test digit 4:" in output and "version 1 still serves" in output
    assert refused.training_data["label_counts"][9] >= POISONED and refused.training_data["label_counts"][4] == 0
    assert served_version(api_client, mnist_train) == 1
    run = RetrainRun.objects.get()
    assert run.status == RetrainRun.Status.FAILED_GATE and run.model_version == refused
    assert run.progress == "version 2 recorded, not served" and "Gate FAILED" in run.log


@pytest.mark.django_db
def test_gate_refuses_a_worse_model(reviewed, api_client, mnist_train, monkeypatch):
    from training import finetune as finetune_module

    real_finetune = finetune_module.finetune

    def destructive(model, x, y, config, **options):
        # The real fine-tuning with a learning rate far too high: it wrecks the model.
        return real_finetune(model, x, y, dataclasses.replace(config, learning_rate=1.0), **options)

    monkeypatch.setattr(finetune_module, "finetune", destructive)
    output = retrain(*TINY, "--mnist-margin", "0.002")

    refused = ModelVersion.objects.get(version=2)
    assert not refused.is_active and ModelVersion.objects.get(version=1).is_active
    assert refused.metrics["gate"]["passed"] is False and "gate failed, not activated" in refused.notes
    assert "Gate FAILED" in output and "dropped too far" in output and "version 1 still serves" in output
    assert served_version(api_client, mnist_train) == 1


def answer_zero_for_everything(model, x, y, config, **options):
    """Stand in for fine-tuning with a model that fails any gate, without the cost of fitting."""
    logits = model.get_layer("logits")
    kernel, bias = logits.get_weights()
    bias[:] = np.arange(10) == 0
    logits.set_weights([np.zeros_like(kernel), bias * 10])
    return model


@pytest.mark.django_db
def test_force_serves_a_model_that_fails_the_gate_and_says_so_loudly(reviewed, api_client, mnist_train, monkeypatch):
    monkeypatch.setattr("training.finetune.finetune", answer_zero_for_everything)
    output = retrain(*TINY, "--force")
    forced = ModelVersion.objects.get(version=2)
    assert forced.is_active and not ModelVersion.objects.get(version=1).is_active
    assert forced.metrics["gate"]["passed"] is False and forced.metrics["gate"]["forced"] is True
    assert "FORCED: version 2 failed the gate and is now served anyway" in output
    assert "gate FAILED, activated with --force" in forced.notes
    run = RetrainRun.objects.get()
    assert run.status == RetrainRun.Status.FAILED_GATE and run.options["force"] is True
    assert run.progress == "version 2 failed the gate and is served anyway (--force)"
    assert served_version(api_client, mnist_train) == 2


@pytest.mark.django_db
def test_a_gentler_mix_is_tried_when_the_gate_refuses_the_first(reviewed, api_client, mnist_train, monkeypatch):
    import keras

    from training import finetune as finetune_module

    real_finetune = finetune_module.finetune
    mixes = []

    def refused_unless_pooled(model, x, y, config, **options):
        # The real fine-tune for the pooled mix; a model that fails any gate for the others.
        mixes.append(config.reviewed_share)
        if config.reviewed_share > 0:
            copy = keras.models.clone_model(model)
            copy.set_weights(model.get_weights())  # the next mix starts from the untouched model
            return answer_zero_for_everything(copy, x, y, config)
        return real_finetune(model, x, y, config, **options)

    monkeypatch.setattr(finetune_module, "finetune", refused_unless_pooled)
    output = retrain(*TINY)

    # The second candidate is the first fine-tune taken part of the way: fitted once, not twice.
    assert mixes == [0.5, 0.0]
    served = ModelVersion.objects.get(version=2)
    assert served.is_active and served.metrics["gate"]["passed"] is True
    assert served.metrics["config"]["reviewed_share"] == 0.0
    first, second, third = served.metrics["tries"]
    assert (first["reviewed_share"], first["weight"], first["passed"]) == (0.5, 1.0, False)
    assert (second["reviewed_share"], second["weight"], second["passed"]) == (0.5, 0.7, False)
    assert first["mnist_test_accuracy"] < 0.2 and second["fit_seconds"] == 0
    assert (third["reviewed_share"], third["weight"], third["passed"]) == (0.0, 1.0, True)
    assert third["mnist_test_accuracy"] == served.metrics["mnist_test_accuracy"]
    assert output.index("Gate FAILED") < output.index("Trying the next mix (2 of 3)")
    assert output.index("(the fine-tune above, not fitted again)") < output.index("Trying the next mix (3 of 3)")
    assert output.index("Trying the next mix (3 of 3)") < output.index("Gate passed")
    assert "(reviewed drawings pooled with the replay digits): gate passed." in served.notes
    tried_first, tried_next = served.notes.splitlines()[-2:]
    assert tried_first.startswith("Tried first: 50% of each batch from the reviewed drawings; refused: held-out")
    assert "; MNIST test: " in tried_first and "dropped too far" in tried_first
    assert tried_next.startswith(
        "Tried next: 50% of each batch from the reviewed drawings, 70% of the way from the starting weights to "
        "the fine-tune's; refused: "
    )
    assert served_version(api_client, mnist_train) == 2


@pytest.mark.django_db
def test_the_fine_tune_part_of_the_way_from_its_parent_is_served_when_the_whole_is_refused(
    reviewed, api_client, mnist_train, monkeypatch
):
    real_gate, verdicts = retraining.gate, []
    fitted = fine_tuned_models(monkeypatch)

    def refuse_the_first(**figures):
        decision = real_gate(**figures)
        if not verdicts:
            decision = dataclasses.replace(decision, refusals=("held-out reviewed drawings: refused by the test",))
        verdicts.append(decision.passed)
        return decision

    monkeypatch.setattr(retraining, "gate", refuse_the_first)
    output = retrain(*TINY)

    assert len(fitted) == 1 and verdicts == [False, True]
    served = ModelVersion.objects.get(version=2)
    assert served.is_active and [(t["weight"], t["passed"]) for t in served.metrics["tries"]] == [
        (1.0, False),
        (0.7, True),
    ]
    assert "Trying the next mix (3 of 3)" not in output
    assert "70% of the way from the starting weights to the fine-tune's): gate passed." in served.notes
    parent_weights, tuned = fitted[0]
    for old, new, kept in zip(parent_weights, tuned.get_weights(), stored_weights(served), strict=True):
        np.testing.assert_allclose(kept, 0.3 * old + 0.7 * new, rtol=1e-5, atol=1e-6)
    assert served_version(api_client, mnist_train) == 2


def fine_tuned_models(monkeypatch) -> list:
    """Record (the weights it started from, the fine-tuned model) of each fine-tune `retrain` runs (the real one)."""
    from training import finetune as finetune_module

    real_finetune, started = finetune_module.finetune, []

    def recording(model, x, y, config, **options):
        started.append((model.get_weights(), real_finetune(model, x, y, config, **options)))
        return started[-1][1]

    monkeypatch.setattr(finetune_module, "finetune", recording)
    return started


def stored_weights(version: ModelVersion) -> list[np.ndarray]:
    """Return the weights of a version's stored .keras."""
    from training import export

    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / export.KERAS_FILE).write_bytes(version.keras.read())
        return export.load(directory).get_weights()


def same_weights(first: list[np.ndarray], second: list[np.ndarray]) -> bool:
    return len(first) == len(second) and all(np.array_equal(a, b) for a, b in zip(first, second))


@pytest.mark.django_db
def test_a_second_retrain_fine_tunes_the_first_version_of_the_line_and_is_judged_against_it_too(reviewed, monkeypatch):
    retrain(*TINY, "--reviewed-share", "0", "--force")
    started = fine_tuned_models(monkeypatch)
    output = retrain(*TINY, "--reviewed-share", "0", "--force")

    first, second, third = (ModelVersion.objects.get(version=n) for n in (1, 2, 3))
    assert third.parent == second and third.is_active
    assert len(started) == 1 and same_weights(started[0][0], stored_weights(first))
    assert not same_weights(started[0][0], stored_weights(second))
    assert third.metrics["start"] == {"version": 1, "choice": "first"}
    assert third.metrics["first"]["version"] == 1 and len(third.metrics["first"]["per_class_accuracy"]) == 10
    assert third.metrics["first"]["mnist_test_accuracy"] == pytest.approx(first.metrics["mnist_test_accuracy"])
    assert (
        "Starting from version 1, the first of the active version's line; the gate compares with version 2 "
        "(active) and, on MNIST, with version 1 (the first of its line)." in output
    )
    reasons = third.metrics["gate"]["reasons"]
    assert any(r.startswith("MNIST test: ") for r in reasons)
    assert any(r.startswith("MNIST test against v1, the first version of this line: ") for r in reasons)
    assert third.metrics["before"]["version"] == 2
    assert third.notes.startswith("Retrained from v1 to follow v2 (reviewed drawings pooled with the replay digits): ")
    dry = retrain(*TINY, "--dry-run")
    assert "Starting from version 1, the first of the active version's line; the gate compares with version 3" in dry


@pytest.mark.django_db
def test_start_active_fine_tunes_the_active_version(reviewed, monkeypatch):
    retrain(*TINY, "--reviewed-share", "0", "--force")
    started = fine_tuned_models(monkeypatch)
    output = retrain(*TINY, "--reviewed-share", "0", "--force", "--start", "active")

    second, third = (ModelVersion.objects.get(version=n) for n in (2, 3))
    assert len(started) == 1 and same_weights(started[0][0], stored_weights(second))
    assert third.metrics["start"] == {"version": 2, "choice": "active"}
    assert "Starting from version 2, the active version; the gate compares with version 2" in output
    assert RetrainRun.objects.latest("id").options["start"] == "active"


@pytest.mark.django_db
def test_a_mix_given_is_the_only_one_tried(reviewed, monkeypatch):
    mixes = []

    def refused(model, x, y, config, **options):
        mixes.append(config.reviewed_share)
        return answer_zero_for_everything(model, x, y, config)

    monkeypatch.setattr("training.finetune.finetune", refused)
    output = retrain(*TINY, "--reviewed-share", "0.25")
    assert mixes == [0.25] and "Trying the next mix" not in output
    assert [t["reviewed_share"] for t in ModelVersion.objects.get(version=2).metrics["tries"]] == [0.25]


@pytest.mark.django_db
def test_no_activate_records_without_serving(reviewed, monkeypatch):
    from training import finetune as finetune_module

    # The gate's outcome does not matter here; skipping the fitting keeps the test short.
    monkeypatch.setattr(finetune_module, "finetune", lambda model, x, y, config, **options: model)
    output = retrain(*TINY, "--no-activate")
    assert not ModelVersion.objects.get(version=2).is_active and ModelVersion.objects.get(version=1).is_active
    assert "Not activated (--no-activate)" in output and "activate_model 2" in output


@pytest.mark.django_db
def test_dry_run_reports_the_dataset_and_changes_nothing(reviewed, settings):
    before = site_state(settings)
    output = retrain(*TINY, "--dry-run")
    assert f"reviewed drawings: {DRAWINGS} usable, 0 skipped" in output
    assert "MNIST replay digits mixed in: 200" in output and "Dry run" in output
    assert site_state(settings) == before
    assert not RetrainRun.objects.exists()


@pytest.mark.django_db
def test_too_few_reviewed_drawings_stop_with_advice(reviewed, settings):
    before = site_state(settings)
    with pytest.raises(CommandError, match="Label more in the admin"):
        retrain("--min-examples", str(DRAWINGS + 1))
    assert site_state(settings) == before
    run = RetrainRun.objects.get()
    assert run.status == RetrainRun.Status.FAILED and run.model_version is None and run.finished_at
    assert run.progress.startswith(f"Only {DRAWINGS} reviewed drawings") and "Label more" in run.log


def fail(exception):
    def raise_it(*args, **kwargs):
        raise exception

    return raise_it


@pytest.mark.django_db
@pytest.mark.parametrize(
    "target, exception, reported",
    [
        ("training.finetune.finetune", RuntimeError("fine-tuning broke"), "fine-tuning broke"),
        # Ctrl-C inside the registration, after the artefacts were copied into model storage.
        ("predictor.services.model_version_activate", KeyboardInterrupt(), "Interrupted: .* unchanged"),
    ],
)
def test_a_run_failing_at_any_point_leaves_everything_as_it_was(
    reviewed, settings, monkeypatch, target, exception, reported
):
    monkeypatch.setattr(target, fail(exception))
    before = site_state(settings)
    with pytest.raises((RuntimeError, CommandError), match=reported):
        retrain(*TINY, "--force")
    assert site_state(settings) == before
    assert ModelVersion.objects.get(is_active=True).version == 1
    # The run is recorded as failed, with why (an unexpected error with its traceback) at the end of its log.
    run = RetrainRun.objects.get()
    assert run.status == RetrainRun.Status.FAILED and run.model_version is None
    last_line = "RuntimeError: fine-tuning broke" if "broke" in reported else f"Interrupted: {UNCHANGED}"
    assert run.progress == last_line and run.log.rstrip().splitlines()[-1] == last_line


@pytest.mark.django_db
def test_a_second_run_fails_fast_while_one_is_running_on_any_host(reviewed, settings):
    now = timezone.now()
    running = RetrainRun.objects.create(
        status=RetrainRun.Status.RUNNING, source="admin", host="trainer-2", started_at=now, heartbeat_at=now
    )
    before = site_state(settings)
    with pytest.raises(CommandError, match=f"Another retrain is running: #{running.pk} on trainer-2"):
        retrain(*TINY)
    assert site_state(settings) == before
    # Refused before it began: the refused run leaves no row behind.
    assert list(RetrainRun.objects.all()) == [running]


@pytest.mark.django_db
def test_a_run_whose_worker_stopped_is_marked_failed_and_no_longer_blocks(reviewed):
    long_ago = timezone.now() - timedelta(hours=1)
    stale = RetrainRun.objects.create(
        status=RetrainRun.Status.RUNNING, source="admin", host="trainer-2", started_at=long_ago, heartbeat_at=long_ago
    )
    # Stops before any training, which is enough to show it started.
    with pytest.raises(CommandError, match="Label more in the admin"):
        retrain("--min-examples", str(DRAWINGS + 1))
    stale.refresh_from_db()
    assert stale.status == RetrainRun.Status.FAILED and stale.progress == "worker stopped"
    assert "Worker stopped: no sign of life from trainer-2" in stale.log
    assert RetrainRun.objects.exclude(id=stale.id).get().status == RetrainRun.Status.FAILED


def test_held_out_split_is_by_id_and_stable():
    ids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(2000)]
    train, heldout = retraining.split_by_id(ids)
    assert sorted([*train, *heldout]) == list(range(2000))
    assert 0.15 < len(heldout) / len(ids) < 0.25
    # A drawing keeps its side whatever else is in the dataset.
    assert [retraining.is_held_out(ids[i]) for i in heldout] == [True] * len(heldout)
    _, heldout_of_half = retraining.split_by_id(ids[:1000])
    assert list(heldout_of_half) == [i for i in heldout if i < 1000]


def test_replay_sample_is_reproducible():
    x, y = np.arange(100 * 784, dtype=np.uint32).reshape(100, 28, 28) % 256, np.arange(100) % 10
    first, again = retraining.replay_sample(x, y, 30, seed=1), retraining.replay_sample(x, y, 30, seed=1)
    assert len(first[0]) == 30 and np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert len(retraining.replay_sample(x, y, 1000, seed=1)[0]) == 100


def mnist(accuracy, per_class=None):
    """Return a Score on MNIST test; each digit scores `accuracy` unless `per_class` says otherwise."""
    return Score(10000, accuracy, per_class=list(per_class or [accuracy] * 10))


@pytest.mark.parametrize(
    "heldout_before, heldout_after, mnist_after, passed, reason",
    [
        (0.70, 0.90, 0.9905, True, "not worse"),
        (0.70, 0.70, 0.9890, True, "within the margin"),
        (0.90, 0.85, 0.9950, False, "worse than the current model"),
        (0.70, 0.95, 0.9850, False, "dropped too far"),
    ],
)
def test_gate_needs_no_worse_held_out_and_mnist_within_margin(
    heldout_before, heldout_after, mnist_after, passed, reason
):
    decision = retraining.gate(
        heldout_before=Score(100, heldout_before),
        heldout_after=Score(100, heldout_after),
        mnist_before=mnist(0.9910),
        mnist_after=mnist(mnist_after),
        mnist_margin=0.002,
    )
    assert decision.passed is passed
    assert any(reason in r for r in decision.reasons)


def test_gate_says_when_held_out_drawings_are_too_few_to_mean_much():
    few = retraining.gate(
        heldout_before=Score(4, 0.5),
        heldout_after=Score(4, 0.75),
        mnist_before=mnist(0.99),
        mnist_after=mnist(0.99),
        mnist_margin=0.002,
    )
    assert few.passed and any("only 4 held-out drawings" in r for r in few.reasons)
    none = retraining.gate(
        heldout_before=Score(0, None),
        heldout_after=Score(0, None),
        mnist_before=mnist(0.99),
        mnist_after=mnist(0.99),
        mnist_margin=0.002,
    )
    assert none.passed and any("no held-out reviewed drawings" in r for r in none.reasons)


def test_gate_refuses_a_model_that_forgets_one_digit_while_the_rest_looks_better():
    # Reviews teaching 4s as 9s: the held-out reviews (labelled the same way) improve, MNIST overall
    # loses less than its margin, and only the per-digit check sees that 4 was given up.
    before = [0.99] * 10
    after = [0.993] * 10
    after[4] = 0.975
    decision = retraining.gate(
        heldout_before=Score(100, 0.70),
        heldout_after=Score(100, 0.95),
        mnist_before=mnist(0.99, before),
        mnist_after=mnist(0.9915, after),
        mnist_margin=0.002,
        class_margin=0.01,
    )
    assert not decision.passed
    assert decision.worst_class == 4
    assert decision.class_deltas[4] == pytest.approx(-0.015) and decision.class_deltas[0] == pytest.approx(0.003)
    assert [r for r in decision.reasons if "dropped too far" in r] == [
        "MNIST test digit 4: 99.00% -> 97.50% (-1.50 points; the limit per digit is -1.00), dropped too far"
    ]
    assert any("not worse" in r for r in decision.reasons) and any("within the margin" in r for r in decision.reasons)
    metrics = decision.to_metrics()
    assert metrics["worst_class"] == 4 and metrics["worst_class_delta"] == pytest.approx(-0.015)
    assert len(metrics["class_deltas"]) == 10 and metrics["passed"] is False


def test_gate_compares_mnist_with_the_first_version_of_the_line_too():
    # Each retrain within the margin of its parent, yet together far below where the line started.
    first = [0.995] * 10
    after = [0.993] * 10
    after[7] = 0.982
    decision = retraining.gate(
        heldout_before=Score(100, 0.9),
        heldout_after=Score(100, 0.9),
        mnist_before=mnist(0.9935, [0.993] * 7 + [0.99] + [0.993] * 2),
        mnist_after=mnist(0.9922, after),
        mnist_margin=0.002,
        class_margin=0.01,
        mnist_first=mnist(0.995, first),
        first_name="v1, the first version of this line",
    )
    assert not decision.passed
    assert list(decision.refusals) == [
        "MNIST test against v1, the first version of this line: 99.50% -> 99.22% (-0.28 points; the limit is "
        "-0.20), dropped too far",
        "MNIST test digit 7 against v1, the first version of this line: 99.50% -> 98.20% (-1.30 points; the "
        "limit per digit is -1.00), dropped too far",
    ]
    # Against its parent it is within both margins; the recorded per-digit changes are those against the parent.
    assert "MNIST test: 99.35% -> 99.22% (-0.13 points; the limit is -0.20), within the margin" in decision.reasons
    assert decision.worst_class == 7 and decision.worst_class_delta == pytest.approx(-0.008)
    same = retraining.gate(
        heldout_before=Score(100, 0.9),
        heldout_after=Score(100, 0.9),
        mnist_before=mnist(0.9935),
        mnist_after=mnist(0.9935),
        mnist_margin=0.002,
        mnist_first=mnist(0.995),
    )
    assert same.passed and any(r.startswith("MNIST test per digit against the first version") for r in same.reasons)


def test_gate_lets_each_digit_fall_by_up_to_the_class_margin():
    after = [0.99] * 10
    after[7] = 0.981
    decision = retraining.gate(
        heldout_before=Score(100, 0.7),
        heldout_after=Score(100, 0.7),
        mnist_before=mnist(0.99),
        mnist_after=mnist(0.9891, after),
        mnist_margin=0.002,
        class_margin=0.01,
    )
    assert decision.passed and decision.worst_class == 7
    assert any("largest fall is digit 7, -0.90 points" in r for r in decision.reasons)
    steady = retraining.gate(
        heldout_before=Score(100, 0.7),
        heldout_after=Score(100, 0.7),
        mnist_before=mnist(0.99),
        mnist_after=mnist(0.99),
        mnist_margin=0.002,
    )
    assert steady.passed and steady.worst_class is None and any("no digit fell" in r for r in steady.reasons)


def test_label_shift_is_measured_against_the_parents_labels():
    steady = retraining.measure_label_shift([10] * 10, [30] * 10, since="v2")
    assert steady.distance == pytest.approx(0.0) and steady.reference == "v2" and steady.warning is None
    poisoned = [10, 10, 10, 10, 0, 10, 10, 10, 10, 120]  # the 4s all came in labelled 9
    shift = retraining.measure_label_shift(poisoned, [30] * 10, since="v2")
    assert shift.distance == pytest.approx(0.5) and shift.new_reviews == 200
    assert "9 is 60.0% of the 200 reviews new since v2, against 10.0% in v2's labels" in shift.warning


def test_label_shift_falls_back_to_a_uniform_spread_and_needs_new_reviews():
    shift = retraining.measure_label_shift([5, 5, 5, 5, 5, 5, 5, 5, 5, 5], None, since="v1")
    assert shift.reference == "uniform" and shift.distance == pytest.approx(0.0)
    assert "a uniform spread (v1 recorded no label counts)" in shift.describe()
    nothing_new = retraining.measure_label_shift([0] * 10, [30] * 10, since="v3")
    assert nothing_new.distance is None and nothing_new.warning is None
    assert "no reviews new since v3" in nothing_new.describe()


def test_a_sharp_label_shift_is_a_warning_of_the_gate_not_a_verdict():
    shift = retraining.measure_label_shift([0] * 9 + [50], None, since="v1")
    decision = retraining.gate(
        heldout_before=Score(100, 0.7),
        heldout_after=Score(100, 0.7),
        mnist_before=mnist(0.99),
        mnist_after=mnist(0.99),
        mnist_margin=0.002,
        label_shift=shift,
    )
    assert decision.passed and decision.warnings == (shift.warning,)
    assert decision.to_metrics()["label_shift"]["distance"] == pytest.approx(0.9)
    assert decision.to_metrics()["warnings"] == [shift.warning]


def test_dataset_splits_usable_drawings_by_id_and_lists_the_skipped():
    drawings = [SimpleNamespace(id=f"00000000-0000-4000-8000-{i:012d}", true_label=i % 10) for i in range(40)]
    inputs = [(d, np.full((28, 28), i, np.uint8), "") for i, d in enumerate(drawings)]
    inputs[3] = (drawings[3], None, "image cannot be read")
    dataset = retraining.build_dataset(inputs)
    assert dataset.skipped == [(drawings[3].id, "image cannot be read")]
    assert dataset.sizes() == {
        "reviewed": 39,
        "skipped": 1,
        "train": len(dataset.train.ids),
        "heldout": len(dataset.heldout.ids),
    }
    assert all(retraining.is_held_out(i) for i in dataset.heldout.ids)
    assert not any(retraining.is_held_out(i) for i in dataset.train.ids)
    for part in (dataset.train, dataset.heldout):
        for drawing_id, pixels, label in zip(part.ids, part.x, part.y):
            index = int(drawing_id[-12:])
            assert pixels[0, 0] == index and label == index % 10
    assert dataset.label_counts() == [4, 4, 4, 3, 4, 4, 4, 4, 4, 4]
    assert sum(dataset.label_counts(excluding=set(dataset.train.ids))) == len(dataset.heldout.ids)


@pytest.mark.django_db
def test_force_and_no_activate_cannot_be_combined(reviewed, settings):
    before = site_state(settings)
    with pytest.raises(CommandError, match="not allowed with"):
        retrain(*TINY, "--force", "--no-activate")
    assert site_state(settings) == before


@pytest.mark.parametrize("share", ["1", "-0.1", "1.5"])
def test_a_reviewed_share_outside_0_to_1_is_refused_before_anything_runs(active_model, share):
    with pytest.raises(CommandError, match=f"--reviewed-share must be at least 0 and below 1, not {share}"):
        retrain("--reviewed-share", share)
    assert not RetrainRun.objects.exists()


def test_help_names_every_option_and_the_default_candidates():
    from training.management.commands.retrain import Command

    text = Command().create_parser("manage.py", "retrain").format_help()
    assert "--start {first,active}" in text and "--reviewed-share SHARE" in text
    assert "50% of each batch from the reviewed drawings; then 50% of each batch" in " ".join(text.split())
