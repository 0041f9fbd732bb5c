from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.conf import settings
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Group, Permission, User
from django.urls import reverse
from django.utils import timezone

from predictor import selectors
from predictor.models import Drawing, ModelVersion

CHANGELIST = reverse("admin:predictor_drawing_changelist")
DASHBOARD = reverse("admin:predictor_dashboard")
REVIEWER_PERMISSIONS = {"view_drawing", "change_drawing", "view_modelversion"}


def listed(response) -> set:
    assert response.status_code == 200, response.content[:500]
    return {drawing.id for drawing in response.context["cl"].result_list}


def names(mixed, *keys) -> set:
    return {mixed[key].id for key in keys}


def run_action(client, action, drawings, url=CHANGELIST):
    data = {"action": action, "index": 0, "_selected_action": [str(d.id) for d in drawings]}
    return client.post(url, data, follow=True)


def changelist_formset_data(response) -> dict:
    """Return the POST data of the changelist's editable rows as they are shown."""
    formset = response.context["cl"].formset
    data = {f"form-{key}": value for key, value in formset.management_form.initial.items()}
    for form in formset.forms:
        data[f"{form.prefix}-id"] = str(form.instance.id)
        data[f"{form.prefix}-true_label"] = "" if form.instance.true_label is None else form.instance.true_label
        if form.instance.is_excluded:
            data[f"{form.prefix}-is_excluded"] = "on"
    return {**data, "_save": "Save"}


def form_prefix(response, drawing) -> str:
    return next(form.prefix for form in response.context["cl"].formset.forms if form.instance.id == drawing.id)


@pytest.mark.django_db
def test_changelist_shows_drawing_input_labels_and_version(admin_client, mixed):
    response = admin_client.get(CHANGELIST)
    html = response.content.decode()

    assert listed(response) == {d.id for d in mixed.values()}
    assert reverse("predictor:drawing-image", args=[mixed["unsure"].id]) in html
    assert 'loading="lazy"' in html
    assert 'class="pixelated" src="data:image/png;base64,' in html
    for heading in ("Predicted label", "Confidence", "Visitor feedback", "Reviewer label", "Model version", "Created"):
        assert heading in html
    assert "41%" in html and '<td class="field-version">v1</td>' in html


@pytest.mark.django_db
def test_queue_shows_disputed_drawings_first_then_least_confident(admin_client, mixed):
    response = admin_client.get(CHANGELIST)
    drawings = list(response.context["cl"].result_list)
    assert drawings[0] == mixed["disputed"]
    confidences = [drawing.confidence for drawing in drawings[1:]]
    assert confidences == sorted(confidences)


@pytest.mark.django_db
def test_needs_review_is_unreviewed_and_unsure_or_disputed(admin_client, mixed):
    response = admin_client.get(CHANGELIST, {"review": "needed"})
    assert listed(response) == names(mixed, "unsure", "disputed", "old")
    assert [d.id for d in response.context["cl"].result_list] == [mixed[n].id for n in ("disputed", "unsure", "old")]


