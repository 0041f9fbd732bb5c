"""The model versions in the admin: activating (and its confirmation for a failed gate) and the activation history."""

import importlib
import re
from pathlib import Path

import pytest
from django.apps import apps
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group, User
from django.urls import reverse

from predictor import model_cache, services
from predictor.models import ModelActivation, ModelVersion
from predictor.tests.accessibility import blocking_violations
from predictor.tests.drawings import data_url

try:
    from playwright.sync_api import expect
except ImportError:  # reported by the browser fixture (conftest): skipped locally, a failure in CI
    expect = None

CHANGELIST = reverse("admin:predictor_modelversion_changelist")
CONFIRMATION = "admin/predictor/modelversion/activate_failed_gate_confirmation.html"
REASONS = ["held-out reviewed drawings: 80.0% -> 70.0% (worse)", "MNIST test digit 4: dropped 2.1 points"]
PASSWORD = "a long review password"


@pytest.fixture(autouse=True)
def isolated(settings, tmp_path):
    settings.DIGIT_MODEL_CACHE = tmp_path / "model-cache"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def register_copy(version: ModelVersion, **metrics) -> ModelVersion:
    """Return a new inactive version holding a copy of `version`'s artefacts, with these metrics."""
    return services.model_version_register(
        tflite_path=Path(version.tflite.path),
        keras_path=Path(version.keras.path),
        metrics=metrics,
        parent=version,
        activate=False,
    )


@pytest.fixture
def second(active_model):
    return register_copy(active_model, mnist_test_accuracy=0.992, gate={"passed": True, "reasons": []})


@pytest.fixture
def failed(active_model):
    return register_copy(active_model, mnist_test_accuracy=0.97, gate={"passed": False, "reasons": REASONS})


def activate(client, version, **extra):
    data = {"action": "activate_version", "index": 0, "_selected_action": [str(version.id)], **extra}
    return client.post(CHANGELIST, data, follow=True)


