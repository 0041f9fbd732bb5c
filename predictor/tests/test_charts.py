import json
import xml.etree.ElementTree as ET

import pytest
from django.conf import settings

from predictor import charts

SVG = "{http://www.w3.org/2000/svg}"
BASE_METRICS = json.loads((settings.BASE_DIR / "training" / "artifacts" / "base" / "metrics.json").read_text())


def parse(svg: str) -> ET.Element:
    """Parse a chart as XML (it must be well-formed to be one) with the SVG namespace the page gives it."""
    return ET.fromstring(svg.replace("<svg ", f'<svg xmlns="{SVG[1:-1]}" ', 1))


def test_training_curves_draw_one_line_and_one_point_per_value():
    history = BASE_METRICS["history"]
    svg = charts.line_chart({"training": history["loss"], "validation": history["val_loss"]}, title="Loss")
    root = parse(svg)

    assert root.get("role") == "img"
    assert len(root.findall(f"{SVG}polyline")) == 2
    assert len(root.findall(f"{SVG}circle")) == 2 * 12
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "training" in texts and "validation" in texts and "epoch" in texts
    assert [str(e) for e in range(1, 13)] == [t for t in texts if t.isdigit()]  # every epoch labelled


def test_every_point_lies_inside_the_plot_and_the_axis_covers_the_values():
    values = [0.8907, 0.9667, 0.9882, 0.9993]
    root = parse(charts.line_chart({"accuracy": values}, title="Accuracy", percent=True))
    grid = [float(line.get("y1")) for line in root.findall(f"{SVG}line") if line.get("x1") != line.get("x2")]
    top, bottom = min(grid), max(grid)
    heights = [float(circle.get("cy")) for circle in root.findall(f"{SVG}circle")]

    assert all(top <= y <= bottom for y in heights)
    assert heights == sorted(heights, reverse=True)  # higher accuracy is drawn higher
    ticks = [t.text for t in root.iter(f"{SVG}text") if t.text.endswith("%")]
    assert ticks[0] == "85%" and ticks[-1] == "100%"


def test_chart_describes_itself_in_words_for_screen_readers():
    svg = charts.line_chart({"training": [0.39, 0.11, 0.04], "validation": [0.16, 0.08]}, title="Loss per epoch")
    label = parse(svg).get("aria-label")
    assert label == (
        "Loss per epoch. training from 0.39 at epoch 1 to 0.04 at epoch 3; "
        "validation from 0.16 at epoch 1 to 0.08 at epoch 2."
    )


@pytest.mark.parametrize("missing", [None, float("nan"), float("inf"), "0.5", True])
def test_a_missing_or_unusable_value_leaves_a_gap(missing):
    root = parse(charts.line_chart({"loss": [0.5, 0.4, missing, 0.2, 0.1]}, title="Loss"))
    assert len(root.findall(f"{SVG}polyline")) == 2
    assert len(root.findall(f"{SVG}circle")) == 4


@pytest.mark.parametrize("series", [{}, {"loss": []}, {"loss": [None, float("nan")]}, {"loss": "0.1, 0.2"}])
def test_a_chart_without_values_is_refused(series):
    with pytest.raises(ValueError):
        charts.line_chart(series, title="Loss")


def test_a_single_epoch_or_a_flat_line_still_draws():
    root = parse(charts.line_chart({"loss": [0.25]}, title="Loss"))
    assert len(root.findall(f"{SVG}circle")) == 1
    flat = parse(charts.line_chart({"accuracy": [1.0, 1.0, 1.0]}, title="Accuracy", percent=True))
    assert len({circle.get("cy") for circle in flat.findall(f"{SVG}circle")}) == 1


def test_the_kept_epoch_is_marked_only_when_it_is_on_the_chart():
    values = {"loss": [0.3, 0.2, 0.1]}
    marked = parse(charts.line_chart(values, title="Loss", mark=2, mark_label="kept: epoch 2"))
    assert "kept: epoch 2" in [t.text for t in marked.iter(f"{SVG}text")]
    assert any(line.get("x1") == line.get("x2") for line in marked.findall(f"{SVG}line"))

    for outside in (0, 4, None):
        root = parse(charts.line_chart(values, title="Loss", mark=outside, mark_label="kept"))
        assert "kept" not in [t.text for t in root.iter(f"{SVG}text")]


