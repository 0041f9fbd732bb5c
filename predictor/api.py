"""The JSON API: thin views that check input, call one service and shape the answer.

Every error is {"code", "detail"}; the OpenAPI schema documents each endpoint's errors from ERRORS.
"""

import io
import re
from typing import cast

from django.contrib.auth.models import User
from django.core.exceptions import SuspiciousOperation
from django.core.files.uploadedfile import UploadedFile
from django.utils.functional import SimpleLazyObject
from drf_spectacular.renderers import OpenApiYamlRenderer
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import exceptions, parsers, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from predictor import selectors, services
from predictor.imagefile import PreprocessingError, decode_payload
from predictor.model_cache import NO_ACTIVE_VERSION, ModelUnavailable
from predictor.models import Drawing
from predictor.throttling import ClientRateThrottle

# The code each kind of DRF failure is reported with; the HTTP status is the exception's own.
ERROR_CODES = {
    exceptions.ParseError: "malformed_request",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "not_authenticated",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.Throttled: "throttled",
    exceptions.NotAcceptable: "not_acceptable",
}


# DRF's own validation codes, reported under the view's `invalid_input_code` instead.
GENERIC_VALIDATION_CODES = {
    "invalid",
    "required",
    "null",
    "blank",
    "min_value",
    "max_value",
    "max_string_length",
    "not_a_list",
}

NOT_FOUND = "No such prediction, or it was made in another browser session."

# The API's bodies are flat objects. Deeper nesting is refused before the body is parsed: Python's JSON
# parser, and anything walking what it returns, fails with a RecursionError at about a thousand levels.
MAX_JSON_DEPTH = 32
JSON_ESCAPE = re.compile(rb"\\.", re.DOTALL)
BRACES_AS_BRACKETS = bytes.maketrans(b"{}", b"[]")
NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
TOO_DEEP = (
    f"The JSON body nests arrays or objects more than {MAX_JSON_DEPTH} levels deep; "
    'send one flat object, such as {"image": "data:image/png;base64,..."}.'
)

# Every error the API documents (the README's list, and the CSRF refusal of a signed-in session):
# code -> (HTTP status, an example of its detail).
ERRORS = {
    "invalid_image": (400, "The file is not a PNG, JPEG or WebP image."),
    "empty_drawing": (400, "Draw a digit first: the canvas is empty."),
    "image_too_large": (
        400,
        "The image is 3000x2000 pixels; no side may be longer than 2048 pixels: scale it down "
        "(the drawing page sends 280x280).",
    ),
    "invalid_label": (400, 'Send either {"label": 0-9} or {"correct": true}.'),
    "malformed_request": (400, "JSON parse error - Expecting value: line 1 column 11 (char 10)"),
    "permission_denied": (403, "CSRF Failed: CSRF token missing."),
    "not_found": (404, NOT_FOUND),
    "payload_too_large": (
        413,
        "The request body is 6000000 bytes; the limit is 5242880 bytes. "
        "Send a smaller image (a canvas PNG is usually well under 100 kB).",
    ),
    "unsupported_media_type": (415, 'Unsupported media type "text/plain" in request.'),
    "throttled": (429, "Request was throttled. Expected available in 12 seconds."),
    "model_unavailable": (503, NO_ACTIVE_VERSION),
}
ERROR_STATUSES = {
    400: "The request is refused: `code` says what is wrong with it.",
    403: "A signed-in (staff) session sent no CSRF token; anonymous visitors need none.",
    404: NOT_FOUND,
    413: "The request body is larger than DIGIT_MAX_UPLOAD_BYTES (checked before it is read).",
    415: "The body is neither JSON nor multipart/form-data.",
    429: "Too many requests from this client; the Retry-After header says how many seconds to wait.",
    503: "No model can answer right now: none is active, or its file cannot be loaded.",
}


