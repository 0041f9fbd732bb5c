"""Serve the site as in production: Granian's WSGI server, set from the environment (`make serve`, deployments).

    python -m digitsite.serve          # HOST, PORT, WORKERS, THREADS, ACCESS_LOG, MAX_WORKER_MB

Chosen by measurement over gunicorn's sync and gthread workers (docs/performance.md, "Serving"): Granian
parses and writes HTTP in Rust and hands each request to a Python thread, which costs less CPU
per request and, with one thread per worker, keeps the slowest requests close to the median.
"""

import copy
import os
from collections.abc import Mapping
from typing import Any

from granian.constants import HTTPModes, Interfaces
from granian.log import LOGGING_CONFIG, LogLevels
from granian.server import Server
from granian.server.common import AbstractServer

# One worker per core: each runs one request at a time (THREADS=1), so a request never waits for the GIL
# behind another one in its own process, and two cores are busy whenever two requests are.
DEFAULT_THREADS = 1
# A worker whose resident size stays above this is replaced, gracefully: a bound on slow leaks in native
# libraries. A busy worker peaks at about 230 MB (docs/performance.md, "Memory under hostile input").
DEFAULT_MAX_WORKER_MB = 512


def cores() -> int:
    """Return how many cores this process may run on."""
    return len(os.sched_getaffinity(0))


def logging_config(access_log: str) -> dict[str, Any] | None:
    """Return Granian's logging configuration with the access log written to the file `access_log`; None for stdout."""
    if access_log in ("", "-"):
        return None
    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["handlers"]["access"] = {"formatter": "access", "class": "logging.FileHandler", "filename": access_log}
    return config


def server_from_environment(environ: Mapping[str, str]) -> AbstractServer:
    """Return the Granian server configured by the environment: HOST, PORT, WORKERS, THREADS, ACCESS_LOG, MAX_WORKER_MB."""
    return Server(
        "digitsite.wsgi:application",
        address=environ.get("HOST", "127.0.0.1"),
        port=int(environ.get("PORT", "8000")),
        interface=Interfaces.WSGI,
        workers=int(environ.get("WORKERS") or cores()),
        # THREADS > 1 overlaps one request's waits (a bucket's round trips) with another's work.
        blocking_threads=int(environ.get("THREADS") or DEFAULT_THREADS),
        http=HTTPModes.http1,
        websockets=False,
        # A worker that dies is started again, as gunicorn did.
        respawn_failed_workers=True,
        workers_max_rss=int(environ.get("MAX_WORKER_MB") or DEFAULT_MAX_WORKER_MB),
        log_level=LogLevels.info,
        # ACCESS_LOG: "-" for the standard output, or a file; none by default.
        log_access=bool(environ.get("ACCESS_LOG")),
        log_dictconfig=logging_config(environ.get("ACCESS_LOG", "")),
    )


def main() -> None:
    """Import the site once, then fork the workers and serve until SIGINT or SIGTERM."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "digitsite.settings")
    # Imported before the workers fork, so they share its pages and the first request to a worker does not
    # pay a second of imports. Reading the URL patterns imports every view (Django would on the first
    # request). Nothing here opens a database connection or a model: each worker makes its own on first use.
    from django.urls import get_resolver

    from digitsite.wsgi import application  # noqa: F401

    get_resolver().url_patterns  # noqa: B018
    server_from_environment(os.environ).serve()


if __name__ == "__main__":
    main()