@pytest.mark.django_db
def test_needs_review_threshold_is_a_setting(admin_client, mixed, settings):
    settings.DIGIT_LOW_CONFIDENCE = 0.5
    assert listed(admin_client.get(CHANGELIST, {"review": "needed"})) == names(mixed, "unsure", "disputed")
    settings.DIGIT_LOW_CONFIDENCE = 0.995
    expected = names(mixed, "unsure", "sure", "disputed", "agreed", "old")
    assert listed(admin_client.get(CHANGELIST, {"review": "needed"})) == expected


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query, expected",
    [
        ({"review": "disputed"}, {"disputed"}),
        ({"review": "unreviewed"}, {"unsure", "sure", "disputed", "agreed", "old"}),
        ({"review": "reviewed"}, {"relabelled", "confirmed", "excluded"}),
        ({"review": "mistake"}, {"relabelled"}),
        ({"review": "excluded"}, {"excluded"}),
        ({"dataset": "yes"}, {"relabelled", "confirmed"}),
        ({"dataset": "no"}, {"unsure", "sure", "disputed", "agreed", "excluded", "old"}),
        ({"predicted_label__exact": "7"}, {"disputed"}),
        ({"true_label__exact": "6"}, {"relabelled"}),
        ({"feedback_label__exact": "2"}, {"agreed"}),
        ({"confidence": "lt50"}, {"unsure", "excluded"}),
        ({"confidence": "50-80"}, {"relabelled", "old"}),
        ({"confidence": "80-95"}, {"agreed", "confirmed"}),
        ({"confidence": "ge95"}, {"sure", "disputed"}),
        ({"review": "needed", "confidence": "lt50"}, {"unsure"}),
    ],
)
def test_each_filter_lists_the_right_drawings(admin_client, mixed, query, expected):
    assert listed(admin_client.get(CHANGELIST, query)) == names(mixed, *expected)


@pytest.mark.django_db
def test_model_version_filter_lists_versions_and_filters(admin_client, mixed, make_drawing):
    second = ModelVersion.objects.create(version=2, tflite="v2/model.tflite", keras="v2/model.keras")
    newer = make_drawing(model_version=second)

    response = admin_client.get(CHANGELIST, {"model_version__id__exact": second.id})
    assert listed(response) == {newer.id}
    spec = next(spec for spec in response.context["cl"].filter_specs if spec.title == "model version")
    assert {str(label) for _, label in spec.lookup_choices} == {"v1 (active)", "v2"}


@pytest.mark.django_db
def test_date_filter_past_seven_days_leaves_out_older_drawings(admin_client, mixed):
    response = admin_client.get(CHANGELIST)
    spec = next(spec for spec in response.context["cl"].filter_specs if spec.title == "created")
    choice = next(c for c in spec.choices(response.context["cl"]) if c["display"] == "Past 7 days")

    recent = admin_client.get(CHANGELIST + choice["query_string"])
    assert listed(recent) == {d.id for d in mixed.values()} - {mixed["old"].id}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "action, expected_label, expected_excluded",
    [
        ("confirm_prediction", "predicted", False),
        *((f"relabel_as_{d}", d, False) for d in range(10)),
        ("exclude_drawing", None, True),
    ],
)
def test_each_action_reviews_the_selected_drawings_and_logs_it(
    admin_client, admin_user, mixed, action, expected_label, expected_excluded
):
    selected = [mixed["unsure"], mixed["disputed"], mixed["old"]]
    response = run_action(admin_client, action, selected, url=CHANGELIST + "?review=needed")
    assert response.status_code == 200
    assert "(3 drawings)" in response.content.decode()

    for drawing in selected:
        drawing.refresh_from_db()
        label = drawing.predicted_label if expected_label == "predicted" else expected_label
        assert (drawing.true_label, drawing.is_excluded) == (label, expected_excluded)
        assert drawing.reviewed_by == admin_user
        assert timezone.now() - drawing.reviewed_at < timedelta(minutes=1)
        entry = LogEntry.objects.get(object_id=str(drawing.id))
        assert entry.action_flag == CHANGE and entry.user == admin_user
        assert entry.get_change_message() in (
            "Confirmed the prediction as the reviewer label.",
            f"Relabelled as {expected_label}.",
            "Excluded as not a digit.",
        )
    untouched = Drawing.objects.exclude(id__in=[d.id for d in selected])
    assert not untouched.filter(reviewed_by__isnull=False).exists()
    assert LogEntry.objects.count() == 3


@pytest.mark.django_db
def test_action_on_the_whole_queue_reviews_every_queued_drawing(admin_client, mixed):
    data = {"action": "confirm_prediction", "index": 0, "select_across": 1, "_selected_action": [mixed["unsure"].id]}
    admin_client.post(CHANGELIST + "?review=needed", data)

    assert set(Drawing.objects.filter(reviewed_by__isnull=False).values_list("id", flat=True)) == names(
        mixed, "unsure", "disputed", "old"
    )
    assert Drawing.objects.get(id=mixed["disputed"].id).true_label == 7  # its prediction, not the visitor's claim
    assert listed(admin_client.get(CHANGELIST, {"review": "needed"})) == set()