def _json_nested_deeper_than(body: bytes, depth: int) -> bool:
    """Return whether the JSON text `body` nests arrays or objects more than `depth` levels deep.

    Exact for valid JSON, in a few passes over bytes in C (a loop in Python over a hostile body of
    megabytes would cost seconds): strings and escapes are cut out, braces count as brackets, and each
    pass peels off the innermost pairs, one level. Invalid JSON is for the parser to refuse.
    """
    if body.count(b"[") + body.count(b"{") <= depth:
        return False
    if b"\\" in body:
        body = JSON_ESCAPE.sub(b"", body)
    brackets = b"".join(body.split(b'"')[::2]).translate(BRACES_AS_BRACKETS, NOT_BRACKETS)
    for peeled in range(depth + 1):
        # Openers in a row are nested in one another, on top of the levels already peeled off.
        if b"[" * (depth + 1 - peeled) in brackets:
            return True
        if b"[]" not in brackets:
            return False
        brackets = brackets.replace(b"[]", b"")
    return False


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, refusing a body nested more than MAX_JSON_DEPTH levels deep as malformed."""

    def parse(self, stream, media_type=None, parser_context=None):
        body = stream.read()
        if _json_nested_deeper_than(body, MAX_JSON_DEPTH):
            raise exceptions.ParseError(TOO_DEEP)
        try:
            return super().parse(io.BytesIO(body), media_type, parser_context)
        except RecursionError:  # brackets never closed, which the check above leaves to the parser
            raise exceptions.ParseError(TOO_DEEP) from None


class MultiPartParser(parsers.MultiPartParser):
    """DRF's multipart parser, reading fields as UTF-8 and refusing too many parts as malformed."""

    def parse(self, stream, media_type=None, parser_context=None):
        # The charset a client declares is ignored: the fields are a file or ASCII base64, and some
        # codecs Python knows (idna) fail inside Django's parser with a server error.
        context = {**(parser_context or {}), "encoding": "utf-8"}
        try:
            return super().parse(stream, media_type, context)
        except SuspiciousOperation:  # more fields or files than Django accepts, or a broken part
            raise exceptions.ParseError(
                "The multipart body has too many fields or files, or a malformed part; send one field named image."
            ) from None


# Both endpoints that take a body read it with these.
PARSERS = [JSONParser, MultiPartParser]


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "model_unavailable"


def _first_message(detail) -> str:
    """Return the first error sentence in a DRF error structure, prefixed by its field name."""
    if isinstance(detail, dict):
        field, errors = next(iter(detail.items()))
        message = _first_message(errors)
        return message if field == "non_field_errors" else f"{field}: {message}"
    if isinstance(detail, list):
        return _first_message(detail[0]) if detail else "Invalid request."
    return str(detail)


def _first_code(codes) -> str:
    """Return the first error code in a DRF code structure."""
    if isinstance(codes, dict):
        return _first_code(next(iter(codes.values())))
    if isinstance(codes, list):
        return _first_code(codes[0]) if codes else "invalid"
    return str(codes)


def exception_handler(exc, context):
    """Return every API error as {"code": ..., "detail": <a sentence a person can act on>}."""
    if isinstance(exc, PreprocessingError):
        exc = exceptions.ValidationError([str(exc)], code=exc.code)
    elif isinstance(exc, ModelUnavailable):
        exc = ServiceUnavailable(str(exc))
    elif isinstance(exc, Drawing.DoesNotExist):  # selectors.drawing_get: missing, or not this visitor's
        exc = exceptions.NotFound(NOT_FOUND)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        code = _first_code(exc.get_codes())
        if code in GENERIC_VALIDATION_CODES:
            code = getattr(context.get("view"), "invalid_input_code", "invalid")
    else:
        code = next((c for cls, c in ERROR_CODES.items() if isinstance(exc, cls)), None) or exc.default_code
    response.data = {"code": code, "detail": _first_message(exc.detail)}
    return response


class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="What went wrong, for programs: invalid_image, not_found, ...")
    detail = serializers.CharField(help_text="What went wrong and what to do, for people.")

    class Meta:
        ref_name = "Error"


