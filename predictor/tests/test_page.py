"""Browser tests of the drawing and history pages: headless Chromium, real HTTP, the shipped model."""

import math
import re

import pytest
from django.conf import settings

from predictor.models import Drawing
from predictor.tests.accessibility import blocking_violations

try:
    from playwright.sync_api import expect
except ImportError:  # reported by the browser fixture (conftest): skipped locally, a failure in CI
    expect = None

pytestmark = pytest.mark.django_db(transaction=True)

DESKTOP = {"viewport": {"width": 1280, "height": 800}}
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 3, "is_mobile": True, "has_touch": True}
SCREENSHOT = settings.BASE_DIR / "docs" / "screenshot.png"


def ellipse(cx, cy, rx, ry, points=48):
    """Return a closed loop of points, starting at the top and going anticlockwise like a pen."""
    angles = [2 * math.pi * i / points for i in range(points + 3)]
    return [(cx - rx * math.sin(a), cy - ry * math.cos(a)) for a in angles]


# Strokes in canvas units (0..1 of the width and height), shaped like MNIST's digits.
DIGITS = {
    1: [[(0.53, 0.18), (0.5, 0.5), (0.47, 0.82)]],
    7: [[(0.28, 0.22), (0.72, 0.22), (0.6, 0.45), (0.46, 0.82)]],
    0: [ellipse(0.5, 0.5, 0.2, 0.3)],
}
LEFT_STROKE = [[(0.25, 0.2), (0.25, 0.8)]]
RIGHT_STROKE = [[(0.75, 0.2), (0.75, 0.8)]]

# Counts drawn pixels (any alpha) in the left and right halves of the on-screen canvas.
COUNT_INK = """canvas => {
    const {width, height} = canvas;
    const pixels = canvas.getContext("2d").getImageData(0, 0, width, height).data;
    const ink = [0, 0];
    for (let i = 3; i < pixels.length; i += 4) {
        if (pixels[i] > 0) ink[((i - 3) / 4) % width < width / 2 ? 0 : 1] += 1;
    }
    return ink;
}"""


@pytest.fixture
def open_page(browser, live_server, active_model):
    """Return a function that opens the drawing page for a fresh visitor (own cookies) on a device.

    The test fails on any script error in a page it opened.
    """
    contexts, errors = [], []

    def open_page(device):
        context = browser.new_context(**device, base_url=live_server.url)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto("/")
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert errors == []


@pytest.fixture
def page(open_page):
    """A fresh visitor on the drawing page at desktop size."""
    return open_page(DESKTOP)


