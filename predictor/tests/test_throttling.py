"""Per-client limits: predictions and feedback (429 with Retry-After, in the shared cache), admin logins."""

from datetime import timedelta
from types import SimpleNamespace

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import AnonymousUser, User
from django.core.cache import cache
from django.test import RequestFactory
from rest_framework.throttling import ScopedRateThrottle

from predictor.models import Drawing
from predictor.tests.drawings import data_url
from predictor.throttling import ClientRateThrottle, client_address

CREATE_URL = "/api/predictions/"
LOGIN_URL = "/admin/login/?next=/admin/"
PASSWORD = "a long staff password"


@pytest.fixture
def rates(monkeypatch):
    """Set the throttle rates for one test (DRF reads them once, at import, from the environment's settings)."""
    cache.clear()

    def set_rates(predictions=None, feedback=None):
        monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"predictions": predictions, "feedback": feedback})

    yield set_rates
    cache.clear()


def predict(api_client, png, **extra):
    return api_client.post(CREATE_URL, {"image": data_url(png)}, format="json", **extra)


def assert_throttled(response):
    assert response.status_code == 429, response.content
    assert response.json()["code"] == "throttled"
    assert "available in" in response.json()["detail"]
    assert 1 <= int(response.headers["Retry-After"]) <= 60


@pytest.mark.django_db
def test_predictions_are_limited_per_client_with_retry_after(api_client, active_model, digit_png, rates):
    rates(predictions="3/min")
    answers = [predict(api_client, digit_png[0]) for _ in range(3)]
    assert [answer.status_code for answer in answers] == [201, 201, 201]

    assert_throttled(predict(api_client, digit_png[0]))
    assert Drawing.objects.count() == 3
    assert predict(api_client, digit_png[0], REMOTE_ADDR="198.51.100.7").status_code == 201


@pytest.mark.django_db
def test_a_forged_forwarded_for_header_does_not_escape_the_limit(api_client, active_model, digit_png, rates):
    rates(predictions="2/min")
    statuses = [predict(api_client, digit_png[0], HTTP_X_FORWARDED_FOR=f"203.0.113.{n}").status_code for n in range(4)]
    assert statuses == [201, 201, 429, 429]


@pytest.mark.django_db
def test_behind_a_proxy_the_address_it_saw_is_the_client(api_client, active_model, digit_png, rates, settings):
    settings.DIGIT_PROXIES = 1
    rates(predictions="2/min")
    # The proxy appends the address it saw; anything before it was written by the client.
    forged = [f"203.0.113.{n}, 198.51.100.7" for n in range(3)]
    assert [predict(api_client, digit_png[0], HTTP_X_FORWARDED_FOR=xff).status_code for xff in forged] == [
        201,
        201,
        429,
    ]
    assert predict(api_client, digit_png[0], HTTP_X_FORWARDED_FOR="198.51.100.8").status_code == 201


@pytest.mark.django_db
def test_feedback_has_its_own_limit(api_client, active_model, digit_png, rates):
    rates(feedback="2/min")
    created = predict(api_client, digit_png[0]).json()
    url = f"/api/predictions/{created['id']}/feedback/"
    statuses = [api_client.post(url, {"label": n}, format="json").status_code for n in range(3)]
    assert statuses == [200, 200, 429]
    assert Drawing.objects.get(id=created["id"]).feedback_label == 1
    assert predict(api_client, digit_png[0]).status_code == 201


@pytest.mark.django_db
def test_refused_requests_count_too(api_client, rates):
    rates(predictions="3/min")
    statuses = [api_client.post(CREATE_URL, {"image": "junk!"}, format="json").status_code for _ in range(4)]
    assert statuses == [400, 400, 400, 429]


@pytest.mark.django_db
def test_the_count_is_kept_in_the_shared_cache(api_client, active_model, digit_png, rates):
    rates(predictions="5/min")
    predict(api_client, digit_png[0])
    predict(api_client, digit_png[0])
    # Every worker reads the same entry, so the limit holds however requests are spread over workers.
    history = cache.get("throttle_predictions_127.0.0.1")
    assert len(history) == 2
    cache.set("throttle_predictions_127.0.0.1", history * 3)
    assert_throttled(predict(api_client, digit_png[0]))


@pytest.mark.django_db
def test_without_a_rate_there_is_no_limit(api_client, rates):
    rates()
    statuses = {api_client.post(CREATE_URL, {"image": "junk!"}, format="json").status_code for _ in range(30)}
    assert statuses == {400}


def request_from(remote_addr, forwarded_for=None):
    headers = {"HTTP_X_FORWARDED_FOR": forwarded_for} if forwarded_for else {}
    request = RequestFactory().post(CREATE_URL, REMOTE_ADDR=remote_addr, **headers)
    request.user = AnonymousUser()
    return request


def test_an_ipv4_client_is_its_address_and_an_ipv6_client_its_64():
    assert client_address(request_from("198.51.100.7")) == "198.51.100.7"
    assert client_address(request_from("2001:db8:1:2:aaaa:bbbb:cccc:dddd")) == "2001:db8:1:2::"
    assert client_address(request_from("2001:DB8:1:2::1")) == "2001:db8:1:2::"
    assert client_address(request_from("2001:db8:1:3::1")) == "2001:db8:1:3::"
    assert client_address(request_from("::ffff:198.51.100.7")) == "198.51.100.7"


