"""Staff review: the drawing queue (least confident first), relabelling, and the model registry with its dashboard."""

import json
from collections.abc import Callable, Sequence
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.models import CHANGE, LogEntry
from django.core.exceptions import PermissionDenied
from django.db.models import BooleanField, ExpressionWrapper
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.formats import date_format
from django.utils.functional import Promise
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.timezone import localtime
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from predictor import charts, selectors, services, tasks
from predictor.models import Drawing, ModelActivation, ModelVersion, RetrainRun

# (parameter value, label, lower bound inclusive, upper bound exclusive) of the confidence filter.
CONFIDENCE_BANDS = (
    ("lt50", _("below 50%"), 0.0, 0.5),
    ("50-80", _("50% to 80%"), 0.5, 0.8),
    ("80-95", _("80% to 95%"), 0.8, 0.95),
    ("ge95", _("95% and above"), 0.95, 1.01),
)


# A read-only field of the change page shows None as "None"; this says what it means.
NOT_RECORDED = _("Not recorded for this version.")
# What each dataset size that retrain records in ModelVersion.training_data["sizes"] counts.
SIZE_LABELS = {
    "reviewed": _("reviewed drawings usable"),
    "train": _("reviewed drawings retrained on"),
    "heldout": _("reviewed drawings held out to judge it"),
    "skipped": _("reviewed drawings skipped (image unreadable)"),
    "replay": _("MNIST training digits mixed in"),
    "mnist_test": _("MNIST test digits"),
}


class ReviewStatusFilter(admin.SimpleListFilter):
    title = _("review status")
    parameter_name = "review"

    def lookups(self, request, model_admin):
        return (
            ("needed", _("Needs review")),
            ("disputed", _("Visitor disagreed")),
            ("unreviewed", _("Not reviewed")),
            ("reviewed", _("Reviewed")),
            ("mistake", _("Model was wrong")),
            ("excluded", _("Not a digit")),
        )

    def queryset(self, request, queryset):
        value = self.value()
        if value == "needed":
            return queryset.filter(selectors.review_queue_q())
        if value == "disputed":
            return queryset.filter(selectors.disputed_q())
        if value == "unreviewed":
            return queryset.filter(selectors.unreviewed_q())
        if value == "reviewed":
            return queryset.filter(selectors.reviewed_q())
        if value == "mistake":
            return queryset.filter(selectors.mistake_q())
        if value == "excluded":
            return queryset.filter(is_excluded=True)
        return None


class DatasetFilter(admin.SimpleListFilter):
    title = _("fine-tuning dataset")
    parameter_name = "dataset"

    def lookups(self, request, model_admin):
        return (("yes", _("In the dataset")), ("no", _("Not in the dataset")))

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(selectors.finetuning_dataset_q())
        if self.value() == "no":
            return queryset.exclude(selectors.finetuning_dataset_q())
        return None


class ConfidenceBandFilter(admin.SimpleListFilter):
    title = _("confidence")
    parameter_name = "confidence"

    def lookups(self, request, model_admin):
        return [(value, label) for value, label, _low, _high in CONFIDENCE_BANDS]

    def queryset(self, request, queryset):
        for value, _label, low, high in CONFIDENCE_BANDS:
            if self.value() == value:
                return queryset.filter(confidence__gte=low, confidence__lt=high)
        return None


def _log_review(modeladmin, request, drawings: list[Drawing], message: str) -> None:
    """Write `message` into the admin history of each reviewed drawing and tell the reviewer how many changed."""
    LogEntry.objects.log_actions(user_id=request.user.pk, queryset=drawings, action_flag=CHANGE, change_message=message)
    count = len(drawings)
    summary = ngettext("%(message)s (%(count)d drawing)", "%(message)s (%(count)d drawings)", count)
    modeladmin.message_user(request, summary % {"message": message, "count": count}, messages.SUCCESS)


@admin.action(description=_("Prediction is correct"), permissions=["change"])
def confirm_prediction(modeladmin, request, queryset) -> None:
    drawings = services.drawing_confirm(drawings=queryset, reviewer=request.user)
    _log_review(modeladmin, request, drawings, str(_("Confirmed the prediction as the reviewer label.")))


def relabel_action(digit: int) -> Callable[..., None]:
    """Return the admin action that gives the selected drawings the reviewer label `digit`."""

    @admin.action(description=_("Relabel as %(digit)d") % {"digit": digit}, permissions=["change"])
    def relabel(modeladmin, request, queryset) -> None:
        drawings = services.drawing_relabel(drawings=queryset, true_label=digit, reviewer=request.user)
        _log_review(modeladmin, request, drawings, str(_("Relabelled as %(digit)d.") % {"digit": digit}))

    relabel.__name__ = f"relabel_as_{digit}"
    return relabel