def test_names_and_titles_are_escaped():
    svg = charts.line_chart({'<b onclick="x">&': [1, 2]}, title="</svg><script>x</script>", mark=1, mark_label="<i>")
    assert "<script>" not in svg and "<b " not in svg and "<i>" not in svg
    assert "&lt;/svg&gt;&lt;script&gt;" in svg and "&lt;b onclick=&quot;x&quot;&gt;&amp;" in svg
    parse(svg)

    matrix = charts.confusion_matrix_chart([[1]], title="<script>", rows="<r>", columns='"c"')
    assert "<script>" not in matrix and "<r>" not in matrix and "&lt;r&gt;" in matrix
    parse(matrix)


def test_confusion_matrix_shows_every_cell_and_says_how_many_were_right():
    matrix = BASE_METRICS["confusion"]
    svg = charts.confusion_matrix_chart(matrix, title="MNIST test digits")
    root = parse(svg)

    assert len(root.findall(f"{SVG}g/{SVG}rect")) == 100
    numbers = [t.text for t in root.findall(f"{SVG}g/{SVG}text")]
    assert len(numbers) == sum(1 for row in matrix for count in row if count)  # empty cells stay blank
    assert root.get("aria-label") == (
        "MNIST test digits. 9965 of 10000 right (99.65%); "
        "most frequent mistakes: 9 read as 4 (5), 6 read as 0 (2), 5 read as 3 (2)."
    )
    tooltips = [g.find(f"{SVG}title").text for g in root.findall(f"{SVG}g")]
    assert "true digit 9, read as 4: 5" in tooltips


def test_confusion_matrix_colours_right_answers_by_row_share_and_mistakes_against_the_worst():
    root = parse(charts.confusion_matrix_chart([[90, 10], [0, 0]], title="t"))
    cells = [(rect.get("fill"), float(rect.get("fill-opacity"))) for rect in root.findall(f"{SVG}g/{SVG}rect")]

    assert cells[0] == (charts.CORRECT_COLOUR, 0.9)
    assert cells[1] == (charts.MISTAKE_COLOUR, 1.0)  # the only mistake is the worst one
    assert cells[2][1] == 0.0 and cells[3][1] == 0.0  # an empty row is blank, not a division by zero
    numbers = {t.text: t.get("fill") for t in root.findall(f"{SVG}g/{SVG}text")}
    assert numbers == {"90": "#fff", "10": "#fff"}  # white on dark cells, the page's colour elsewhere


@pytest.mark.parametrize(
    "matrix", [[], [[1, 2], [3]], [[1, 2, 3], [4, 5, 6]], [[1, -1], [0, 1]], [[1, "2"], [0, 1]], [[1, None], [0, 1]]]
)
def test_confusion_matrix_refuses_what_is_not_a_square_of_counts(matrix):
    with pytest.raises(ValueError):
        charts.confusion_matrix_chart(matrix, title="t")


def version(name, before=None, after=None, live=None, *, parent="", live_count=0):
    return charts.VersionAccuracy(name, parent, before, after, live, live_count)


def marks(root: ET.Element) -> dict[str, list[ET.Element]]:
    """Return the chart's marks by kind, legend left out: hollow and filled circles, squares, joining lines."""
    circles = [c for c in root.findall(f"{SVG}circle") if c.find(f"{SVG}title") is not None]
    return {
        "before": [c for c in circles if c.get("fill") == "none"],
        "after": [c for c in circles if c.get("fill") != "none"],
        "live": [r for r in root.findall(f"{SVG}rect") if r.find(f"{SVG}title") is not None],
        "pairs": [line for line in root.findall(f"{SVG}line") if line.get("stroke") == charts.HELDOUT_COLOUR],
    }


