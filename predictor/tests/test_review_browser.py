"""Browser test of the review loop: a visitor says a prediction is wrong, a reviewer relabels it in the admin."""

import importlib
import json

import pytest
from django.apps import apps
from django.conf import settings
from django.contrib.auth.models import Group, User

from predictor.models import Drawing, ModelVersion
from predictor.tests.accessibility import blocking_violations

try:
    from playwright.sync_api import expect
except ImportError:  # reported by the browser fixture (conftest): skipped locally, a failure in CI
    expect = None

PASSWORD = "a long review password"
BASE_METRICS = settings.BASE_DIR / "training" / "artifacts" / "base" / "metrics.json"
# A "1" in canvas units (0..1 of the width and height): one slightly slanted stroke.
ONE = [(0.53, 0.18), (0.5, 0.5), (0.47, 0.82)]


@pytest.fixture
def reviewer(transactional_db):
    """A staff user in the Reviewers group, made by the group's own migration code.

    Other live-server tests empty the database after themselves, data migrations included.
    """
    migration = importlib.import_module("predictor.migrations.0002_reviewers_group")
    migration.create_reviewers_group(apps, None)
    user = User.objects.create_user("reviewer", password=PASSWORD, is_staff=True)
    user.groups.add(Group.objects.get(name="Reviewers"))
    return user


@pytest.fixture
def new_page(browser, live_server):
    """Return a function opening a page in its own browser context (own cookies); script errors fail the test."""
    contexts, errors = [], []

    def open_page(width=1280, height=900):
        context = browser.new_context(viewport={"width": width, "height": height}, base_url=live_server.url)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.on("pageerror", lambda error: errors.append(str(error)))
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert errors == []


def log_in(page, username):
    page.goto("/admin/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()


def draw(page, stroke):
    """Draw one stroke with the mouse in small steps, as a hand would."""
    box = page.locator('[data-role="canvas"]').bounding_box()
    points = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke]
    page.mouse.move(*points[0])
    page.mouse.down()
    for point in points[1:]:
        page.mouse.move(*point, steps=15)
    page.mouse.up()


@pytest.mark.django_db(transaction=True)
def test_visitor_says_wrong_and_a_reviewer_relabels_it_from_the_queue(new_page, active_model, reviewer):
    visitor = new_page()
    visitor.goto("/")
    draw(visitor, ONE)
    visitor.locator('[data-action="predict"]').click()
    expect(visitor.locator('[data-role="verdict"]')).to_have_attribute("data-state", "result")
    visitor.get_by_role("group", name="Wrong").get_by_role("button", name="3", exact=True).click()
    expect(visitor.locator('[data-role="feedback-status"]')).to_have_text("Thanks — noted as a 3.")
    drawing = Drawing.objects.get()
    assert drawing.feedback_label == 3 and drawing.predicted_label != 3 and drawing.true_label is None

    admin = new_page()
    log_in(admin, "reviewer")
    admin.get_by_role("link", name="Review queue").first.click()
    expect(admin.get_by_role("heading", name="Select drawing to change")).to_be_visible()

    row = admin.locator("#result_list tbody tr").filter(has=admin.locator(f'a[href*="{drawing.id}"]'))
    expect(row).to_have_count(1)
    expect(row).to_contain_text("✗ 3")
    row.locator('select[name$="-true_label"]').select_option("3")
    admin.get_by_role("button", name="Save", exact=True).click()
    expect(admin.locator(".messagelist")).to_contain_text("was changed successfully")
    expect(admin.locator(f'#result_list a[href*="{drawing.id}"]')).to_have_count(0)

    drawing.refresh_from_db()
    assert (drawing.true_label, drawing.reviewed_by, drawing.is_excluded) == (3, reviewer, False)
    assert drawing.reviewed_at is not None


@pytest.mark.django_db(transaction=True)
def test_reviewer_clears_the_queue_with_the_keyboard(new_page, make_drawing, reviewer):
    sure_but_disputed = make_drawing(predicted_label=4, confidence=0.97, feedback_label=9)
    unsure = make_drawing(predicted_label=1, confidence=0.35)
    scribble = make_drawing(predicted_label=8, confidence=0.2)
    make_drawing(predicted_label=2, confidence=0.99)  # sure and undisputed: not in the queue

    admin = new_page()
    log_in(admin, "reviewer")
    admin.goto("/admin/predictor/drawing/?review=needed")
    expect(admin.locator("#result_list tbody tr")).to_have_count(3)
    for key in ("9", "x", "c", "s"):  # disputed first, then least confident: the 4, the scribble, the unsure 1
        admin.keyboard.press(key)
    expect(admin.locator(".messagelist")).to_contain_text("3 drawings were changed successfully")
    expect(admin.locator("#result_list")).to_have_count(0)

    labels = {d.id: (d.true_label, d.is_excluded, d.reviewed_by_id) for d in Drawing.objects.all()}
    assert labels[scribble.id] == (None, True, reviewer.id)
    assert labels[unsure.id] == (1, False, reviewer.id)
    assert labels[sure_but_disputed.id] == (9, False, reviewer.id)


@pytest.fixture
def superuser(transactional_db):
    return User.objects.create_superuser("admin", password=PASSWORD)


@pytest.fixture
def queue(make_drawing):
    """A review queue of three drawings, with the longest values a row shows, and one sure drawing."""
    drawings = [
        make_drawing(predicted_label=4, confidence=0.97, feedback_label=9),
        make_drawing(predicted_label=1, confidence=0.35, feedback_label=1),
        make_drawing(predicted_label=8, confidence=0.2),
    ]
    make_drawing(predicted_label=2, confidence=0.99)
    return drawings