def draw(page, strokes):
    """Draw strokes with the mouse in small steps, as a hand would."""
    box = page.locator('[data-role="canvas"]').bounding_box()

    def on_screen(point):
        return box["x"] + point[0] * box["width"], box["y"] + point[1] * box["height"]

    for stroke in strokes:
        x, y = on_screen(stroke[0])
        page.mouse.move(x, y)
        page.mouse.down()
        for point in stroke[1:]:
            next_x, next_y = on_screen(point)
            steps = max(1, int(math.dist((x, y), (next_x, next_y)) // 6))
            page.mouse.move(next_x, next_y, steps=steps)
            x, y = next_x, next_y
        page.mouse.up()


def predict(page, *, key=False):
    """Ask for a prediction with the button (or Enter) and wait until the answer is shown."""
    with page.expect_response(lambda r: r.url.endswith("/api/predictions/") and r.request.method == "POST"):
        if key:
            page.keyboard.press("Enter")
        else:
            page.locator('[data-action="predict"]').click()
    page.wait_for_selector('[data-role="verdict"]:not([data-state="loading"])')


def shown_digit(page):
    expect(page.locator('[data-role="verdict"]')).to_have_attribute("data-state", "result")
    return page.locator('[data-role="digit"]').inner_text()


def test_drawn_digits_are_read_correctly(page):
    draw(page, DIGITS[1])
    predict(page)
    assert shown_digit(page) == "1"
    page.locator('[data-action="clear"]').click()
    expect(page.locator('[data-role="verdict"]')).to_have_attribute("data-state", "idle")

    draw(page, DIGITS[7])
    predict(page, key=True)
    assert shown_digit(page) == "7"
    page.keyboard.press("Escape")

    draw(page, DIGITS[0])
    predict(page)
    assert shown_digit(page) == "0"
    expect(page.locator('[data-role="message"]')).to_contain_text("confident")
    expect(page.locator('[data-role="chart"] li')).to_have_count(10)
    expect(page.locator('[data-role="chart"] li.is-top')).to_have_attribute("data-digit", "0")
    assert page.locator('[data-role="input-image"]').evaluate("img => img.complete && img.naturalWidth") == 28

    assert list(Drawing.objects.order_by("created_at").values_list("predicted_label", flat=True)) == [1, 7, 0]
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.mouse.move(0, 0)
    page.screenshot(path=SCREENSHOT, full_page=True, animations="disabled")


def test_empty_canvas_asks_for_a_digit_first(page):
    predict(page)

    expect(page.locator('[data-role="verdict"]')).to_have_attribute("data-state", "error")
    expect(page.locator('[data-role="message"]')).to_have_text(re.compile("draw a digit first", re.IGNORECASE))
    expect(page.locator('[data-role="feedback"]')).to_be_hidden()
    assert not Drawing.objects.exists()


def test_feedback_is_stored_and_can_be_replaced(page):
    status = page.locator('[data-role="feedback-status"]')
    draw(page, DIGITS[7])
    predict(page)
    assert shown_digit(page) == "7"

    page.locator('[data-action="label"][data-label="3"]').click()
    expect(status).to_have_text("Thanks — noted as a 3.")
    assert Drawing.objects.get().feedback_label == 3

    page.keyboard.press("8")
    expect(status).to_have_text("Thanks — noted as an 8.")
    expect(page.locator('[data-action="label"][data-label="8"]')).to_have_attribute("aria-pressed", "true")
    assert Drawing.objects.get().feedback_label == 8

    page.locator('[data-action="correct"]').click()
    expect(status).to_have_text("Thanks — noted as a 7.")
    expect(page.locator('[data-action="correct"]')).to_have_attribute("aria-pressed", "true")
    assert Drawing.objects.get().feedback_label == 7


def test_undo_removes_the_last_stroke(page):
    canvas = page.locator('[data-role="canvas"]')
    draw(page, LEFT_STROKE)
    draw(page, RIGHT_STROKE)
    left, right = canvas.evaluate(COUNT_INK)
    assert left > 0 and right > 0

    # Redrawing a stroke as one path antialiases a few edge pixels differently: compare loosely.
    page.locator('[data-action="undo"]').click()
    after_left, after_right = canvas.evaluate(COUNT_INK)
    assert after_right == 0 and after_left == pytest.approx(left, rel=0.01)

    draw(page, RIGHT_STROKE)
    page.keyboard.press("Control+z")
    after_left, after_right = canvas.evaluate(COUNT_INK)
    assert after_right == 0 and after_left == pytest.approx(left, rel=0.01)

    page.locator('[data-action="undo"]').click()
    assert canvas.evaluate(COUNT_INK) == [0, 0]
    expect(page.locator('[data-role="pad"]')).to_have_attribute("data-empty", "true")


def test_history_lists_the_visitors_drawings_newest_first(page):
    page.get_by_role("link", name="Your drawings").click()
    expect(page.get_by_text("You have not drawn anything yet.")).to_be_visible()
    page.get_by_role("link", name="Draw a digit").click()

    draw(page, DIGITS[1])
    predict(page)
    page.locator('[data-action="clear"]').click()
    draw(page, DIGITS[7])
    predict(page)
    confidence = page.locator('[data-role="chart"] .is-top .chart-value').inner_text()
    page.keyboard.press("3")
    expect(page.locator('[data-role="feedback-status"]')).to_have_text("Thanks — noted as a 3.")

    page.get_by_role("link", name="Your drawings").click()
    items = page.locator(".drawings > li")
    expect(items).to_have_count(2)
    expect(items.nth(0)).to_contain_text(re.compile(r"Read as\s+7"))
    # The same words as the drawing page (">99% confident", never a rounded "100%").
    expect(items.nth(0).locator(".drawing-reading")).to_contain_text(f"· {confidence} confident")
    expect(items.nth(0)).to_contain_text("You said it was 3")
    expect(items.nth(1)).to_contain_text(re.compile(r"Read as\s+1"))
    expect(items.nth(1)).to_contain_text("No feedback")
    thumbnails = page.locator(".drawing-thumb")
    thumbnails.last.scroll_into_view_if_needed()
    for index in range(2):
        assert thumbnails.nth(index).evaluate("img => img.decode().then(() => img.naturalWidth)") > 0


def test_an_error_goes_away_as_soon_as_drawing_starts(page):
    verdict = page.locator('[data-role="verdict"]')
    predict(page)
    expect(verdict).to_have_attribute("data-state", "error")

    box = page.locator('[data-role="canvas"]').bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 3)
    page.mouse.down()
    expect(verdict).to_have_attribute("data-state", "idle")
    expect(page.locator('[data-role="message"]')).not_to_contain_text(re.compile("empty", re.IGNORECASE))
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] * 2 / 3, steps=10)
    page.mouse.up()