@admin.action(description=_("Not a digit (exclude)"), permissions=["change"])
def exclude_drawing(modeladmin, request, queryset) -> None:
    drawings = services.drawing_exclude(drawings=queryset, reviewer=request.user)
    _log_review(modeladmin, request, drawings, str(_("Excluded as not a digit.")))


class DrawingReviewForm(forms.ModelForm):
    """One editable row of the review queue, its controls named for screen readers."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        read_as = {"digit": self.instance.predicted_label}
        names: dict[str, Any] = {
            "true_label": _("Reviewer label for the drawing read as %(digit)s") % read_as,
            "is_excluded": _("Not a digit: the drawing read as %(digit)s") % read_as,
        }
        if self.instance.predicted_label is None:  # the formset's blank template form, never shown
            names = {"true_label": _("Reviewer label"), "is_excluded": _("Not a digit")}
        for name, label in names.items():
            if name in self.fields:
                # A row has no <label>: the column heading is not a name for a control.
                self.fields[name].widget.attrs["aria-label"] = label
                # The list shows no help text, so no aria-describedby may point at one.
                self.fields[name].help_text = ""


def _review_message(drawing: Drawing) -> str:
    """Return the admin history message of a drawing's review as it now stands, saying the new label."""
    if drawing.is_excluded:
        return gettext("Marked not a digit.")
    if drawing.true_label is None:
        return gettext("Cleared the reviewer label.")
    return gettext("Changed reviewer label to %(digit)d.") % {"digit": drawing.true_label}