def error_responses(*codes: str) -> dict[int, OpenApiResponse]:
    """Return the OpenAPI error responses of an endpoint that answers with these codes, by status."""
    statuses = sorted({ERRORS[code][0] for code in codes})
    return {
        status_code: OpenApiResponse(
            response=ErrorSerializer,
            description=ERROR_STATUSES[status_code],
            examples=[
                OpenApiExample(code, value={"code": code, "detail": ERRORS[code][1]})
                for code in codes
                if ERRORS[code][0] == status_code
            ],
        )
        for status_code in statuses
    }


class SchemaTextRenderer(OpenApiYamlRenderer):
    """The OpenAPI schema as YAML labelled text/plain, so that a browser shows it rather than saving it."""

    media_type = "text/plain"


@extend_schema_field(OpenApiTypes.STR)
class ImagePayloadField(serializers.Field):
    """A drawing as a data URL or bare base64 string (JSON), or as an uploaded file (multipart); gives bytes."""

    default_error_messages = {
        "invalid_image": "Send the drawing as a PNG, JPEG or WebP data URL string, or as a file field named image.",
    }

    def to_internal_value(self, data) -> bytes:
        # A PreprocessingError (bad base64, wrong type) propagates: the exception handler reports its
        # code and sentence as they are.
        if isinstance(data, UploadedFile):
            return data.read()
        if isinstance(data, str):
            return decode_payload(data)
        self.fail("invalid_image")

    def to_representation(self, value):
        return None


# Formats created_at as the declared DateTimeField does (ISO 8601, in the current time zone).
_DATETIME = serializers.DateTimeField()


class PredictionOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    predicted_label = serializers.IntegerField()
    confidence = serializers.FloatField()
    probabilities = serializers.ListField(child=serializers.FloatField())
    model_version = serializers.IntegerField(source="model_version.version")
    input_image = serializers.CharField(source="input_image_data_url", help_text="The 28x28 PNG the model saw.")
    created_at = serializers.DateTimeField()
    feedback_label = serializers.IntegerField(allow_null=True)
    true_label = serializers.IntegerField(allow_null=True)

    def to_representation(self, drawing: Drawing) -> dict:
        # The fields above document the answer (OpenAPI); building it directly skips DRF's per-instance
        # deep copy of every declared field, 0.3 ms of each prediction. A test compares both ways.
        return {
            "id": str(drawing.id),
            "predicted_label": drawing.predicted_label,
            "confidence": drawing.confidence,
            "probabilities": [float(p) for p in drawing.probabilities],
            "model_version": drawing.model_version.version,
            "input_image": drawing.input_image_data_url,
            "created_at": _DATETIME.to_representation(drawing.created_at),
            "feedback_label": drawing.feedback_label,
            "true_label": drawing.true_label,
        }


class HealthSerializer(serializers.Serializer):
    status = serializers.CharField(help_text='"ok", or "unavailable" when no prediction can be answered.')
    database = serializers.CharField(help_text='"ok" or "unavailable".')
    model_version = serializers.IntegerField(allow_null=True, help_text="The active model version; null when down.")
    detail = serializers.CharField(
        required=False,
        help_text="When unavailable: which part is down. Why is in the server log (and told to staff when "
        "the model is down).",
    )


