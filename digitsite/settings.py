"""
Django settings for the digit site.

One file, shaped like the startproject template; everything that differs between
deployments comes from the environment (or an optional .env file beside manage.py).
"""

from datetime import timedelta
from pathlib import Path
from typing import Any

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DEBUG", default=False)

# A development key is only acceptable while DEBUG is on; production must set SECRET_KEY.
if DEBUG:
    SECRET_KEY = env("SECRET_KEY", default="dev-only-insecure-key-never-use-in-production")
else:
    SECRET_KEY = env("SECRET_KEY")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])


# Application definition

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "django_tasks",
    "django_tasks_db",
    "predictor",
    "training",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Before anything reads the body (sessions, CSRF, DRF), and after the security headers are added.
    "predictor.middleware.RequestSizeLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a refused admin login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "digitsite.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "digitsite.wsgi.application"

# Background tasks (retraining) are rows in a table of the site's database, executed by `manage.py db_worker`:
# no queue server to run, on SQLite as on PostgreSQL (where workers take tasks with FOR UPDATE SKIP LOCKED).
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}


# Database: a SQLite file under var/ unless DATABASE_URL says otherwise (e.g. postgres://...).

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers and one writer work at once; IMMEDIATE transactions plus a busy
    # timeout make concurrent writers wait their turn instead of failing with "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        }
    )
# Keep connections between requests: opening one (for SQLite, with its PRAGMAs) costs more than a prediction.
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)

# A cache shared by all workers, so that every worker counts the same requests for the rate limits.
# (Which model version is active is asked of the database, not the cache: see predictor/model_cache.py.)
CACHES = {"default": env.cache("CACHE_URL", default="dbcache://digit_cache")}
# The database, in-memory and file caches cull once they hold MAX_ENTRIES (Django's default: 300), and a
# culled throttle history gives its client a fresh allowance. A cull first drops expired entries, and a
# history expires one throttle period after its client's last request, so live histories are culled only
# when more requests than MAX_ENTRIES were counted within one period: 50,000 is about four times what the
# benchmark machine answered in a minute (docs/performance.md). Past that, a cull drops a tenth (CULL_FREQUENCY),
# not Django's third. The database cache counts its rows on every write, so the size is no larger than
# it needs to be. A rate per hour or day keeps histories that long: size MAX_ENTRIES for that period.
# CACHE_URL can set both (dbcache://digit_cache?max_entries=...&cull_frequency=...); Redis evicts only
# as its own maxmemory-policy says (its default, noeviction, never does). See docs/abuse.md.
if CACHES["default"]["BACKEND"].rsplit(".", 2)[-2] in {"db", "locmem", "filebased"}:
    CACHES["default"]["OPTIONS"] = {
        "MAX_ENTRIES": 50_000,
        "CULL_FREQUENCY": 10,
        **CACHES["default"].get("OPTIONS", {}),
    }


# django-axes first: it refuses a locked-out client before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True