@admin.register(Drawing)
class DrawingAdmin(admin.ModelAdmin):
    list_display = (
        "thumbnail",
        "model_input",
        "predicted_label",
        "confidence_percent",
        "visitor_feedback",
        "true_label",
        "is_excluded",
        "version",
        "created",
    )
    list_editable = ("true_label", "is_excluded")
    list_filter = (
        ReviewStatusFilter,
        DatasetFilter,
        "predicted_label",
        "true_label",
        "feedback_label",
        "model_version",
        ConfidenceBandFilter,
        "created_at",
    )
    list_select_related = ("model_version", "reviewed_by")
    list_per_page = 50
    # Counting every drawing on each page load is a full scan that tells a reviewer nothing.
    show_full_result_count = False
    search_fields = ("id", "=visitor")
    actions = (confirm_prediction, *(relabel_action(digit) for digit in range(10)), exclude_drawing)
    # Disputed first (the visitor says the model read it wrong), then the least confident. As `ordering`
    # rather than get_ordering(), so the list's headings mark the order the rows are really in.
    ordering = (ExpressionWrapper(selectors.disputed_q(), output_field=BooleanField()).desc(), "confidence")
    fieldsets = (
        (None, {"fields": (("drawing_large", "model_input_large"),)}),
        (
            _("Review"),
            {"fields": ("visitor_feedback", "feedback_at", "true_label", "is_excluded", "reviewer", "reviewed_at")},
        ),
        (
            _("What the model read"),
            {"fields": ("predicted_label", "confidence_percent", "probability_chart", "model_version", "created_at")},
        ),
    )
    readonly_fields = (
        "drawing_large",
        "model_input_large",
        "predicted_label",
        "confidence_percent",
        "probability_chart",
        "model_version",
        "created_at",
        "visitor_feedback",
        "feedback_at",
        "reviewer",
        "reviewed_at",
    )

    @admin.display(description=_("drawing"))
    def thumbnail(self, drawing):
        return format_html(
            '<img class="drawing-thumb" src="{}" loading="lazy" width="48" height="48" alt="{}">',
            reverse("predictor:drawing-image", args=[drawing.id]),
            _("Drawing %(id)s") % {"id": drawing.id},
        )

    @admin.display(description=_("model input"))
    def model_input(self, drawing):
        return format_html(
            '<img class="pixelated" src="{}" width="56" height="56" alt="{}">',
            drawing.input_image_data_url,
            _("The 28 by 28 pixels the model saw"),
        )

    @admin.display(description=_("drawing"))
    def drawing_large(self, drawing):
        return format_html(
            '<img class="drawing-large" src="{}" alt="{}">',
            reverse("predictor:drawing-image", args=[drawing.id]),
            _("The drawing as submitted"),
        )

    @admin.display(description=_("model input (28×28)"))
    def model_input_large(self, drawing):
        return format_html(
            '<img class="pixelated" src="{}" width="224" height="224" alt="{}">',
            drawing.input_image_data_url,
            _("The 28 by 28 pixels the model saw"),
        )

    @admin.display(description=_("confidence"), ordering="confidence")
    def confidence_percent(self, drawing):
        low = drawing.confidence < settings.DIGIT_LOW_CONFIDENCE
        return format_html('<span class="{}">{}</span>', "confidence-low" if low else "", f"{drawing.confidence:.0%}")

    @admin.display(description=_("visitor feedback"), ordering="feedback_label")
    def visitor_feedback(self, drawing):
        label = drawing.feedback_label
        if label is None:
            return self.get_empty_value_display()
        if label == drawing.predicted_label:
            return format_html(
                '<span class="feedback-agrees">'
                '<span aria-hidden="true">✓</span> {} <span class="visually-hidden">{}</span></span>',
                label,
                _("(agrees with the prediction)"),
            )
        return format_html(
            '<strong class="feedback-disagrees">'
            '<span aria-hidden="true">✗</span> {} <span class="visually-hidden">{}</span></strong>',
            label,
            _("(says the prediction is wrong)"),
        )

    @admin.display(description=_("model version"), ordering="model_version__version")
    def version(self, drawing):
        return f"v{drawing.model_version.version}"

    @admin.display(description=_("created"), ordering="created_at")
    def created(self, drawing):
        created = localtime(drawing.created_at)
        return format_html("{}<br>{}", date_format(created, "Y-m-d"), date_format(created, "H:i"))

    @admin.display(description=_("reviewed by"))
    def reviewer(self, drawing):
        # Plain text, not the admin's link to the user: reviewers may not manage users, so it would answer 403.
        return drawing.reviewed_by.get_username() if drawing.reviewed_by else self.get_empty_value_display()

    @admin.display(description=_("probabilities"))
    def probability_chart(self, drawing):
        rows = format_html_join(
            "",
            '<li class="{}"><span class="chart-label">{}</span>'
            '<span class="chart-track" aria-hidden="true"><span class="chart-bar" style="width: {}%"></span></span>'
            '<span class="chart-value">{}</span></li>',
            (
                ("is-predicted" if digit == drawing.predicted_label else "", digit, f"{p * 100:.1f}", f"{p:.1%}")
                for digit, p in enumerate(drawing.probabilities)
            ),
        )
        return format_html('<ol class="probability-chart">{}</ol>', rows)

    def get_changelist_form(self, request, **kwargs):
        return super().get_changelist_form(request, form=DrawingReviewForm, **kwargs)

    def has_add_permission(self, request):
        # Drawings come from the prediction API, never from a form.
        return False

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser

    def save_model(self, request, obj, form, change):
        # Relabelling in the list or on the change page goes through the services, so who and when are recorded.
        if not form.has_changed():
            return
        if obj.is_excluded:
            services.drawing_exclude(drawings=[obj], reviewer=request.user)
        else:
            services.drawing_relabel(drawings=[obj], true_label=obj.true_label, reviewer=request.user)

    def construct_change_message(self, request, form, formsets, add=False):
        # In words with the new value, as the actions write it: "Changed Reviewer label." tells history nothing.
        if add or not form.changed_data:
            return super().construct_change_message(request, form, formsets, add)
        return _review_message(form.instance)


@admin.action(description=_("Activate this version (serve it from now on)"), permissions=["change"])
def activate_version(modeladmin, request, queryset):
    versions = list(queryset[:2])
    if len(versions) != 1:
        modeladmin.message_user(request, _("Select exactly one version to activate."), messages.ERROR)
        return None
    (version,) = versions
    if version.is_active:
        modeladmin.message_user(
            request, _("Version %(version)d is already active; nothing changed.") % {"version": version.version}
        )
        return None
    failures = services.model_version_gate_failures(version=version)
    confirmed = request.POST.get("confirm_failed_gate") == "yes"
    if failures is not None and not confirmed:
        # Like "delete selected": a page that says what is at stake, posting the action again when confirmed.
        context = {
            **modeladmin.admin_site.each_context(request),
            "title": _("Activate version %(version)d, which failed its gate?") % {"version": version.version},
            "subtitle": None,
            "version": version,
            "reasons": failures,
            "opts": modeladmin.opts,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": modeladmin.media,
        }
        request.current_app = modeladmin.admin_site.name
        return TemplateResponse(request, "admin/predictor/modelversion/activate_failed_gate_confirmation.html", context)
    try:
        services.model_version_activate(
            version=version, activated_by=request.user, source="admin", confirm_failed_gate=confirmed
        )
    except services.ActivationRefused as error:
        modeladmin.message_user(request, str(error), messages.ERROR)
        return None
    message = _("Activated although it failed its gate.") if failures is not None else _("Activated.")
    modeladmin.log_change(request, version, message)
    modeladmin.message_user(
        request, _("Version %(version)d now answers predictions.") % {"version": version.version}, messages.SUCCESS
    )
    return None


