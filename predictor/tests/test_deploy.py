"""Production settings: what `make serve` runs, checked in fresh processes with a production environment."""

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from django.conf import settings

from predictor.tests.drawings import canvas_png, data_url

BASE_DIR = settings.BASE_DIR

# Prints what the production settings resolve to and what a response carries, as JSON.
SETTINGS_PROBE = """
import json, django
django.setup()
from django.conf import settings
from django.test import Client
client = Client()
secure = client.get("/no-such-page/", secure=True, headers={"host": "digits.example.com"})
plain = client.get("/no-such-page/", headers={"host": "digits.example.com"})
print(json.dumps({
    "staticfiles": settings.STORAGES["staticfiles"]["BACKEND"],
    "cache": settings.CACHES["default"]["BACKEND"],
    "throttle_rates": settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
    "headers": dict(secure.headers),
    "plain_status": plain.status_code,
    "plain_location": plain.headers.get("Location"),
}))
"""


# What `make serve` does before starting the server, in one process (register_base_model would import
# TensorFlow only to find the shipped files; the registry service is what it calls).
SETUP_SCRIPT = """
import django
django.setup()
from django.conf import settings
from django.core.management import call_command
from predictor import services
call_command("migrate", verbosity=0)
call_command("createcachetable")
shipped = settings.BASE_DIR / "training" / "artifacts" / "base"
services.model_version_register(
    tflite_path=shipped / "model.tflite", keras_path=shipped / "model.keras", metrics={}, activate=True
)
"""


def production_env(tmp_path, **overrides) -> dict:
    """Return the environment of a production deployment: DEBUG off, a strong key, files under tmp_path."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DIGIT_", "DJANGO_")) and key not in {"DEBUG", "SECRET_KEY", "ALLOWED_HOSTS"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="digitsite.settings",
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="digits.example.com",
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        MEDIA_ROOT=str(tmp_path / "media"),
        STATIC_ROOT=str(tmp_path / "static"),
        DIGIT_MODEL_ROOT=str(tmp_path / "models"),
    )
    env.update(overrides)
    return env


def run(args: list[str], env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=timeout)


def test_check_deploy_reports_nothing_under_production_settings(tmp_path):
    result = run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], production_env(tmp_path)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout and "WARNING" not in result.stderr


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    env = production_env(tmp_path)
    del env["SECRET_KEY"]
    result = run([sys.executable, "manage.py", "check"], env)
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_production_settings_send_security_headers_and_use_hashed_static_files(tmp_path):
    result = run([sys.executable, "-c", SETTINGS_PROBE], production_env(tmp_path))
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    headers = probe["headers"]

    assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert probe["plain_status"] == 301 and probe["plain_location"].startswith("https://")
    assert probe["staticfiles"] == "digitsite.staticfiles.HashedStaticFilesStorage"
    assert probe["cache"] == "django.core.cache.backends.db.DatabaseCache"
    assert probe["throttle_rates"] == {"predictions": "120/min", "feedback": "60/min"}


def test_collected_page_script_imports_its_modules_by_hashed_name(tmp_path):
    result = run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"], production_env(tmp_path)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = json.loads((tmp_path / "static" / "staticfiles.json").read_text())["paths"]
    main = (tmp_path / "static" / manifest["js/main.js"]).read_text()
    for module in ("api.js", "drawing-pad.js"):
        hashed = manifest[f"js/{module}"].removeprefix("js/")
        assert f'from "./{hashed}"' in main
        assert (tmp_path / "static" / f"{manifest[f'js/{module}']}.gz").exists()


def test_cache_url_selects_redis_and_throttles_are_configurable(tmp_path):
    env = production_env(
        tmp_path,
        CACHE_URL="redis://127.0.0.1:6379/0",
        DIGIT_THROTTLE_PREDICTIONS="5/second",
        DIGIT_THROTTLE_FEEDBACK="",
    )
    result = run([sys.executable, "-c", SETTINGS_PROBE], env)
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    assert probe["cache"] == "django.core.cache.backends.redis.RedisCache"
    assert probe["throttle_rates"] == {"predictions": "5/second", "feedback": None}


def test_no_secret_is_committed():
    git = shutil.which("git")
    if git is None or not (BASE_DIR / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = run([git, "ls-files", "-z"], dict(os.environ)).stdout.split("\0")
    assert not [name for name in tracked if name == ".env" or name.startswith("var/")]
    secret = re.compile(r"(SECRET_KEY|PASSWORD|TOKEN)\s*[=:]\s*['\"][^'\"\s]{16,}['\"]|BEGIN [A-Z ]*PRIVATE KEY")
    suspicious = []
    for name in tracked:
        path = BASE_DIR / name
        if not name or path.suffix not in {".py", ".txt", ".md", ".cfg", ".ini", ".toml", ".json", ".env", ""}:
            continue
        if path.is_file() and secret.search(path.read_text(errors="ignore")):
            suspicious.append(name)
    assert suspicious == []


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", **(headers or {})}
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def raw_request(port: int, request: bytes) -> bytes:
    """Return the server's whole answer to bytes sent as they are (what urllib will not send), until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
        return answer