def test_the_forwarded_for_header_counts_only_as_far_as_the_proxies_go(settings):
    settings.DIGIT_PROXIES = 0
    assert client_address(request_from("198.51.100.7", "203.0.113.1")) == "198.51.100.7"
    settings.DIGIT_PROXIES = 1
    assert client_address(request_from("10.0.0.2", "203.0.113.1, 198.51.100.7")) == "198.51.100.7"
    assert client_address(request_from("10.0.0.2", "2001:db8:1:2::99")) == "2001:db8:1:2::"
    assert client_address(request_from("10.0.0.2")) == "10.0.0.2"
    settings.DIGIT_PROXIES = 2
    assert client_address(request_from("10.0.0.3", "203.0.113.1, 198.51.100.7, 10.0.0.2")) == "198.51.100.7"


@pytest.mark.django_db
def test_every_address_of_an_ipv6_64_shares_one_limit(api_client, active_model, digit_png, rates):
    rates(predictions="2/min")
    same_64 = ["2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:fffe", "2001:db8:1:2::3"]
    assert [predict(api_client, digit_png[0], REMOTE_ADDR=a).status_code for a in same_64] == [201, 201, 429]
    assert predict(api_client, digit_png[0], REMOTE_ADDR="2001:db8:1:3::1").status_code == 201


@pytest.mark.django_db
def test_many_clients_do_not_push_an_early_clients_history_out_of_the_cache(rates):
    # Django's database cache holds 300 entries unless told otherwise, then culls a third of them by
    # key order: this client's key comes first, and its history would be gone.
    rates(predictions="2/min")
    view = SimpleNamespace(throttle_scope="predictions")
    early = request_from("10.0.0.1")
    assert [ClientRateThrottle().allow_request(early, view) for _ in range(3)] == [True, True, False]

    others = [f"198.51.{n // 200}.{n % 200}" for n in range(400)]
    assert all(ClientRateThrottle().allow_request(request_from(address), view) for address in others)

    assert ClientRateThrottle().allow_request(early, view) is False
    assert all(cache.get(f"throttle_predictions_{address}") for address in others)


@pytest.fixture
def staff(db, settings):
    """A superuser; passwords hashed quickly, since every login attempt here checks one."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return User.objects.create_user("staff", password=PASSWORD, is_staff=True, is_superuser=True)


def log_in(client, password, **extra):
    return client.post(LOGIN_URL, {"username": "staff", "password": password}, **extra)


def assert_locked_out(response):
    assert response.status_code == 429
    assert "Too many failed logins" in response.content.decode()
    assert "_auth_user_id" not in response.wsgi_request.session


@pytest.mark.django_db
def test_the_admin_login_works_normally(client, staff):
    response = log_in(client, PASSWORD)
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


@pytest.mark.django_db
def test_after_five_failed_logins_even_the_right_password_is_refused(client, staff):
    answers = [log_in(client, f"guess {n}") for n in range(5)]
    assert [answer.status_code for answer in answers[:4]] == [200] * 4  # the form again, with an error
    assert_locked_out(answers[4])

    assert_locked_out(log_in(client, PASSWORD))
    assert client.get("/admin/").status_code == 302  # to the login page: not logged in
    # Another client is not affected.
    assert log_in(client, PASSWORD, REMOTE_ADDR="198.51.100.7").status_code == 302


@pytest.mark.django_db
def test_the_lockout_ends_after_the_cooling_off_period(client, staff, settings):
    for n in range(5):
        log_in(client, f"guess {n}")
    assert_locked_out(log_in(client, PASSWORD))

    AccessAttempt.objects.update(attempt_time=AccessAttempt.objects.get().attempt_time - timedelta(minutes=16))
    assert log_in(client, PASSWORD).status_code == 302


@pytest.mark.django_db
def test_a_successful_login_clears_earlier_failures(client, staff):
    for n in range(4):
        log_in(client, f"typo {n}")
    assert log_in(client, PASSWORD).status_code == 302
    client.logout()
    assert [log_in(client, f"typo {n}").status_code for n in range(4)] == [200] * 4


@pytest.mark.django_db
def test_failed_logins_are_counted_per_client_as_the_api_counts(client, staff, settings):
    settings.DIGIT_PROXIES = 0
    for n in range(5):  # a forged header changes nothing without a proxy
        log_in(client, "guess", HTTP_X_FORWARDED_FOR=f"203.0.113.{n}")
    assert_locked_out(log_in(client, PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.99"))

    settings.DIGIT_PROXIES = 1
    for n in range(5):  # behind one proxy, only the address it appended counts
        log_in(client, "guess", HTTP_X_FORWARDED_FOR=f"203.0.113.{n}, 2001:db8:7:7::{n + 1}")
    assert_locked_out(log_in(client, PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.99, 2001:db8:7:7:ffff::1"))
    assert log_in(client, PASSWORD, HTTP_X_FORWARDED_FOR="2001:db8:7:8::1").status_code == 302