class ModelActivationInline(admin.TabularInline):
    """The version's activations, newest first: when, by whom, from where, replacing which version, and why."""

    model = ModelActivation
    fk_name = "model_version"
    verbose_name_plural = _("activation history")
    fields = ("created_at", "activated_by_name", "source", "previous", "note")
    readonly_fields = fields
    extra = 0
    can_delete = False

    @admin.display(description=_("activated by"))
    def activated_by_name(self, activation):
        # Plain text, not the admin's link to the user: reviewers may not manage users, so it would answer 403.
        return activation.activated_by.get_username() if activation.activated_by else self.get_empty_value_display()

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("activated_by", "previous")

    def has_view_permission(self, request, obj=None):
        # Part of the version's record: whoever may see the version sees how it came to be served.
        return request.user.has_perm("predictor.view_modelversion") or request.user.has_perm(
            "predictor.change_modelversion"
        )

    def has_add_permission(self, request, obj=None):
        # Written only by services.model_version_activate.
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = (
        "version",
        "is_active",
        "mnist_test_accuracy",
        "canvas_val_accuracy",
        "reviewed_accuracy",
        "drawings_judged",
        "parent",
        "created_at",
    )
    list_select_related = ("parent",)
    actions = (activate_version,)
    inlines = (ModelActivationInline,)
    fieldsets = (
        (None, {"fields": ("version", "is_active", "lineage", "created_at", "notes", "artefacts")}),
        (_("How it reads digits"), {"fields": ("accuracy_table", "gate_verdict", "candidates")}),
        (_("Training"), {"fields": ("training_curves", "confusion_matrices")}),
        (_("Data, size and time"), {"fields": ("dataset_sizes", "model_facts")}),
        # Django draws a "collapse" fieldset as a closed <details>: the record is there, out of the way.
        (_("Raw record (JSON)"), {"classes": ("collapse",), "fields": ("raw_record",)}),
    )
    readonly_fields = (
        "version",
        "is_active",
        "lineage",
        "created_at",
        "notes",
        "artefacts",
        "accuracy_table",
        "gate_verdict",
        "candidates",
        "training_curves",
        "confusion_matrices",
        "dataset_sizes",
        "model_facts",
        "raw_record",
    )

    def get_queryset(self, request):
        return selectors.model_versions_with_counts(versions=super().get_queryset(request))

    def get_urls(self):
        dashboard = self.admin_site.admin_view(self.dashboard_view)
        return [path("dashboard/", dashboard, name="predictor_dashboard"), *super().get_urls()]

    def dashboard_view(self, request):
        """Return the model dashboard: per version, what it judged and how it did on reviewed drawings."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        stats = selectors.model_version_stats()
        context = {
            **self.admin_site.each_context(request),
            "title": _("Model dashboard"),
            "opts": self.opts,
            "stats": stats,
            "learning_chart": _learning_chart(stats),
            "counts": selectors.review_counts(),
            "low_confidence": settings.DIGIT_LOW_CONFIDENCE,
            "digits": range(10),
        }
        return TemplateResponse(request, "admin/predictor/dashboard.html", context)

    @admin.display(description=_("MNIST test accuracy"))
    def mnist_test_accuracy(self, version):
        return _percent(_metrics(version).get("mnist_test_accuracy"))

    @admin.display(description=_("canvas validation accuracy"))
    def canvas_val_accuracy(self, version):
        if _metrics(version).get("canvas_val_size") == 0:  # measured on no drawings at all: unknown, not 0%
            return None
        return _percent(_metrics(version).get("canvas_val_accuracy"))

    @admin.display(description=_("accuracy on reviewed drawings"))
    def reviewed_accuracy(self, version):
        if not version.reviewed:
            return None
        return f"{version.correct / version.reviewed:.1%} ({version.correct}/{version.reviewed})"

    @admin.display(description=_("drawings judged"), ordering="judged")
    def drawings_judged(self, version):
        return version.judged

    @admin.display(description=_("fine-tuned from"))
    def lineage(self, version):
        chain = selectors.model_version_ancestors(version=version)
        if not chain:
            return _("nothing: trained from scratch")
        links = format_html_join(
            " ← ",
            '<a href="{}">{}</a>',
            ((reverse("admin:predictor_modelversion_change", args=[v.id]), str(v)) for v in chain),
        )
        return format_html('<span class="lineage">{}</span>', links)

    @admin.display(description=_("accuracy"))
    def accuracy_table(self, version):
        rows = _accuracy_rows(version)
        if not rows:
            return NOT_RECORDED
        # A retrained version also records its parent's accuracies on the same sets: compare them.
        compared = any(earlier is not None for _label, _after, earlier, _size in rows)
        parent = selectors.json_object(_metrics(version).get("before")).get("version", "?")
        head = format_html_join(
            "",
            '<th scope="col">{}</th>',
            (
                (heading,)
                for heading in (
                    _("measured on"),
                    _("this version"),
                    *((_("before (v%(version)s)") % {"version": parent}, _("change")) if compared else ()),
                    _("how many"),
                )
            ),
        )
        cells = (
            (
                label,
                _percent(after, 2) or "-",
                *((_percent(earlier, 2) or "-", _change(earlier, after)) if compared else ()),
                "-" if size is None else f"{size:,}",
            )
            for label, after, earlier, size in rows
        )
        body = format_html_join(
            "",
            '<tr><th scope="row">{}</th>' + "<td>{}</td>" * (4 if compared else 2) + "</tr>",
            cells,
        )
        return format_html(
            '<table class="facts accuracy"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>', head, body
        )

    @admin.display(description=_("gate"))
    def gate_verdict(self, version):
        gate = _metrics(version).get("gate")
        if not isinstance(gate, dict):
            return _("None: the gate judges a retrained version against its parent.")
        if gate.get("passed"):
            verdict = format_html('<strong class="gate-passed">✓ {}</strong>', _("Passed: no worse than its parent."))
        else:
            # What happened when it was trained; a later activation by hand is in the activation history.
            if gate.get("forced"):
                failed = _("Failed, and served anyway (--force).")
            else:
                failed = _("Failed: not activated when it was trained.")
            verdict = format_html('<strong class="gate-failed">✗ {}</strong>', failed)
        reasons = gate.get("reasons")
        if not isinstance(reasons, list):
            reasons = []
        items = format_html_join("", "<li>{}</li>", ((reason,) for reason in reasons))
        return format_html('{}<ul class="gate-reasons">{}</ul>', verdict, items)

    @admin.display(description=_("candidates tried"))
    def candidates(self, version):
        # retrain tries its mixes in turn until the gate passes one; the last row is this version.
        tries = _metrics(version).get("tries")
        if not isinstance(tries, list) or not tries:
            return NOT_RECORDED if version.parent_id else _("None: it was trained from scratch.")
        rows = []
        for tried in tries:
            tried = selectors.json_object(tried)
            worst, delta = tried.get("worst_class"), tried.get("worst_class_delta")
            fit, mix = tried.get("fit_seconds"), tried.get("mix")
            if not isinstance(fit, int | float) or isinstance(fit, bool):
                fit = "-"
            else:
                fit = _duration(fit) if fit > 0 else _("none: the fit above")
            rows.append(
                (
                    mix if isinstance(mix, str) else "-",
                    _percent(tried.get("heldout_accuracy"), 1) or "-",
                    _percent(tried.get("mnist_test_accuracy"), 2) or "-",
                    _("%(digit)s: %(change)s points") % {"digit": worst, "change": _number(100 * delta, "{:+.2f}")}
                    if _is_number(worst) and isinstance(delta, int | float)
                    else _("none fell"),
                    fit,
                    _("passed") if tried.get("passed") is True else _("refused"),
                )
            )
        head = format_html_join(
            "",
            '<th scope="col">{}</th>',
            (
                (heading,)
                for heading in (
                    _("mix"),
                    _("held-out reviewed"),
                    _("MNIST test"),
                    _("MNIST digit that fell most"),
                    _("fit"),
                    _("gate"),
                )
            ),
        )
        body = format_html_join("", "<tr>" + '<th scope="row">{}</th>' + "<td>{}</td>" * 5 + "</tr>", rows)
        return format_html(
            '<table class="facts candidates"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>', head, body
        )

    @admin.display(description=_("training curves"))
    def training_curves(self, version):
        history = _metrics(version).get("history")
        if not isinstance(history, dict):
            return NOT_RECORDED
        # Training keeps the weights of its best epoch, not of its last: mark which.
        mark = _metrics(version).get("best_epoch")
        mark = mark if isinstance(mark, int) and not isinstance(mark, bool) else None
        mark_label = _("kept: epoch %(epoch)s") % {"epoch": mark}
        figures = []
        for title, keys, percent in (
            (_("Loss per epoch"), ("loss", "val_loss"), False),
            (_("Accuracy per epoch"), ("accuracy", "val_accuracy"), True),
        ):
            # A retrain measures the held-out reviewed drawings after each epoch; training, its validation set.
            names = (_("training"), _("held-out reviewed") if version.parent_id else _("validation"))
            series = {str(name): history[key] for key, name in zip(keys, names) if key in history}
            try:
                chart = charts.line_chart(series, title=str(title), percent=percent, mark=mark, mark_label=mark_label)
            except ValueError:  # no values under these keys
                continue
            figures.append(format_html("<figure><figcaption>{}</figcaption>{}</figure>", title, chart))
        return format_html('<div class="charts">{}</div>', mark_safe("".join(figures))) if figures else NOT_RECORDED

    @admin.display(description=_("confusion matrices"))
    def confusion_matrices(self, version):
        figures = []
        for key, title in (
            ("confusion", _("MNIST test digits")),
            ("confusion_canvas", _("Canvas-style validation drawings")),
            ("confusion_heldout", _("Held-out reviewed drawings")),
        ):
            matrix = _metrics(version).get(key)
            if not isinstance(matrix, list) or not all(isinstance(row, list) for row in matrix):
                continue
            try:
                chart = charts.confusion_matrix_chart(matrix, title=str(title))
            except ValueError:  # not square, or not counts
                continue
            figures.append(format_html("<figure><figcaption>{}</figcaption>{}</figure>", title, chart))
        return format_html('<div class="charts">{}</div>', mark_safe("".join(figures))) if figures else NOT_RECORDED

    @admin.display(description=_("data"))
    def dataset_sizes(self, version):
        sizes = selectors.json_object(version.training_data).get("sizes")
        rows = [(SIZE_LABELS.get(key, key), value) for key, value in sizes.items()] if isinstance(sizes, dict) else []
        config = selectors.json_object(_metrics(version).get("config"))
        rows += [
            (label, source.get(key))
            for source, key, label in (
                (_metrics(version), "train_images", _("images trained on (MNIST and canvas-style)")),
                (config, "synthetic_size", _("canvas-style drawings made from MNIST for training")),
                (config, "validation_size", _("MNIST validation digits")),
                (_metrics(version), "canvas_val_size", _("canvas-style validation drawings")),
            )
            if source.get(key) is not None
        ]
        return _facts_table(rows)

    @admin.display(description=_("model and run"))
    def model_facts(self, version):
        metrics = _metrics(version)
        rows = [
            (_("parameters"), _number(metrics.get("params"))),
            (_(".tflite file"), _file_size(metrics.get("tflite_bytes"))),
            (_("largest .tflite/.keras difference"), _number(metrics.get("tflite_max_abs_diff"), "{:.1e}")),
            (_("time training (fit)"), _duration(metrics.get("fit_seconds"))),
            (_("time for the whole run"), _duration(metrics.get("train_seconds"))),
            (_("epoch kept"), _number(metrics.get("best_epoch"))),
            (_("random seed"), _number(metrics.get("seed"))),
        ]
        return _facts_table([(label, value) for label, value in rows if value is not None])

    @admin.display(description=_("metrics and training data"))
    def raw_record(self, version):
        record = {"metrics": version.metrics, "training_data": version.training_data}
        # It scrolls on its own, so it takes the focus: keyboard users can scroll it too.
        return format_html(
            '<pre class="raw-record" tabindex="0" role="region" aria-label="{}">{}</pre>',
            _("Metrics and training data as JSON"),
            json.dumps(record, indent=2, sort_keys=True),
        )

    @admin.display(description=_("artefacts"))
    def artefacts(self, version):
        return format_html("{}<br>{}", version.tflite.name, version.keras.name)

    def has_add_permission(self, request):
        # Versions are registered by the train and retrain commands.
        return False

    def has_change_permission(self, request, obj=None):
        # Changing the list means running "activate"; a version's own page stays read-only.
        return obj is None and super().has_change_permission(request)

    def has_delete_permission(self, request, obj=None):
        return False


def _learning_chart(stats: list[selectors.ModelVersionStats]) -> str | None:
    """Return the dashboard's chart of held-out and live accuracy by version, or None if there is nothing to compare.

    `stats` come newest first, as the dashboard lists them; the chart reads left to right, oldest first.
    """
    if len(stats) < 2:
        return None
    columns = []
    for row in reversed(stats):
        heldout = row.heldout
        columns.append(
            charts.VersionAccuracy(
                name=f"v{row.version.version}",
                parent=f"v{heldout.parent}" if heldout and heldout.parent is not None else "",
                before=heldout.before if heldout else None,
                after=heldout.accuracy if heldout else None,
                live=row.accuracy,
                live_count=row.reviewed,
            )
        )
    try:
        return charts.version_accuracy_chart(columns, title=gettext("Accuracy by model version"))
    except ValueError:  # no version has a held-out or live accuracy yet
        return None


def _metrics(version: ModelVersion) -> dict:
    """Return the version's recorded metrics, or an empty dict if what is stored is not a JSON object."""
    return selectors.json_object(version.metrics)