def test_make_serve_server_serves_predictions_as_in_production(tmp_path, mnist_train):
    port = free_port()
    env = production_env(tmp_path, ALLOWED_HOSTS="127.0.0.1", DIGIT_HTTPS="false", PORT=str(port), WORKERS="2")
    result = run([sys.executable, "-c", SETUP_SCRIPT], env)
    assert result.returncode == 0, result.stdout + result.stderr
    result = run([sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    server = subprocess.Popen(
        [sys.executable, "-m", "digitsite.serve"],  # what `make serve` runs
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                status, health = http("GET", f"{base}/api/health/")
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        assert (status, health["model_version"]) == (200, 1)

        images, labels = mnist_train
        body = json.dumps({"image": data_url(canvas_png(images[3]))}).encode()
        request = urllib.request.Request(
            f"{base}/api/predictions/", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            prediction, cookie = json.loads(response.read()), response.headers["Set-Cookie"].split(";")[0]
        assert response.status == 201 and prediction["predicted_label"] == labels[3]
        assert (tmp_path / "media" / "drawings").is_dir()
        status, error = http("POST", f"{base}/api/predictions/", b'{"image": "data:text/html;base64,PGI+"}')
        assert status == 400 and error["code"] == "invalid_image"

        # The stored drawing, to its visitor (a file response), and a static file (whitenoise).
        image = urllib.request.Request(f"{base}/drawings/{prediction['id']}/image", headers={"Cookie": cookie})
        with urllib.request.urlopen(image, timeout=10) as response:
            assert response.read().startswith(b"\x89PNG")
        manifest = json.loads((tmp_path / "static" / "staticfiles.json").read_text())["paths"]
        with urllib.request.urlopen(f"{base}/static/{manifest['js/main.js']}", timeout=10) as response:
            assert b"import" in response.read()

        # A body over the limit is refused from its declared size, before it is sent; a chunked body (no
        # Content-Length) is read by Django as empty, as behind any WSGI server, and refused for what it lacks.
        answer = raw_request(
            port,
            b"POST /api/predictions/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 6000000\r\nConnection: close\r\n\r\n{}",
        )
        assert answer.startswith(b"HTTP/1.1 413") and b"payload_too_large" in answer
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:5000], body[5000:])) + b"0\r\n\r\n"
        answer = raw_request(
            port,
            b"POST /api/predictions/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunks,
        )
        assert answer.startswith(b"HTTP/1.1 400") and b"image: This field is required." in answer
    finally:
        server.terminate()
        assert server.wait(timeout=30) == 0  # a graceful stop


def test_serve_takes_its_settings_from_the_environment(tmp_path):
    from digitsite import serve

    default = serve.server_from_environment({})
    assert (default.bind_addr, default.bind_port) == ("127.0.0.1", 8000)
    assert default.workers == len(os.sched_getaffinity(0)) and default.blocking_threads == 1
    assert default.respawn_failed_workers and not default.log_access and not default.websockets

    log = tmp_path / "access.log"
    configured = serve.server_from_environment(
        {"HOST": "0.0.0.0", "PORT": "9000", "WORKERS": "4", "THREADS": "8", "ACCESS_LOG": str(log)}
    )
    assert (configured.bind_addr, configured.bind_port, configured.workers) == ("0.0.0.0", 9000, 4)
    assert configured.blocking_threads == 8 and configured.log_access
    assert configured.log_config["handlers"]["access"]["filename"] == str(log)
    assert serve.server_from_environment({"ACCESS_LOG": "-"}).log_config is None


@pytest.mark.django_db
def test_a_prediction_costs_one_insert_and_no_session_query(api_client, active_model, digit_png, monkeypatch):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from rest_framework.throttling import ScopedRateThrottle

    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"predictions": None, "feedback": None})
    api_client.post("/api/predictions/", {"image": data_url(digit_png[0])}, format="json")  # the visitor's first
    with CaptureQueriesContext(connection) as queries:
        response = api_client.post("/api/predictions/", {"image": data_url(digit_png[0])}, format="json")
    assert response.status_code == 201
    statements = [query["sql"].split()[0].upper() for query in queries.captured_queries]
    assert statements.count("INSERT") == 1
    assert not {"SELECT", "UPDATE", "DELETE"} & set(statements), statements