class PredictionCreateApi(APIView):
    """Read a drawing: store it and answer with what the model sees."""

    parser_classes = PARSERS
    throttle_classes = [ClientRateThrottle]
    throttle_scope = "predictions"
    invalid_input_code = "invalid_image"

    class InputSerializer(serializers.Serializer):
        image = ImagePayloadField(
            help_text="data:image/png;base64,... (or jpeg/webp, or bare base64), or a multipart file."
        )

        class Meta:
            ref_name = "PredictionInput"

    @extend_schema(
        request=InputSerializer,
        responses={
            201: PredictionOutputSerializer,
            **error_responses(
                "invalid_image",
                "empty_drawing",
                "image_too_large",
                "malformed_request",
                "permission_denied",
                "payload_too_large",
                "unsupported_media_type",
                "throttled",
                "model_unavailable",
            ),
        },
        auth=[],
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        visitor = services.visitor_for_session(request.session, create=True)
        drawing = services.drawing_create(data=serializer.validated_data["image"], visitor=visitor)
        return Response(PredictionOutputSerializer(drawing).data, status=status.HTTP_201_CREATED)


class PredictionDetailApi(APIView):
    """One prediction, to the visitor who made it or to staff."""

    @extend_schema(responses={200: PredictionOutputSerializer, **error_responses("not_found")}, auth=[])
    def get(self, request, drawing_id):
        drawing = selectors.drawing_get(
            drawing_id=drawing_id,
            visitor=services.visitor_for_session(request.session, create=False),
            user=request.user,
        )
        return Response(PredictionOutputSerializer(drawing).data)


class PredictionFeedbackApi(APIView):
    """The visitor says whether the prediction was right; a reviewer decides later."""

    parser_classes = PARSERS
    throttle_classes = [ClientRateThrottle]
    throttle_scope = "feedback"
    invalid_input_code = "invalid_label"

    class InputSerializer(serializers.Serializer):
        # A field named label: DRF's Field has a label attribute too, which the type checker sees.
        label = serializers.IntegerField(  # type: ignore[assignment]
            min_value=0, max_value=9, required=False, help_text="The digit the visitor drew."
        )
        correct = serializers.BooleanField(required=False, help_text="true: the prediction was right.")

        class Meta:
            ref_name = "FeedbackInput"

        def validate(self, attrs):
            if ("label" in attrs) == ("correct" in attrs):
                raise serializers.ValidationError(
                    'Send either {"label": 0-9} or {"correct": true}.', code="invalid_label"
                )
            if attrs.get("correct") is False:
                raise serializers.ValidationError(
                    'If the prediction was wrong, send the right digit as {"label": 0-9}.', code="invalid_label"
                )
            return attrs

    @extend_schema(
        request=InputSerializer,
        responses={
            200: PredictionOutputSerializer,
            **error_responses(
                "invalid_label",
                "malformed_request",
                "permission_denied",
                "not_found",
                "payload_too_large",
                "unsupported_media_type",
                "throttled",
            ),
        },
        auth=[],
    )
    def post(self, request, drawing_id):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        # Only the visitor who made the drawing gives feedback on it: no `user`, so staff are not let in.
        drawing = selectors.drawing_get(
            drawing_id=drawing_id, visitor=services.visitor_for_session(request.session, create=False)
        )
        label = serializer.validated_data.get("label", drawing.predicted_label)
        drawing = services.drawing_give_feedback(drawing=drawing, label=label)
        return Response(PredictionOutputSerializer(drawing).data)


class HealthApi(APIView):
    """Whether the site can answer predictions: database and model."""

    throttle_classes = []

    def perform_authentication(self, request):
        # Lazily, when the service asks who is asking: a probe must be answered while the database,
        # which holds the users, is down.
        pass

    @extend_schema(
        responses={
            200: OpenApiResponse(
                HealthSerializer,
                description="The database answers and the active model is loaded.",
                examples=[
                    OpenApiExample("ok", value={"status": "ok", "database": "ok", "model_version": 1}),
                ],
            ),
            503: OpenApiResponse(
                HealthSerializer,
                description="The database or the model is down; `detail` says which.",
                examples=[
                    OpenApiExample(
                        "model unavailable",
                        value={
                            "status": "unavailable",
                            "database": "ok",
                            "model_version": None,
                            "detail": "The model is unavailable; the reason is in the server log.",
                        },
                    ),
                    OpenApiExample(
                        "database unavailable",
                        value={
                            "status": "unavailable",
                            "database": "unavailable",
                            "model_version": None,
                            "detail": "The database is unavailable; the reason is in the server log.",
                        },
                    ),
                ],
            ),
        },
        auth=[],
    )
    def get(self, request):
        health = services.health_status(user=cast(User, SimpleLazyObject(lambda: request.user)))
        ok = health["status"] == "ok"
        return Response(health, status=status.HTTP_200_OK if ok else status.HTTP_503_SERVICE_UNAVAILABLE)