def _percent(value: float | None, decimals: int = 1) -> str | None:
    """Return a share as a percentage, or None (shown as the admin's empty value) if unknown."""
    return f"{value:.{decimals}%}" if _is_number(value) else None


def _is_number(value) -> bool:
    """Return whether a value read from stored JSON is a number (JSON has no other check)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _change(before, after) -> str:
    """Return the change between two shares in percentage points ("+1.20 points"), or "-" if either is unknown."""
    if not (_is_number(before) and _is_number(after)):
        return "-"
    return _("%(change)s points") % {"change": f"{(after - before) * 100:+.2f}"}


def _accuracy_rows(version: ModelVersion) -> list[tuple[str, float | None, float | None, int | None]]:
    """Return (measured on, accuracy, accuracy before retraining, set size) for each accuracy the version records.

    The keys are those `train` and `retrain` write; a version read on none of them has no rows.
    """
    metrics = _metrics(version)
    sizes = selectors.json_object(selectors.json_object(version.training_data).get("sizes"))
    mnist_test_size = sizes.get("mnist_test")
    confusion = metrics.get("confusion")
    if mnist_test_size is None and isinstance(confusion, list):  # the shipped model counts its test set this way
        mnist_test_size = sum(sum(row) for row in confusion if isinstance(row, list) and all(map(_is_number, row)))
    canvas = None if metrics.get("canvas_val_size") == 0 else metrics.get("canvas_val_accuracy")  # 0 drawings: unknown
    reviewed = getattr(version, "reviewed", 0)  # counted by get_queryset
    live = getattr(version, "correct", 0) / reviewed if reviewed else None
    heldout_size = metrics.get("heldout_size", sizes.get("heldout"))
    validation_size = selectors.json_object(metrics.get("config")).get("validation_size")
    rows = [
        (_("MNIST test digits"), *_now_and_before(metrics, "mnist_test_accuracy"), mnist_test_size),
        (_("canvas-style validation drawings"), canvas, None, metrics.get("canvas_val_size")),
        (_("MNIST validation digits"), metrics.get("mnist_val_accuracy"), None, validation_size),
        (_("reviewed drawings held out from retraining"), *_now_and_before(metrics, "heldout_accuracy"), heldout_size),
        (_("reviewed drawings it was retrained on"), *_now_and_before(metrics, "train_accuracy"), sizes.get("train")),
        (_("reviewed drawings it judged when served"), live, None, reviewed),
    ]
    numbers = [(label, *(value if _is_number(value) else None for value in values)) for label, *values in rows]
    return [row for row in numbers if row[1] is not None or row[2] is not None]


def _now_and_before(metrics: dict, key: str) -> tuple:
    """Return the version's value of `key` and its parent's, as retrain recorded it under "before"."""
    return metrics.get(key), selectors.json_object(metrics.get("before")).get(key)


def _facts_table(rows: Sequence[tuple[Any, object]]) -> str | Promise:
    """Return a two-column table of (label, value) rows, or says there is nothing recorded."""
    if not rows:
        return NOT_RECORDED
    shown = ((label, f"{value:,}" if _is_number(value) and isinstance(value, int) else value) for label, value in rows)
    body = format_html_join("", '<tr><th scope="row">{}</th><td>{}</td></tr>', shown)
    return format_html('<table class="facts"><tbody>{}</tbody></table>', body)


def _number(value, pattern: str = "{:,}") -> str | None:
    """Return a number from stored JSON formatted with `pattern`, or None if it is not a number."""
    return pattern.format(value) if _is_number(value) else None


def _file_size(size) -> str | None:
    """Return a size in bytes as "566 KB (566,208 bytes)" (decimal units), or None if it is not a number."""
    if not _is_number(size):
        return None
    if size >= 1_000_000:
        return f"{size / 1_000_000:.1f} MB ({size:,} bytes)"
    return f"{size / 1000:.0f} KB ({size:,} bytes)"


def _duration(seconds) -> str | None:
    """Return a duration as "41 s", "12.5 min" or "1.3 h", or None if it is not a number."""
    if not _is_number(seconds):
        return None
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class RetrainRequestForm(forms.Form):
    """What staff may choose when they ask for a retrain from the admin; everything else is the command's default."""

    no_activate = forms.BooleanField(
        label=_("Record the new version without serving it"),
        required=False,
        help_text=_("Otherwise the new version is served as soon as it passes the gate."),
    )


