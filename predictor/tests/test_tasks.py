import pytest
from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.auth.models import Group, Permission, User
from django.urls import reverse
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from predictor.models import RetrainRun
from predictor.tasks import retrain_run_request

CHANGELIST = reverse("admin:predictor_retrainrun_changelist")
REQUEST = reverse("admin:predictor_retrainrun_request")
Status = RetrainRun.Status


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def staff_client(client, *codenames):
    """Return `client` logged in as a staff user holding exactly the predictor permissions `codenames`."""
    user = User.objects.create_user("staff", password="a long staff password", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="predictor", codename__in=codenames))
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_retrain_now_queues_a_run_for_staff_with_the_permission(client, django_capture_on_commit_callbacks):
    client = staff_client(client, "view_retrainrun", "start_retrainrun")
    listing = client.get(CHANGELIST)
    assert listing.status_code == 200 and f'href="{REQUEST}"' in listing.content.decode()
    form = client.get(REQUEST)
    assert form.status_code == 200 and 'name="csrfmiddlewaretoken"' in form.content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(REQUEST, {"no_activate": "on"})

    run = RetrainRun.objects.get()
    assert response.status_code == 302 and response.url == reverse("admin:predictor_retrainrun_change", args=[run.pk])
    assert run.status == Status.QUEUED and run.source == "admin" and run.requested_by.username == "staff"
    assert run.options == {"no_activate": True}
    # The task is queued for the worker once the request's transaction has committed.
    task = DBTaskResult.objects.get()
    assert task.task_path == "predictor.tasks.retrain_run_execute" and task.args_kwargs["args"] == [run.pk]
    assert LogEntry.objects.get(object_id=str(run.pk)).action_flag == ADDITION


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["get", "post"])
def test_retrain_now_is_forbidden_without_the_start_permission(client, method):
    client = staff_client(client, "view_retrainrun")
    assert getattr(client, method)(REQUEST).status_code == 403
    assert REQUEST not in client.get(CHANGELIST).content.decode()
    assert not RetrainRun.objects.exists() and not DBTaskResult.objects.exists()


@pytest.mark.django_db
def test_reviewers_may_not_start_a_retrain(client):
    reviewer = User.objects.create_user("reviewer", password="a long review password", is_staff=True)
    reviewer.groups.add(Group.objects.get(name="Reviewers"))
    client.force_login(reviewer)
    assert client.post(REQUEST).status_code == 403
    assert not RetrainRun.objects.exists()


@pytest.mark.django_db
def test_a_second_request_while_one_is_queued_is_refused_with_a_message(admin_client):
    first = retrain_run_request(requested_by=None, source="command", options={})
    response = admin_client.post(REQUEST, follow=True)
    assert response.redirect_chain[-1][0] == CHANGELIST
    assert f"Retrain #{first.pk} is already queued" in response.content.decode()
    assert list(RetrainRun.objects.all()) == [first]


@pytest.mark.django_db
def test_request_refuses_options_the_command_does_not_have():
    with pytest.raises(ValueError, match="Unknown retrain options: shell"):
        retrain_run_request(requested_by=None, source="admin", options={"shell": "rm"})
    with pytest.raises(ValueError, match="cannot be combined"):
        retrain_run_request(requested_by=None, source="admin", options={"force": True, "no_activate": True})
    assert not RetrainRun.objects.exists()


@pytest.mark.django_db
def test_a_run_page_shows_its_log_and_follows_it_only_while_it_is_pending(admin_client):
    now = timezone.now()
    run = RetrainRun.objects.create(
        source="admin",
        status=Status.RUNNING,
        started_at=now,
        heartbeat_at=now,
        host="trainer-2",
        progress="fine-tuning: epoch 3/5",
        log="Epoch 3/5\n<script>alert(1)</script>\n",
    )
    page = admin_client.get(reverse("admin:predictor_retrainrun_change", args=[run.pk])).content.decode()
    assert '<pre class="run-log">Epoch 3/5\n&lt;script&gt;alert(1)&lt;/script&gt;\n</pre>' in page
    assert "Running: fine-tuning: epoch 3/5" in page and "data-run-fields" in page and 'type="module"' in page

    RetrainRun.objects.filter(id=run.pk).update(status=Status.PASSED, finished_at=now, progress="v2 served")
    page = admin_client.get(reverse("admin:predictor_retrainrun_change", args=[run.pk])).content.decode()
    assert "Passed the gate: v2 served" in page and 'type="module"' not in page


@pytest.mark.django_db
def test_runs_are_a_record_nobody_edits_in_the_admin(admin_client):
    run = RetrainRun.objects.create(source="admin")
    assert admin_client.get(reverse("admin:predictor_retrainrun_add")).status_code == 403
    assert (
        admin_client.post(reverse("admin:predictor_retrainrun_delete", args=[run.pk]), {"post": "yes"}).status_code
        == 403
    )
    change = reverse("admin:predictor_retrainrun_change", args=[run.pk])
    admin_client.post(change, {"status": Status.PASSED, "log": "forged"})
    assert RetrainRun.objects.get(id=run.pk).status == Status.QUEUED
    listing = admin_client.get(CHANGELIST).content.decode()
    assert "Retrain now" in listing and "queued" in listing