@pytest.mark.parametrize(
    ("change", "state"),
    [
        (lambda page: draw(page, RIGHT_STROKE), "stale"),
        (lambda page: page.locator('[data-action="undo"]').click(), "stale"),
        (lambda page: page.keyboard.press("Control+z"), "stale"),
        (lambda page: page.locator('[data-action="clear"]').click(), "idle"),
    ],
    ids=["stroke", "undo", "ctrl-z", "clear"],
)
def test_changing_the_drawing_takes_away_feedback_on_the_old_answer(page, change, state):
    feedback_requests = []
    page.on("request", lambda request: "/feedback/" in request.url and feedback_requests.append(request.url))
    draw(page, DIGITS[7] + LEFT_STROKE)
    predict(page)
    assert shown_digit(page) in "0123456789"
    expect(page.get_by_role("button", name="Correct")).to_be_visible()

    change(page)

    expect(page.locator('[data-role="verdict"]')).to_have_attribute("data-state", state)
    if state == "stale":
        expect(page.locator('[data-role="message"]')).to_contain_text("before you changed the drawing")
    # Hidden, so gone for screen readers and the keyboard too, and the digit keys send nothing.
    expect(page.locator('[data-role="feedback"]')).to_be_hidden()
    expect(page.get_by_role("button", name="Correct")).to_have_count(0)
    expect(page.get_by_role("group", name=re.compile("Wrong"))).to_have_count(0)
    page.keyboard.press("3")
    page.wait_for_timeout(300)
    assert feedback_requests == []
    assert Drawing.objects.get().feedback_label is None

    draw(page, DIGITS[1])
    predict(page)
    expect(page.get_by_role("button", name="Correct")).to_be_visible()


def test_an_answer_that_arrives_after_the_drawing_changed_is_shown_as_stale(page):
    held = []
    page.route("**/api/predictions/", lambda route: held.append(route))
    draw(page, DIGITS[7])
    with page.expect_request("**/api/predictions/"):
        page.locator('[data-action="predict"]').click()
    expect(page.locator('[data-role="verdict"]')).to_have_attribute("data-state", "loading")

    draw(page, RIGHT_STROKE)
    assert len(held) == 1
    with page.expect_response("**/api/predictions/"):
        held[0].continue_()

    expect(page.locator('[data-role="verdict"]')).to_have_attribute("data-state", "stale")
    expect(page.locator('[data-role="feedback"]')).to_be_hidden()


def test_on_a_phone_the_digit_and_the_feedback_buttons_are_on_screen_after_predict(open_page):
    page = open_page(PHONE)
    draw(page, DIGITS[7])
    predict(page)

    assert shown_digit(page) == "7"
    for control in [page.locator('[data-role="digit"]'), page.get_by_role("button", name="Correct")]:
        expect(control).to_be_in_viewport(ratio=1)
    for label in range(10):
        expect(page.get_by_role("button", name=str(label), exact=True)).to_be_in_viewport(ratio=1)


def test_the_page_is_the_only_source_of_the_api_address(page):
    posts = []
    page.on("request", lambda request: request.method == "POST" and posts.append(request.url))
    page.locator("[data-api-predictions]").evaluate("element => element.removeAttribute('data-api-predictions')")
    draw(page, DIGITS[1])
    page.locator('[data-action="predict"]').click()

    expect(page.locator('[data-role="verdict"]')).to_have_attribute("data-state", "error")
    assert posts == []


def test_pages_link_icons_that_load(page):
    failures = []
    page.on("response", lambda response: response.status >= 400 and failures.append(response.url))
    for path in ["/", "/history/"]:
        page.goto(path)
        icons = page.eval_on_selector_all(
            'link[rel~="icon"], link[rel="apple-touch-icon"]',
            """links => Promise.all(links.map(async link => {
                const response = await fetch(link.href);
                return [response.status, response.headers.get("content-type")];
            }))""",
        )
        assert len(icons) == 3
        assert all(status == 200 and kind.startswith("image/") for status, kind in icons)
    assert failures == []


def test_pages_have_no_serious_accessibility_violations(page):
    assert blocking_violations(page) == []
    predict(page)
    assert blocking_violations(page) == []

    draw(page, DIGITS[7])
    predict(page)
    assert shown_digit(page) == "7"
    assert blocking_violations(page) == []
    draw(page, RIGHT_STROKE)
    assert blocking_violations(page) == []

    page.get_by_role("link", name="Your drawings").click()
    expect(page.locator(".drawings > li")).to_have_count(1)
    assert blocking_violations(page) == []
    page.emulate_media(color_scheme="dark")
    assert blocking_violations(page) == []


def test_favicon_ico_redirects_to_the_static_icon(client):
    from django.templatetags.static import static

    answer = client.get("/favicon.ico")
    assert answer.status_code == 302 and answer["Location"] == static("favicon.ico")
    assert client.head("/favicon.ico").status_code == 302
