"""Refuse request bodies that are too large before anything reads them."""

from django.conf import settings
from django.http import JsonResponse


class RequestSizeLimitMiddleware:
    """Answer 413 when the declared body size is over DIGIT_MAX_UPLOAD_BYTES, 400 when it is not a size.

    Django reads at most Content-Length bytes of a body, and none without the header (chunked), so
    checking the header is enough to keep an oversized body out of memory.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        declared = request.META.get("CONTENT_LENGTH") or "0"
        if not (declared.isascii() and declared.isdigit()):
            return JsonResponse(
                {"code": "malformed_request", "detail": "The Content-Length header is not a number of bytes."},
                status=400,
            )
        length = int(declared)
        limit = settings.DIGIT_MAX_UPLOAD_BYTES
        if length > limit:
            return JsonResponse(
                {
                    "code": "payload_too_large",
                    "detail": f"The request body is {length} bytes; the limit is {limit} bytes. "
                    "Send a smaller image (a canvas PNG is usually well under 100 kB).",
                },
                status=413,
            )
        return self.get_response(request)
