"""Pages: the canvas, the visitor's history, drawing images for those allowed to see them, and the icon."""

from django.core.paginator import Paginator
from django.http import FileResponse, Http404
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.views.decorators.http import require_safe

from predictor import selectors, services
from predictor.models import Drawing

HISTORY_PAGE_SIZE = 24


@require_safe
def index(request):
    """Return the drawing page."""
    return render(request, "predictor/index.html")


@require_safe
def history(request):
    """Return a page of this visitor's drawings, newest first."""
    drawings = selectors.drawing_history(visitor=services.visitor_for_session(request.session, create=False))
    page_obj = Paginator(drawings, HISTORY_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "predictor/history.html", {"page_obj": page_obj})


@require_safe
def drawing_image(request, drawing_id):
    """Return the stored image of a drawing to the visitor who made it or to staff."""
    try:
        drawing = selectors.drawing_get(
            drawing_id=drawing_id,
            visitor=services.visitor_for_session(request.session, create=False),
            user=request.user,
        )
        image = drawing.image.open("rb")
    except (Drawing.DoesNotExist, FileNotFoundError):
        raise Http404("No such drawing.") from None
    response = FileResponse(image)
    response["Cache-Control"] = "private, max-age=86400"
    return response


@require_safe
def favicon(request):
    """Return a redirect to the site's icon, for browsers that ask /favicon.ico on pages that link none."""
    # Temporary: a cached permanent redirect would outlive the hashed name after the next deploy.
    return redirect(static("favicon.ico"))