def test_accuracy_by_version_joins_each_retrain_before_and_after_and_marks_live_accuracy():
    columns = [
        version("v1", live=0.7, live_count=20),
        version("v2", 0.725, 0.85, 0.85, parent="v1", live_count=20),
        version("v3", 0.9, 0.88, parent="v2"),
    ]
    root = parse(charts.version_accuracy_chart(columns, title="Accuracy by model version"))
    drawn = marks(root)

    assert (len(drawn["before"]), len(drawn["after"]), len(drawn["live"]), len(drawn["pairs"])) == (2, 2, 2, 2)
    # Higher accuracy is drawn higher: v2 rose, v3 fell.
    assert float(drawn["after"][0].get("cy")) < float(drawn["before"][0].get("cy"))
    assert float(drawn["after"][1].get("cy")) > float(drawn["before"][1].get("cy"))
    # Versions read left to right in the order given.
    xs = [float(c.get("cx")) for c in drawn["after"]]
    assert xs == sorted(xs)
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert [t for t in texts if t in ("v1", "v2", "v3")] == ["v1", "v2", "v3"]
    assert "accuracy (%)" in texts and "model version" in texts
    assert {"parent, held out", "version, held out", "version, live"} <= set(texts)  # the legend
    ticks = [t for t in texts if t.endswith("%") and t[:-1].isdigit()]
    assert ticks[0] == "70%" and ticks[-1] == "90%"
    assert root.get("aria-label") == (
        "Accuracy by model version. v1: live 70.0%; v2: held out 72.5% (v1) to 85.0%, live 85.0%; "
        "v3: held out 90.0% (v2) to 88.0%."
    )
    titles = [t.text for t in root.iter(f"{SVG}title")]
    assert "v1 on the drawings held out from v2: 72.5%" in titles
    assert "v1 live: 70.0% of 20 reviewed drawings read right" in titles


def test_accuracy_by_version_names_twenty_versions_and_thins_the_names_of_more():
    twenty = parse(charts.version_accuracy_chart([version(f"v{n}", live=0.9) for n in range(1, 21)], title="t"))
    names = [t.text for t in twenty.iter(f"{SVG}text") if t.text.startswith("v") and t.text[1:].isdigit()]
    assert names == [f"v{n}" for n in range(1, 21)]
    assert int(twenty.get("width")) <= 880

    sixty = parse(charts.version_accuracy_chart([version(f"v{n}", live=0.9) for n in range(1, 61)], title="t"))
    names = [t.text for t in sixty.iter(f"{SVG}text") if t.text.startswith("v") and t.text[1:].isdigit()]
    assert 10 < len(names) < 60 and names[-1] == "v60"  # the newest is always named
    xs = [float(t.get("x")) for t in sixty.iter(f"{SVG}text") if t.text in names]
    assert min(b - a for a, b in zip(xs, xs[1:])) >= charts.VERSION_LABEL_WIDTH


def test_accuracy_by_version_keeps_its_axis_within_0_and_100_percent():
    root = parse(charts.version_accuracy_chart([version("v1", live=1.0), version("v2", 1.0, 1.0)], title="t"))
    ticks = [t.text for t in root.iter(f"{SVG}text") if t.text.endswith("%") and t.text[:-1].isdigit()]
    assert ticks[-1] == "100%" and all(int(t[:-1]) <= 100 for t in ticks)
    grid = [float(line.get("y1")) for line in root.findall(f"{SVG}line") if line.get("stroke") == "currentColor"]
    heights = [float(c.get("cy")) for c in root.findall(f"{SVG}circle") if c.find(f"{SVG}title") is not None]
    assert all(min(grid) <= y <= max(grid) for y in heights)


@pytest.mark.parametrize("odd", [None, float("nan"), 1.5, -0.1, "0.9", True])
def test_accuracy_by_version_leaves_out_what_is_not_a_share(odd):
    root = parse(charts.version_accuracy_chart([version("v1", live=0.8), version("v2", odd, 0.9, odd)], title="t"))
    drawn = marks(root)
    assert (len(drawn["before"]), len(drawn["after"]), len(drawn["live"]), len(drawn["pairs"])) == (0, 1, 1, 0)
    assert "v2: held out ? (?) to 90.0%" in root.get("aria-label")


@pytest.mark.parametrize("columns", [[], [version("v1")], [version("v1", live=2.0), version("v2", "x")]])
def test_accuracy_by_version_without_any_share_is_refused(columns):
    with pytest.raises(ValueError):
        charts.version_accuracy_chart(columns, title="t")


def test_accuracy_by_version_escapes_names():
    svg = charts.version_accuracy_chart([version("<b>v1</b>", 0.5, 0.6, parent="<i>")], title="<script>")
    assert "<script>" not in svg and "<b>" not in svg and "<i>" not in svg
    parse(svg)
