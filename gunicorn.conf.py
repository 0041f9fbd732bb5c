"""Gunicorn settings for `make serve` and deployments; the command line and GUNICORN_CMD_ARGS override them."""

import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WORKERS", "2"))
# Threads overlap a request's database and file waits with another's decoding and inference
# (OpenCV and LiteRT release the GIL); gthread also keeps connections alive between requests.
worker_class = "gthread"
threads = int(os.environ.get("THREADS", "4"))
# The application is imported once before forking, so workers share its pages and start at once.
# Nothing is loaded eagerly: each worker opens its own database connections and builds its own
# LiteRT interpreter on its first prediction (an interpreter must not cross a fork).
preload_app = True
# Worker heartbeats go to a RAM-backed folder where there is one, so a slow disk cannot stall them.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
timeout = 30
graceful_timeout = 30
keepalive = 5
# Recycle a worker now and then so that slow leaks in native libraries cannot grow without bound.
max_requests = 20_000
max_requests_jitter = 2_000
accesslog = os.environ.get("ACCESS_LOG") or None
errorlog = "-"


def when_ready(server):
    """Import the URL configuration, and with it every view, in the master before the workers fork.

    Django imports it on a worker's first request otherwise: a second of imports in every new worker
    (measured in docs/performance.md), paid by whoever happens to send that request.
    """
    if server.cfg.preload_app:
        from django.urls import get_resolver

        get_resolver().url_patterns  # noqa: B018  (reading it imports every view once, before forking)