# Static files and uploaded media

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = env.path("STATIC_ROOT", default=VAR_DIR / "static")
MEDIA_URL = "media/"
MEDIA_ROOT = env.path("MEDIA_ROOT", default=VAR_DIR / "media")
# In production whitenoise serves the collected files under hashed, pre-compressed names (cached for a
# year). Media has no URL of its own: drawings go out only through a view that checks who is asking.
STORAGES: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "models": {"BACKEND": "predictor.models.ModelStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "digitsite.staticfiles.HashedStaticFilesStorage"
    },
}
# Drawings and model artefacts live in local folders (MEDIA_ROOT, DIGIT_MODEL_ROOT) unless DIGIT_S3_BUCKET
# names an S3-compatible bucket, which every web host and the training worker then share (docs/deployment.md):
# drawings under drawings/ (their upload_to), model artefacts under models/. boto3 finds the credentials and
# region itself (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, or the host's role).
_s3_bucket = env("DIGIT_S3_BUCKET", default="")
_s3_endpoint = env("DIGIT_S3_ENDPOINT_URL", default="") or None
if _s3_bucket:
    _s3_options = {
        "bucket_name": _s3_bucket,
        "endpoint_url": _s3_endpoint,
        # Services other than Amazon's usually answer on one host name, not one per bucket.
        "addressing_style": "path" if _s3_endpoint else None,
        # Objects stay private: no ACL is sent, so the bucket's own (private) applies, and url() signs
        # nothing, so no link can bypass the view that checks who may see a drawing.
        "default_acl": None,
        "querystring_auth": False,
        # A name already taken gets a suffix, as in a local folder: nothing stored is ever replaced.
        "file_overwrite": False,
    }
    STORAGES["default"] = {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": _s3_options}
    STORAGES["models"] = {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {**_s3_options, "location": "models"}}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


# Security. Production assumes HTTPS: Secure cookies, HSTS, plain HTTP redirected. DIGIT_HTTPS=false
# is for serving plain http://127.0.0.1 (make serve), where a browser would drop Secure cookies.
# DIGIT_PROXIES is the number of reverse proxies in front of the site: their X-Forwarded-For and
# X-Forwarded-Proto are trusted only then, so a client cannot pick its own address to dodge throttling.
_https = env.bool("DIGIT_HTTPS", default=not DEBUG)
_proxies = env.int("DIGIT_PROXIES", default=0)
SECURE_SSL_REDIRECT = _https
SECURE_REDIRECT_EXEMPT = [r"^api/health/$"]  # load balancers probe over plain HTTP
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if _proxies else None
SECURE_HSTS_SECONDS = env.int("DIGIT_HSTS_SECONDS", default=365 * 24 * 3600 if _https else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
# Sessions live in a signed cookie: a visitor's session (an opaque visitor id) then costs no database
# query per request (measured in docs/performance.md). SESSION_ENGINE=django.contrib.sessions.backends.cache
# (with a Redis CACHE_URL) keeps them on the server instead, so that logging out revokes a staff session.
SESSION_ENGINE = env("SESSION_ENGINE", default="django.contrib.sessions.backends.signed_cookies")
SESSION_COOKIE_SECURE = _https
CSRF_COOKIE_SECURE = _https
CSRF_COOKIE_HTTPONLY = True  # pages send the token from {% csrf_token %}; no script reads the cookie

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    # Django's default logging prints nothing when DEBUG is off; errors must reach the server's log.
    "root": {"handlers": ["stderr"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {"django": {"handlers": ["stderr"], "level": env("LOG_LEVEL", default="INFO"), "propagate": False}},
}


# Django REST framework and the OpenAPI schema

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "predictor.api.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["predictor.throttling.ClientRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "predictions": env("DIGIT_THROTTLE_PREDICTIONS", default="120/min") or None,
        "feedback": env("DIGIT_THROTTLE_FEEDBACK", default="60/min") or None,
    },
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # predictor.throttling reads DIGIT_PROXIES itself; kept equal for any DRF throttle used directly.
    "NUM_PROXIES": _proxies,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Digit site API",
    "DESCRIPTION": "Send a drawing of a digit, get what the model reads; give feedback on it.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}


# Project settings

# Where model artefacts (.keras, .tflite) live once registered; retrained models are written here.
DIGIT_MODEL_ROOT = env.path("DIGIT_MODEL_ROOT", default=VAR_DIR / "models")
# Each host's copies of the .tflite files it serves, fetched from model storage once and checked against
# their recorded SHA-256 (predictor.model_cache); a cache, safe to delete.
DIGIT_MODEL_CACHE = env.path("DIGIT_MODEL_CACHE", default=VAR_DIR / "model-cache")
# Largest accepted image, in pixels and in length of its longer side, checked from the header before
# decoding. Files that cost more per pixel to decode (16-bit or interlaced PNG, progressive JPEG, dense
# WebP) get a quarter of the pixels. The defaults are predictor.imagefile's, measured in docs/performance.md.
DIGIT_MAX_IMAGE_PIXELS = env.int("DIGIT_MAX_IMAGE_PIXELS", default=1280 * 1280)
DIGIT_MAX_IMAGE_SIDE = env.int("DIGIT_MAX_IMAGE_SIDE", default=2048)
# Largest accepted request body, in bytes.
DIGIT_MAX_UPLOAD_BYTES = env.int("DIGIT_MAX_UPLOAD_BYTES", default=5 * 1024 * 1024)
# Predictions less confident than this go to the review queue.
DIGIT_LOW_CONFIDENCE = env.float("DIGIT_LOW_CONFIDENCE", default=0.8)
# How long a worker trusts its idea of the active model version before asking the database again.
DIGIT_MODEL_CHECK_SECONDS = env.float("DIGIT_MODEL_CHECK_SECONDS", default=1.0)
# `manage.py retrain` stops with fewer usable reviewed drawings than this.
DIGIT_RETRAIN_MIN_EXAMPLES = env.int("DIGIT_RETRAIN_MIN_EXAMPLES", default=20)
# A retrained model is served only if its MNIST test accuracy drops by at most this much (0.002 = 0.2 points).
DIGIT_RETRAIN_MNIST_MARGIN = env.float("DIGIT_RETRAIN_MNIST_MARGIN", default=0.002)
# ... and only if no digit class drops by more than this on MNIST test (0.01 = 1 point).
DIGIT_RETRAIN_CLASS_MARGIN = env.float("DIGIT_RETRAIN_CLASS_MARGIN", default=0.01)

# Reverse proxies trusted to append the client's address to X-Forwarded-For (see predictor.throttling).
DIGIT_PROXIES = _proxies
# `manage.py purge_drawings` deletes unreviewed drawings older than this many days (see docs/abuse.md).
DIGIT_RETENTION_DAYS = env.int("DIGIT_RETENTION_DAYS", default=90)

# Failed admin logins (django-axes): after AXES_FAILURE_LIMIT failures from one client (an IPv4 address,
# an IPv6 /64, found by the same rule as the API's throttle, so DIGIT_PROXIES applies), every login
# from it is refused, even with the right password, until AXES_COOLOFF_TIME has passed since its last
# attempt (one made while locked out starts the wait again). Counted per client only, not per username,
# so that a stranger cannot lock a reviewer out. Attempts are rows in the database (listed in the admin
# under "Axes", cleared by `manage.py axes_reset`); lockouts are logged as warnings.
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_CLIENT_IP_CALLABLE = "predictor.throttling.client_address"
AXES_LOCKOUT_PARAMETERS = ["ip_address"]
AXES_FAILURE_LIMIT = 5
AXES_COOLOFF_TIME = timedelta(minutes=15)
AXES_RESET_ON_SUCCESS = True  # a typo now and then never adds up to a lockout
AXES_VERBOSE = False  # no banner at every process start
AXES_COOLOFF_MESSAGE = (
    f"Too many failed logins from your network. Logging in from it is refused until "
    f"{AXES_COOLOFF_TIME.total_seconds() / 60:.0f} minutes have passed without an attempt, even with the "
    f"right password; please wait, then try again."
)

# Django refuses bodies above this before reading them; the API answers 413 (see predictor.middleware).
DATA_UPLOAD_MAX_MEMORY_SIZE = DIGIT_MAX_UPLOAD_BYTES
FILE_UPLOAD_MAX_MEMORY_SIZE = DIGIT_MAX_UPLOAD_BYTES
