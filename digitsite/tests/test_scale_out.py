"""Two web hosts and a training worker that share only PostgreSQL, Redis and an S3-compatible bucket.

Each process has its own working folders (media, models, model cache): nothing is shared on disk.
Drawings posted to host A land in the bucket; a retrain asked for in host B's admin is executed by the
worker; both hosts serve the new version within 2 s of its activation; a rollback made on host A is
followed by host B.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid

import boto3
import numpy as np
import pytest
import requests
from django.conf import settings

from predictor.tests.drawings import canvas_png, data_url
from predictor.tests.s3 import CREDENTIALS, Bucket, free_port

POSTGRES_URL = os.environ.get("DIGIT_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("DIGIT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
DRAWINGS_PER_DIGIT = 6
FOLLOW_SECONDS = 2.0  # every worker asks which version is active once a second
RUN_SECONDS = 900
PASSWORD = uuid.uuid4().hex  # made for each run: the test site is thrown away


def unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must run the scale-out test.", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def database():
    """Return the URL of a new, empty PostgreSQL database; drop it afterwards."""
    import psycopg

    name = f"digit_scale_out_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        unavailable(f"PostgreSQL is not reachable at {POSTGRES_URL} ({error})")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_url():
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as error:
        unavailable(f"Redis is not reachable at {REDIS_URL} ({error})")
    return REDIS_URL


@pytest.fixture
def bucket(s3_server):
    client = boto3.client(
        "s3",
        endpoint_url=s3_server,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
    )
    name = f"digits-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=name)
    return Bucket(name=name, client=client)


class Site:
    """The shared services' environment, and the processes started on it."""

    def __init__(self, tmp_path, database, redis_url, bucket, endpoint_url):
        self.tmp_path = tmp_path
        self.processes: list[subprocess.Popen] = []
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
        self.env = {
            **keep,
            **CREDENTIALS,
            "DEBUG": "true",
            "DATABASE_URL": database,
            "CACHE_URL": redis_url,
            "DIGIT_S3_BUCKET": bucket.name,
            "DIGIT_S3_ENDPOINT_URL": endpoint_url,
            "DIGIT_THROTTLE_PREDICTIONS": "",
            "DIGIT_THROTTLE_FEEDBACK": "",
            "DJANGO_SUPERUSER_USERNAME": "admin",
            "DJANGO_SUPERUSER_EMAIL": "admin@example.com",
            "DJANGO_SUPERUSER_PASSWORD": PASSWORD,
        }

    def host_env(self, name: str) -> dict[str, str]:
        """Return the environment of one host, with working folders of its own."""
        folder = self.tmp_path / name
        return {
            **self.env,
            "MEDIA_ROOT": str(folder / "media"),
            "DIGIT_MODEL_ROOT": str(folder / "models"),
            "DIGIT_MODEL_CACHE": str(folder / "model-cache"),
            "STATIC_ROOT": str(folder / "static"),
        }

    def manage(self, host: str, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=settings.BASE_DIR,
            env=self.host_env(host),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def start(self, host: str, *args: str) -> subprocess.Popen:
        with open(self.tmp_path / f"{host}.log", "w") as log:  # the child keeps its own descriptor
            process = subprocess.Popen(
                [sys.executable, "manage.py", *args],
                cwd=settings.BASE_DIR,
                env=self.host_env(host),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def web_host(self, host: str) -> str:
        """Start a web host; return its base URL once it answers its health check."""
        address = f"127.0.0.1:{free_port()}"
        process = self.start(host, "runserver", "--noreload", address)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, (self.tmp_path / f"{host}.log").read_text()
            try:
                with urllib.request.urlopen(f"http://{address}/api/health/", timeout=2):
                    return f"http://{address}"
            except OSError:
                time.sleep(0.2)
        pytest.fail(f"{host} did not answer within 60 s:\n{(self.tmp_path / f'{host}.log').read_text()}")

    def stop(self):
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def served_version(base_url: str) -> int | None:
    with urllib.request.urlopen(f"{base_url}/api/health/", timeout=5) as answer:
        return json.load(answer)["model_version"]


def admin_session(base_url: str) -> requests.Session:
    session = requests.Session()
    login = f"{base_url}/admin/login/"
    token = csrf_token(session.get(login).text)
    answer = session.post(
        login, data={"username": "admin", "password": PASSWORD, "csrfmiddlewaretoken": token, "next": "/admin/"}
    )
    assert answer.ok and "/admin/login/" not in answer.url, answer.text[:2000]
    return session


def csrf_token(page: str) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)


def admin_action(session: requests.Session, changelist: str, action: str, ids: list) -> requests.Response:
    token = csrf_token(session.get(changelist).text)
    answer = session.post(
        changelist, data={"action": action, "_selected_action": [str(i) for i in ids], "csrfmiddlewaretoken": token}
    )
    assert answer.ok, answer.text[:2000]
    return answer


def files_under(folder) -> list[str]:
    return sorted(str(path) for path in folder.rglob("*") if path.is_file()) if folder.exists() else []


def wait_until_both_serve(hosts: dict[str, str], version: int, seconds: float) -> dict[str, float]:
    """Return when (time.time()) each host first answered with `version`, polling every 0.1 s."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + seconds
    while len(seen) < len(hosts) and time.monotonic() < deadline:
        for name, url in hosts.items():
            if name not in seen and served_version(url) == version:
                seen[name] = time.time()
        time.sleep(0.1)
    assert set(seen) == set(hosts), f"only {sorted(seen)} served version {version} within {seconds} s"
    return seen


def test_two_hosts_and_a_worker_share_only_the_database_cache_and_bucket(
    tmp_path, database, redis_url, bucket, s3_server
):
    import psycopg

    site = Site(tmp_path, database, redis_url, bucket, s3_server)
    site.manage("a", "migrate", "--noinput")
    site.manage("a", "register_base_model")
    site.manage("a", "createsuperuser", "--noinput")
    try:
        hosts = {"a": site.web_host("a"), "b": site.web_host("b")}
        site.start("worker", "db_worker", "--no-reload", "--no-startup-delay")
        assert served_version(hosts["a"]) == served_version(hosts["b"]) == 1

        # Visitors draw on host A; every drawing goes to the bucket, none to A's disk.
        with np.load(settings.BASE_DIR / "training" / "data" / "mnist.npz") as mnist:
            images, labels = mnist["x_train"][:2000], mnist["y_train"][:2000]
        by_label: dict[int, list[str]] = {}
        for digit in range(10):
            for index in np.flatnonzero(labels == digit)[:DRAWINGS_PER_DIGIT]:
                answer = requests.post(
                    f"{hosts['a']}/api/predictions/", json={"image": data_url(canvas_png(images[index]))}
                )
                assert answer.status_code == 201, answer.text
                by_label.setdefault(digit, []).append(answer.json()["id"])
        drawings = bucket.keys("drawings/")
        assert len(drawings) == 10 * DRAWINGS_PER_DIGIT
        assert files_under(tmp_path / "a" / "media") == []

        # A reviewer labels them in host A's admin; staff ask for a retrain in host B's admin.
        admin_a, admin_b = admin_session(hosts["a"]), admin_session(hosts["b"])
        for digit, ids in by_label.items():
            admin_action(admin_a, f"{hosts['a']}/admin/predictor/drawing/", f"relabel_as_{digit}", ids)
        request_page = f"{hosts['b']}/admin/predictor/retrainrun/request/"
        queued = admin_b.post(request_page, data={"csrfmiddlewaretoken": csrf_token(admin_b.get(request_page).text)})
        assert queued.ok and re.search(r"/admin/predictor/retrainrun/\d+/", queued.url), queued.text[:2000]

        # The worker executes it; both hosts follow the activation within FOLLOW_SECONDS.
        with psycopg.connect(database, autocommit=True) as db:
            deadline = time.monotonic() + RUN_SECONDS
            seen: dict[str, float] = {}
            while time.monotonic() < deadline:
                status = db.execute("SELECT status FROM predictor_retrainrun ORDER BY id DESC LIMIT 1").fetchone()[0]
                for name, url in hosts.items():
                    if name not in seen and served_version(url) == 2:
                        seen[name] = time.time()
                if status not in ("queued", "running") and (status != "passed" or len(seen) == len(hosts)):
                    break
                time.sleep(0.1)
            run = db.execute("SELECT status, log FROM predictor_retrainrun ORDER BY id DESC LIMIT 1").fetchone()
            assert run[0] == "passed", f"retrain ended {run[0]}:\n{run[1]}\n{(tmp_path / 'worker.log').read_text()}"
            (activated_at,) = db.execute(
                "SELECT a.created_at FROM predictor_modelactivation a JOIN predictor_modelversion v "
                "ON v.id = a.model_version_id WHERE v.version = 2"
            ).fetchone()
        assert set(seen) == set(hosts), f"only {sorted(seen)} serve version 2"
        for name, when in seen.items():
            assert when - activated_at.timestamp() <= FOLLOW_SECONDS + 0.2, f"host {name} followed late"
        assert {"models/v2/model.tflite", "models/v2/model.keras"} <= set(bucket.keys("models/"))

        # Rollback from host A's admin; host B follows.
        rolled_back_at = time.time()
        admin_action(
            admin_a, f"{hosts['a']}/admin/predictor/modelversion/", "activate_version", [version_id(database, 1)]
        )
        seen = wait_until_both_serve(hosts, 1, seconds=10)
        assert max(seen.values()) - rolled_back_at <= FOLLOW_SECONDS + 0.5

        # Nothing but the hosts' own model caches was written to their disks.
        for host in ("a", "b", "worker"):
            assert files_under(tmp_path / host / "media") == []
            assert files_under(tmp_path / host / "models") == []
    finally:
        site.stop()


def version_id(database: str, version: int) -> str:
    import psycopg

    with psycopg.connect(database) as db:
        return str(db.execute("SELECT id FROM predictor_modelversion WHERE version = %s", [version]).fetchone()[0])