def served_version(api_client, digit_png) -> int:
    response = api_client.post("/api/predictions/", {"image": data_url(digit_png[0])}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["model_version"]


def shown_messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


@pytest.mark.django_db
def test_activate_action_switches_the_version_records_who_and_logs_it(admin_client, admin_user, active_model, second):
    response = activate(admin_client, second)
    assert "Version 2 now answers predictions." in shown_messages(response)
    assert list(ModelVersion.objects.filter(is_active=True)) == [second]
    activation = ModelActivation.objects.first()
    assert (activation.model_version, activation.previous, activation.activated_by) == (
        second,
        active_model,
        admin_user,
    )
    assert activation.source == "admin" and activation.note == ""
    assert LogEntry.objects.get(object_id=str(second.id)).get_change_message() == "Activated."

    data = {"action": "activate_version", "index": 0, "_selected_action": [str(active_model.id), str(second.id)]}
    response = admin_client.post(CHANGELIST, data, follow=True)
    assert "Select exactly one version to activate." in shown_messages(response)
    assert "Version 2 is already active; nothing changed." in shown_messages(activate(admin_client, second))
    assert ModelActivation.objects.count() == 2  # the registration's and the admin's

    activate(admin_client, active_model)  # rolling back is the same action
    assert list(ModelVersion.objects.filter(is_active=True)) == [active_model]


@pytest.mark.django_db
def test_activating_a_corrupt_artefact_is_refused_and_every_worker_keeps_serving(
    admin_client, active_model, second, api_client, digit_png, settings
):
    settings.DIGIT_MODEL_CHECK_SECONDS = 0
    stored = Path(second.tflite.path)
    stored.write_bytes(stored.read_bytes()[: stored.stat().st_size // 2])

    response = activate(admin_client, second)
    assert response.status_code == 200
    (message,) = shown_messages(response)
    assert "Model version 2 cannot be loaded: its file v2/model.tflite does not match its recorded SHA-256" in message
    assert "Version 2 was not activated; nothing changed." in message
    assert list(ModelVersion.objects.filter(is_active=True)) == [active_model]
    assert not ModelActivation.objects.filter(model_version=second).exists()
    assert not LogEntry.objects.filter(object_id=str(second.id)).exists()

    assert served_version(api_client, digit_png) == 1
    model_cache.forget_loaded_models()  # and a worker that starts now, on a new host
    assert served_version(api_client, digit_png) == 1


@pytest.mark.django_db
def test_a_version_that_failed_its_gate_asks_for_confirmation_then_activates_with_a_note(
    admin_client, admin_user, active_model, failed
):
    page = activate(admin_client, failed)
    assert page.status_code == 200
    assert [template.name for template in page.templates][0] == CONFIRMATION
    html = page.content.decode()
    assert "Activate version 2, which failed its gate?" in html
    assert "<li>held-out reviewed drawings: 80.0% -&gt; 70.0% (worse)</li>" in html
    assert "<li>MNIST test digit 4: dropped 2.1 points</li>" in html
    assert 'name="confirm_failed_gate" value="yes"' in html and 'name="action" value="activate_version"' in html
    assert list(ModelVersion.objects.filter(is_active=True)) == [active_model]
    assert not ModelActivation.objects.filter(model_version=failed).exists()

    response = activate(admin_client, failed, confirm_failed_gate="yes")
    assert "Version 2 now answers predictions." in shown_messages(response)
    assert list(ModelVersion.objects.filter(is_active=True)) == [failed]
    activation = ModelActivation.objects.get(model_version=failed)
    assert (activation.activated_by, activation.source, activation.previous) == (admin_user, "admin", active_model)
    assert activation.note == "activated although it failed its gate: " + "; ".join(REASONS)
    assert (
        LogEntry.objects.get(object_id=str(failed.id)).get_change_message() == "Activated although it failed its gate."
    )


@pytest.mark.django_db
def test_the_confirmation_of_a_failed_gate_does_not_skip_the_artefact_check(admin_client, active_model, failed):
    Path(failed.tflite.path).write_bytes(b"not a model")
    response = activate(admin_client, failed, confirm_failed_gate="yes")
    assert "cannot be loaded" in shown_messages(response)[0]
    assert list(ModelVersion.objects.filter(is_active=True)) == [active_model]


@pytest.fixture
def reviewer_client(client, db):
    importlib.import_module("predictor.migrations.0002_reviewers_group").create_reviewers_group(apps, None)
    user = User.objects.create_user("reviewer", password=PASSWORD, is_staff=True)
    user.groups.add(Group.objects.get(name="Reviewers"))
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_the_activation_history_is_shown_read_only_on_the_version_page(
    admin_client, active_model, failed, reviewer_client
):
    activate(admin_client, failed, confirm_failed_gate="yes")
    activate(admin_client, active_model)
    url = reverse("admin:predictor_modelversion_change", args=[active_model.id])
    for client in (admin_client, reviewer_client):  # reviewers see the versions, so their history too
        response = client.get(url)
        html = response.content.decode()
        assert response.status_code == 200 and "Activation history" in html
        formset = response.context["inline_admin_formsets"][0]
        rows = [(form.original.source, form.original.previous) for form in formset]
        assert rows == [("admin", failed), ("register", None)]  # newest first
        assert re.search(r'<td class="field-activated_by_name">\s*<p>admin</p>', html)  # plain text, no user link
        assert not formset.has_add_permission and not formset.has_change_permission
        assert not formset.has_delete_permission
        assert 'name="activations-0-note"' not in html  # shown, never a field to edit

    failed_page = admin_client.get(reverse("admin:predictor_modelversion_change", args=[failed.id])).content.decode()
    assert "activated although it failed its gate: held-out reviewed drawings" in failed_page


@pytest.mark.django_db
def test_activations_cannot_be_added_through_the_version_page(admin_client, active_model):
    url = reverse("admin:predictor_modelversion_change", args=[active_model.id])
    data = {"activations-TOTAL_FORMS": "1", "activations-INITIAL_FORMS": "0", "activations-0-source": "admin"}
    assert admin_client.post(url, data).status_code == 403
    assert ModelActivation.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_activating_a_failed_version_in_the_browser_confirms_first_and_every_page_passes_axe(
    browser, live_server, active_model, failed
):
    User.objects.create_superuser("boss", password=PASSWORD)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=live_server.url)
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto("/admin/")
        page.get_by_label("Username").fill("boss")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.goto(CHANGELIST)
        page.get_by_role("checkbox", name="Select this object for an action - v2").check()
        page.get_by_label("Action:").select_option("activate_version")
        page.get_by_role("button", name="Go").click()

        expect(page.get_by_role("heading", name="Activate version 2, which failed its gate?")).to_be_visible()
        expect(page.get_by_role("listitem").filter(has_text="MNIST test digit 4: dropped 2.1 points")).to_be_visible()
        assert blocking_violations(page) == []
        assert not ModelVersion.objects.get(id=failed.id).is_active
        page.get_by_role("button", name="Yes, activate version 2").click()

        expect(page.get_by_text("Version 2 now answers predictions.")).to_be_visible()
        assert ModelVersion.objects.get(is_active=True).id == failed.id
        page.goto(reverse("admin:predictor_modelversion_change", args=[failed.id]))
        expect(page.get_by_role("heading", name="Activation history")).to_be_visible()
        expect(page.get_by_text("activated although it failed its gate")).to_be_visible()
        assert blocking_violations(page) == []
    finally:
        context.close()
    assert errors == []