@admin.register(RetrainRun)
class RetrainRunAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "status",
        "requester",
        "source",
        "created_at",
        "started_at",
        "finished_at",
        "progress",
        "model_version",
    )
    list_filter = ("status", "source")
    list_select_related = ("requested_by", "model_version")
    fieldsets = (
        # Status and progress head the page (templates/admin/predictor/retrainrun/change_form.html).
        (None, {"fields": ("model_version", "requester", "source", "options_given")}),
        (_("When and where"), {"fields": ("created_at", "started_at", "heartbeat_at", "finished_at", "host")}),
        (_("Log"), {"fields": ("log_text",)}),
    )
    readonly_fields = (
        "model_version",
        "requester",
        "source",
        "options_given",
        "created_at",
        "started_at",
        "heartbeat_at",
        "finished_at",
        "host",
        "log_text",
    )

    @admin.display(description=_("requested by"), ordering="requested_by__username")
    def requester(self, run):
        # Plain text, not the admin's link to the user: staff who may retrain may not manage users.
        return run.requested_by.get_username() if run.requested_by else self.get_empty_value_display()

    @admin.display(description=_("options"))
    def options_given(self, run):
        if not run.options:
            return _("the retrain command's defaults")
        return " ".join(
            f"--{name.replace('_', '-')}" + ("" if value is True else f" {value}")
            for name, value in run.options.items()
        )

    @admin.display(description=_("log"))
    def log_text(self, run):
        return format_html('<pre class="run-log">{}</pre>', run.log or gettext("Nothing written yet."))

    def has_add_permission(self, request):
        # Runs are asked for with "Retrain now" (or the command), never written by hand.
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        # The record of what was trained, and when, stays.
        return False

    def get_urls(self):
        request_run = self.admin_site.admin_view(self.request_view)
        return [path("request/", request_run, name="predictor_retrainrun_request"), *super().get_urls()]

    def request_view(self, request):
        """Return the "Retrain now" form; a valid POST queues a run and redirects to its page."""
        if not (self.has_view_permission(request) and request.user.has_perm("predictor.start_retrainrun")):
            raise PermissionDenied
        form = RetrainRequestForm(request.POST if request.method == "POST" else None)
        if form.is_valid():
            options = {"no_activate": True} if form.cleaned_data["no_activate"] else {}
            try:
                run = tasks.retrain_run_request(requested_by=request.user, source="admin", options=options)
            except tasks.RetrainAlreadyQueued as error:
                self.message_user(request, str(error), messages.WARNING)
                return HttpResponseRedirect(reverse("admin:predictor_retrainrun_changelist"))
            self.log_addition(request, run, gettext("Asked for with Retrain now."))
            self.message_user(
                request,
                gettext("Retrain #%(id)d is queued; the task worker starts it.") % {"id": run.pk},
                messages.SUCCESS,
            )
            return HttpResponseRedirect(reverse("admin:predictor_retrainrun_change", args=[run.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": _("Retrain now"),
            "opts": self.opts,
            "form": form,
            "pending": RetrainRun.objects.filter(
                status__in=[RetrainRun.Status.QUEUED, RetrainRun.Status.RUNNING]
            ).order_by("created_at"),
            "dataset_size": selectors.finetuning_dataset().count(),
        }
        return TemplateResponse(request, "admin/predictor/retrainrun/request.html", context)
