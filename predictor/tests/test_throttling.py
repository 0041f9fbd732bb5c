"""Per-client limits on predictions and feedback: 429 with Retry-After, kept in the shared cache."""

import pytest
from django.core.cache import cache
from rest_framework.throttling import ScopedRateThrottle

from predictor.models import Drawing
from predictor.tests.conftest import data_url

CREATE_URL = "/api/predictions/"


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
    statuses = [
        predict(api_client, digit_png[0], HTTP_X_FORWARDED_FOR=f"203.0.113.{n}").status_code for n in range(4)
    ]
    assert statuses == [201, 201, 429, 429]


@pytest.mark.django_db
def test_behind_a_proxy_the_address_it_saw_is_the_client(
    api_client, active_model, digit_png, rates, settings
):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
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
