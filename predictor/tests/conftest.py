"""Fixtures of the serving app's tests that the training tests do not need: the admin's users and drawings."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def mixed(make_drawing):
    """One drawing of each kind a reviewer meets, by name."""
    return {
        "unsure": make_drawing(predicted_label=3, confidence=0.41),
        "sure": make_drawing(predicted_label=1, confidence=0.99),
        "disputed": make_drawing(predicted_label=7, confidence=0.97, feedback_label=1),
        "agreed": make_drawing(predicted_label=2, confidence=0.9, feedback_label=2),
        "relabelled": make_drawing(predicted_label=5, confidence=0.6, true_label=6),
        "confirmed": make_drawing(predicted_label=4, confidence=0.85, true_label=4),
        "excluded": make_drawing(predicted_label=0, confidence=0.3, is_excluded=True),
        "old": make_drawing(predicted_label=8, confidence=0.7, created_at=timezone.now() - timedelta(days=30)),
    }


@pytest.fixture
def reviewer(db):
    user = User.objects.create_user("reviewer", password="a long review password", is_staff=True)
    user.groups.add(Group.objects.get(name="Reviewers"))
    return user


@pytest.fixture
def reviewer_client(client, reviewer):
    client.force_login(reviewer)
    return client