@pytest.mark.django_db
def test_a_queue_of_200_mixed_drawings_is_cleared_in_four_saves(admin_client, make_drawing):
    for i in range(200):
        make_drawing(predicted_label=i % 10, confidence=0.3 + (i % 50) / 100, feedback_label=None if i % 3 else 7)

    saves = 0
    while (page := admin_client.get(CHANGELIST, {"review": "needed"})).context["cl"].result_list:
        data = changelist_formset_data(page)
        for form in page.context["cl"].formset.forms:
            drawing = form.instance
            if drawing.confidence < 0.4:  # the reviewer decides these are wrong: the visitor's claim or a 0
                data[f"{form.prefix}-true_label"] = drawing.feedback_label or 0
            else:
                data[f"{form.prefix}-true_label"] = drawing.predicted_label
        assert admin_client.post(CHANGELIST + "?review=needed", data).status_code == 302
        saves += 1

    assert saves == 4
    assert Drawing.objects.filter(true_label__isnull=False, reviewed_at__isnull=False).count() == 200
    assert LogEntry.objects.count() == 200


@pytest.mark.django_db
def test_search_finds_a_drawing_by_id(admin_client, mixed):
    assert listed(admin_client.get(CHANGELIST, {"q": str(mixed["old"].id)})) == {mixed["old"].id}


@pytest.mark.django_db
def test_actions_are_offered_by_name(admin_client, mixed):
    choices = dict(admin_client.get(CHANGELIST).context["action_form"].fields["action"].choices)
    assert choices["confirm_prediction"] == "Prediction is correct"
    assert [choices[f"relabel_as_{d}"] for d in range(10)] == [f"Relabel as {d}" for d in range(10)]
    assert choices["exclude_drawing"] == "Not a digit (exclude)"


@pytest.mark.django_db
def test_relabel_in_the_list_records_reviewer_and_history(admin_client, admin_user, mixed):
    page = admin_client.get(CHANGELIST, {"review": "needed"})
    data = changelist_formset_data(page)
    data[f"{form_prefix(page, mixed['unsure'])}-true_label"] = "8"
    data[f"{form_prefix(page, mixed['disputed'])}-is_excluded"] = "on"

    response = admin_client.post(CHANGELIST + "?review=needed", data)
    assert response.status_code == 302, response.context and response.context["cl"].formset.errors

    unsure, disputed, old = (Drawing.objects.get(id=mixed[k].id) for k in ("unsure", "disputed", "old"))
    assert (unsure.true_label, unsure.is_excluded, unsure.reviewed_by) == (8, False, admin_user)
    assert unsure.reviewed_at is not None
    assert (disputed.true_label, disputed.is_excluded, disputed.reviewed_by) == (None, True, admin_user)
    assert old.reviewed_by is None and old.true_label is None
    assert LogEntry.objects.get(object_id=str(unsure.id)).get_change_message() == "Changed reviewer label to 8."
    assert LogEntry.objects.get(object_id=str(disputed.id)).get_change_message() == "Marked not a digit."
    assert listed(admin_client.get(CHANGELIST, {"review": "needed"})) == {old.id}