@pytest.mark.django_db(transaction=True)
def test_shortcuts_keep_working_after_a_row_is_ticked(new_page, queue, reviewer):
    disputed, unsure, scribble = queue
    admin = new_page()
    log_in(admin, "reviewer")
    admin.goto("/admin/predictor/drawing/?review=needed")
    rows = admin.locator("#result_list tbody tr")
    expect(rows).to_have_count(3)

    # Disputed first, then the least confident: the 4, the scribble, the unsure 1. Tick the scribble's row,
    # which leaves the focus on its checkbox.
    rows.nth(1).locator("input.action-select").check()
    expect(admin.locator(".action-counter")).to_have_text("1 of 3 selected")
    expect(rows.nth(1)).to_have_class("review-current selected")
    for key in ("7", "x"):  # label the ticked row, then the next one
        admin.keyboard.press(key)
    expect(rows.nth(1).locator("select")).to_have_value("7")
    expect(rows.nth(2).locator(".field-is_excluded input")).to_be_checked()
    admin.keyboard.press("ArrowUp")
    admin.keyboard.press("ArrowUp")
    admin.keyboard.press("9")
    admin.keyboard.press("s")
    expect(admin.locator(".messagelist")).to_contain_text("3 drawings were changed successfully")

    labels = {d.id: (d.true_label, d.is_excluded) for d in Drawing.objects.filter(reviewed_by=reviewer)}
    assert labels == {disputed.id: (9, False), scribble.id: (7, False), unsure.id: (None, True)}


def layout(page) -> dict:
    """Return where the queue's last column, its scrolling box, the filters and the window end, in pixels."""
    return page.evaluate(
        """() => {
          const last = document.querySelector("#result_list thead th:last-child").getBoundingClientRect();
          const results = document.querySelector("#changelist .results");
          const filters = document.querySelector("#changelist-filter").getBoundingClientRect();
          return {
            last: last.right, lastWidth: last.width, results: results.getBoundingClientRect().right,
            hiddenByScrolling: results.scrollWidth - results.clientWidth,
            filters: filters.left, filtersWidth: filters.width, window: document.documentElement.clientWidth,
          };
        }"""
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("username", ["reviewer", "admin"])
def test_every_queue_column_fits_a_1280_window_beside_the_filters(new_page, queue, reviewer, superuser, username):
    ModelVersion.objects.filter(version=1).update(version=12)  # the widest version a row shows for years
    admin = new_page(1280, 800)
    log_in(admin, username)
    admin.goto("/admin/predictor/drawing/?review=needed")
    expect(admin.locator("#result_list thead th").last).to_contain_text("Created")
    expect(admin.locator("#changelist-filter")).to_be_visible()
    expect(admin.locator("#nav-sidebar")).to_be_visible()  # with the app list open, its widest state

    edges = layout(admin)
    assert edges["hiddenByScrolling"] <= 0, edges
    assert edges["last"] <= edges["results"] <= edges["filters"] <= edges["window"], edges
    assert edges["lastWidth"] > 40 and edges["filtersWidth"] > 150, edges


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("page_name", ["queue", "empty queue", "version page", "dashboard"])
def test_review_pages_have_no_serious_accessibility_problems(
    new_page, reviewer, model_version, make_drawing, page_name
):
    url = "/admin/predictor/drawing/?review=needed"
    if page_name == "queue":
        make_drawing(predicted_label=4, confidence=0.97, feedback_label=9)
        make_drawing(predicted_label=1, confidence=0.35, feedback_label=1)
    elif page_name == "dashboard":
        make_drawing(predicted_label=4, confidence=0.97, true_label=4)
        make_drawing(predicted_label=1, confidence=0.35, true_label=7)
        ModelVersion.objects.create(
            version=2,
            tflite="v2/model.tflite",
            keras="v2/model.keras",
            parent=model_version,
            metrics={"heldout_accuracy": 0.9, "heldout_size": 10, "before": {"version": 1, "heldout_accuracy": 0.8}},
        )
        url = "/admin/predictor/modelversion/dashboard/"
    elif page_name == "version page":
        model_version.metrics = json.loads(BASE_METRICS.read_text())
        model_version.save()
        retrained = ModelVersion.objects.create(
            version=2,
            tflite="v2/model.tflite",
            keras="v2/model.keras",
            parent=model_version,
            metrics={
                "mnist_test_accuracy": 0.9961,
                "heldout_accuracy": 0.9,
                "before": {"version": 1, "mnist_test_accuracy": 0.9965, "heldout_accuracy": 0.8},
                "gate": {"passed": False, "forced": False, "reasons": ["held-out: 80.0% -> 70.0% (worse)"]},
                "history": model_version.metrics["history"],
                "confusion": model_version.metrics["confusion"],
            },
            training_data={"sizes": {"reviewed": 50, "train": 40, "heldout": 10}},
        )
        url = f"/admin/predictor/modelversion/{retrained.id}/change/"
    admin = new_page(1280, 800)
    log_in(admin, "reviewer")
    admin.goto(url)
    if page_name == "queue":
        expect(admin.locator("#result_list tbody tr")).to_have_count(2)
    elif page_name == "empty queue":
        expect(admin.get_by_role("heading", name="Nothing to review")).to_be_visible()
    elif page_name == "dashboard":
        expect(admin.locator("svg.chart")).to_have_count(1)
        expect(admin.locator(".learning-table tbody tr")).to_have_count(2)
    else:
        expect(admin.locator("svg.chart")).to_have_count(3)
        admin.locator("details summary").first.click()  # the raw record too, opened
        expect(admin.locator(".raw-record")).to_be_visible()
    assert blocking_violations(admin) == []