@pytest.mark.django_db
def test_change_page_shows_drawing_input_chart_and_feedback(admin_client, mixed):
    drawing = mixed["disputed"]
    response = admin_client.get(reverse("admin:predictor_drawing_change", args=[drawing.id]))
    html = response.content.decode()

    assert response.status_code == 200
    assert 'class="drawing-large" src="{}"'.format(reverse("predictor:drawing-image", args=[drawing.id])) in html
    assert 'class="pixelated" src="data:image/png;base64,' in html
    assert html.count('<span class="chart-label">') == 10
    assert 'class="is-predicted"><span class="chart-label">7</span>' in html
    assert "97.0%" in html
    assert '<strong class="feedback-disagrees"><span aria-hidden="true">✗</span> 1' in html
    form = response.context["adminform"].form
    assert set(form.fields) == {"true_label", "is_excluded"}
    assert '<div class="readonly">None</div>' not in html  # not reviewed yet: the admin's "-"


@pytest.mark.django_db
def test_change_page_relabels_and_ignores_read_only_fields(admin_client, admin_user, mixed):
    drawing = mixed["unsure"]
    url = reverse("admin:predictor_drawing_change", args=[drawing.id])
    response = admin_client.post(url, {"true_label": "9", "predicted_label": "1", "confidence": "1"})

    assert response.status_code == 302
    drawing.refresh_from_db()
    assert (drawing.true_label, drawing.predicted_label, drawing.confidence) == (9, 3, 0.41)
    assert drawing.reviewed_by == admin_user and drawing.reviewed_at is not None
    entry = LogEntry.objects.get(object_id=str(drawing.id), action_flag=CHANGE)
    assert entry.get_change_message() == "Changed reviewer label to 9."


@pytest.mark.django_db
def test_saving_an_unchanged_change_page_records_no_review(admin_client, mixed):
    drawing = mixed["unsure"]
    response = admin_client.post(reverse("admin:predictor_drawing_change", args=[drawing.id]), {"true_label": ""})

    assert response.status_code == 302
    drawing.refresh_from_db()
    assert drawing.reviewed_by is None and drawing.reviewed_at is None


@pytest.mark.django_db
def test_changelist_offers_keyboard_review_to_those_who_may_relabel(admin_client, mixed):
    assert b'id="review-keys"' in admin_client.get(CHANGELIST).content


@pytest.mark.django_db
def test_drawings_cannot_be_added_and_only_superusers_delete(admin_client, reviewer_client, mixed):
    assert admin_client.get(reverse("admin:predictor_drawing_add")).status_code == 403
    delete_url = reverse("admin:predictor_drawing_delete", args=[mixed["sure"].id])
    assert admin_client.get(delete_url).status_code == 200
    assert reviewer_client.get(delete_url).status_code == 403
    actions = reviewer_client.get(CHANGELIST).context["action_form"].fields["action"].choices
    assert "delete_selected" not in dict(actions)
    assert "delete_selected" in dict(admin_client.get(CHANGELIST).context["action_form"].fields["action"].choices)

    response = run_action(reviewer_client, "delete_selected", [mixed["sure"]])
    assert Drawing.objects.filter(id=mixed["sure"].id).exists()
    assert response.status_code == 200


@pytest.mark.django_db
def test_reviewers_group_has_exactly_the_review_permissions():
    group = Group.objects.get(name="Reviewers")
    codenames = set(group.permissions.values_list("codename", flat=True))
    assert codenames == REVIEWER_PERMISSIONS
    assert set(group.permissions.values_list("content_type__app_label", flat=True)) == {"predictor"}
    # The migration's permissions are the ones Django itself makes, not look-alikes.
    assert Permission.objects.filter(codename__in=REVIEWER_PERMISSIONS).count() == 3


@pytest.mark.django_db
def test_reviewer_can_review_but_not_manage_users_or_models(reviewer_client, reviewer, mixed):
    assert reviewer_client.get(reverse("admin:index")).status_code == 200
    assert reviewer_client.get(reverse("admin:auth_user_changelist")).status_code == 403
    assert reviewer_client.get(reverse("admin:auth_group_changelist")).status_code == 403
    assert reviewer_client.get(DASHBOARD).status_code == 200

    versions = reviewer_client.get(reverse("admin:predictor_modelversion_changelist"))
    assert versions.status_code == 200 and versions.context["action_form"] is None
    version_url = reverse("admin:predictor_modelversion_change", args=[mixed["sure"].model_version_id])
    version_page = reviewer_client.get(version_url)
    assert version_page.status_code == 200 and not version_page.context["has_change_permission"]

    run_action(reviewer_client, "relabel_as_3", [mixed["unsure"]])
    mixed["unsure"].refresh_from_db()
    assert mixed["unsure"].true_label == 3 and mixed["unsure"].reviewed_by == reviewer


@pytest.mark.django_db
def test_staff_without_review_permissions_is_refused(client, mixed):
    client.force_login(User.objects.create_user("clerk", is_staff=True))
    assert client.get(CHANGELIST).status_code == 403
    assert client.get(DASHBOARD).status_code == 403
    assert client.get(reverse("admin:predictor_drawing_change", args=[mixed["sure"].id])).status_code == 403


@pytest.mark.django_db
@pytest.mark.parametrize("logged_in", [False, True])
def test_non_staff_are_sent_to_the_admin_login(client, mixed, logged_in):
    if logged_in:
        client.force_login(User.objects.create_user("visitor"))
    for url in (
        reverse("admin:index"),
        CHANGELIST,
        DASHBOARD,
        reverse("admin:predictor_drawing_change", args=[mixed["sure"].id]),
    ):
        response = client.get(url)
        assert response.status_code == 302 and response.url.startswith(reverse("admin:login"))
    response = run_action(client, "relabel_as_3", [mixed["unsure"]])
    mixed["unsure"].refresh_from_db()
    assert mixed["unsure"].true_label is None


@pytest.mark.django_db
def test_non_staff_cannot_see_other_visitors_drawing_images(client, mixed):
    client.force_login(User.objects.create_user("visitor"))
    assert client.get(reverse("predictor:drawing-image", args=[mixed["sure"].id])).status_code == 404


@pytest.mark.django_db
def test_staff_see_drawing_images_for_thumbnails(admin_client, mixed):
    response = admin_client.get(reverse("predictor:drawing-image", args=[mixed["sure"].id]))
    assert response.status_code == 200 and b"".join(response.streaming_content).startswith(b"\x89PNG")


@pytest.mark.django_db
def test_admin_index_links_to_the_queue_dataset_and_dashboard(reviewer_client):
    html = reviewer_client.get(reverse("admin:index")).content.decode()
    assert f'href="{CHANGELIST}?review=needed"' in html
    assert f'href="{CHANGELIST}?dataset=yes"' in html
    assert f'href="{DASHBOARD}"' in html


# The review queue, as a reviewer meets it.


class Controls(HTMLParser):
    """The form controls, ids and links of a page."""

    def __init__(self):
        super().__init__()
        self.controls, self.ids, self.links = [], set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag in ("input", "select", "textarea") and attrs.get("type") != "hidden":
            self.controls.append(attrs)
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])


def parse(response) -> Controls:
    assert response.status_code == 200, response.content[:500]
    page = Controls()
    page.feed(response.content.decode())
    return page


@pytest.mark.django_db
def test_every_control_in_a_queue_row_has_a_name_and_describes_only_what_is_on_the_page(admin_client, mixed):
    page = parse(admin_client.get(CHANGELIST, {"review": "needed"}))
    rows = [c for c in page.controls if c.get("name", "").startswith("form-")]

    assert len(rows) == 2 * 3  # a reviewer label and "not a digit" in each of the three queued rows
    labels = {c["name"]: c.get("aria-label") for c in rows}
    prefix = next(name.removesuffix("-true_label") for name in labels if name.endswith("-true_label"))
    assert labels[f"{prefix}-true_label"].startswith("Reviewer label for the drawing read as ")
    assert labels[f"{prefix}-is_excluded"].startswith("Not a digit: the drawing read as ")
    read_as = {label.rsplit(" ", 1)[1] for label in labels.values()}
    assert read_as == {"3", "7", "8"}  # each control names its own row's drawing
    for control in page.controls:
        for target in control.get("aria-describedby", "").split():
            assert target in page.ids, f"{control.get('name')} is described by #{target}, which is not on the page"


@pytest.mark.django_db
def test_queue_rows_are_ordered_as_their_headings_say(admin_client, mixed):
    cl = admin_client.get(CHANGELIST).context["cl"]
    sorted_columns = {cl.list_display[index]: order for index, order in cl.get_ordering_field_columns().items()}
    assert sorted_columns == {"confidence_percent": "asc"}  # not "created", which the rows are not sorted by


@pytest.mark.django_db
def test_keyboard_review_is_a_module_script_loaded_only_with_editable_rows(admin_client, client, mixed):
    html = admin_client.get(CHANGELIST).content.decode()
    script = f'<script type="module" src="{settings.STATIC_URL}js/admin-review.js"></script>'
    assert script.replace(settings.STATIC_URL, "/" + settings.STATIC_URL.lstrip("/")) in html
    assert "addEventListener" not in html  # no inline copy left behind

    viewer = User.objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_drawing"))
    client.force_login(viewer)
    assert "admin-review.js" not in client.get(CHANGELIST).content.decode()


@pytest.mark.django_db
def test_an_empty_queue_says_there_is_nothing_to_review(admin_client, mixed):
    for key in ("unsure", "disputed", "old"):
        run_action(admin_client, "confirm_prediction", [mixed[key]])

    response = admin_client.get(CHANGELIST, {"review": "needed"})
    html = response.content.decode()
    assert response.status_code == 200 and response.context["cl"].result_count == 0
    assert "<h2>Nothing to review</h2>" in html
    assert f'<a href="{CHANGELIST}">See all drawings</a>' in html
    # No empty table, no actions or keyboard help for rows that are not there.
    assert 'id="result_list"' not in html and 'name="action"' not in html and 'id="review-keys"' not in html


@pytest.mark.django_db
def test_an_empty_search_or_an_empty_site_says_so(admin_client, mixed):
    html = admin_client.get(CHANGELIST, {"q": "no such drawing"}).content.decode()
    assert "<h2>No drawings match</h2>" in html and "Nothing to review" not in html

    Drawing.objects.all().delete()
    html = admin_client.get(CHANGELIST).content.decode()
    assert "<h2>No drawings yet</h2>" in html and 'id="result_list"' not in html


@pytest.mark.django_db
def test_reviewer_is_never_shown_a_link_that_refuses_them(reviewer_client, reviewer, admin_user, mixed):
    assert run_action(reviewer_client, "relabel_as_3", [mixed["unsure"]]).status_code == 200
    mixed["old"].reviewed_by, mixed["old"].true_label = admin_user, 8
    mixed["old"].save()
    reviewed_by_admin = reverse("admin:predictor_drawing_change", args=[mixed["old"].id])

    pages = [
        reverse("admin:index"),
        DASHBOARD,
        reverse("admin:predictor_modelversion_changelist"),
        CHANGELIST,
        CHANGELIST + "?review=reviewed",
        reverse("admin:predictor_drawing_change", args=[mixed["unsure"].id]),
        reviewed_by_admin,
        reverse("admin:predictor_modelversion_change", args=[mixed["old"].model_version_id]),
    ]
    checked = set()
    for url in pages:
        page = parse(reviewer_client.get(url))
        for href in page.links:
            if not href.startswith("/admin/") or href in checked:
                continue
            checked.add(href)
            assert reviewer_client.get(href).status_code != 403, f"{url} links to {href}, which refuses a reviewer"
    change_page = reviewer_client.get(reviewed_by_admin).content.decode()
    assert admin_user.get_username() in change_page  # who reviewed it is still said, as text
    assert reverse("admin:auth_user_change", args=[admin_user.pk]) not in change_page


@pytest.mark.django_db
def test_history_of_a_keyboard_or_in_place_review_says_the_new_label(reviewer_client, reviewer, mixed):
    page = reviewer_client.get(CHANGELIST, {"review": "needed"})
    data = changelist_formset_data(page)
    data[f"{form_prefix(page, mixed['unsure'])}-true_label"] = "3"
    data[f"{form_prefix(page, mixed['old'])}-is_excluded"] = "on"
    assert reviewer_client.post(CHANGELIST + "?review=needed", data).status_code == 302

    page = reviewer_client.get(CHANGELIST, {"review": "reviewed"})
    data = changelist_formset_data(page)
    data[f"{form_prefix(page, mixed['relabelled'])}-true_label"] = ""  # sent back to the queue
    assert reviewer_client.post(CHANGELIST + "?review=reviewed", data).status_code == 302

    messages = {entry.object_id: entry.get_change_message() for entry in LogEntry.objects.filter(user=reviewer)}
    assert messages == {
        str(mixed["unsure"].id): "Changed reviewer label to 3.",
        str(mixed["old"].id): "Marked not a digit.",
        str(mixed["relabelled"].id): "Cleared the reviewer label.",
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query, condition",
    [
        ({"review": "needed"}, selectors.review_queue_q()),
        ({"review": "unreviewed"}, selectors.unreviewed_q()),
        ({"review": "reviewed"}, selectors.reviewed_q()),
        ({"review": "disputed"}, selectors.disputed_q()),
        ({"review": "mistake"}, selectors.mistake_q()),
        ({"dataset": "yes"}, selectors.finetuning_dataset_q()),
    ],
)
def test_review_filters_mean_what_the_selectors_mean(admin_client, mixed, query, condition):
    meant = set(Drawing.objects.filter(condition).values_list("id", flat=True))
    assert listed(admin_client.get(CHANGELIST, query)) == meant


@pytest.mark.django_db
def test_reviewed_and_unreviewed_split_every_drawing_in_two(mixed):
    reviewed = set(Drawing.objects.filter(selectors.reviewed_q()).values_list("id", flat=True))
    unreviewed = set(Drawing.objects.filter(selectors.unreviewed_q()).values_list("id", flat=True))
    assert reviewed == names(mixed, "relabelled", "confirmed", "excluded")
    assert reviewed | unreviewed == {d.id for d in mixed.values()} and not reviewed & unreviewed


@pytest.mark.django_db
def test_ten_thousand_drawings_list_in_a_constant_number_of_queries(
    admin_client, reviewer_client, make_drawing, django_assert_max_num_queries
):
    template = make_drawing()
    fields = {
        f.attname: getattr(template, f.attname)
        for f in Drawing._meta.concrete_fields
        if f.attname not in ("id", "confidence", "predicted_label", "feedback_label", "true_label")
    }
    varied = (
        {
            "confidence": (i % 1000) / 1000,
            "predicted_label": i % 10,
            "feedback_label": (i * 7) % 10 if i % 3 == 0 else None,
            "true_label": (i * 3) % 10 if i % 4 == 0 else None,
        }
        for i in range(10_000)
    )
    Drawing.objects.bulk_create((Drawing(**fields, **values) for values in varied), batch_size=1000)

    requests = [
        (admin_client, {}),
        (admin_client, {"review": "needed"}),
        (reviewer_client, {"dataset": "no"}),
        (reviewer_client, {"review": "needed", "confidence": "lt50", "predicted_label__exact": "3"}),
    ]
    for client, query in requests:
        # Session, user, (the reviewer's permissions,) model versions for the filter, count, one page of rows.
        with django_assert_max_num_queries(7):
            response = client.get(CHANGELIST, query)
        assert response.status_code == 200 and len(response.context["cl"].result_list) == 50
    with django_assert_max_num_queries(6):
        assert admin_client.get(DASHBOARD).status_code == 200
    with django_assert_max_num_queries(6):
        assert admin_client.get(reverse("admin:predictor_modelversion_changelist")).status_code == 200
