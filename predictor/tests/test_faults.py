"""No lost data under load and faults: concurrent writers, crashes, broken models, models swapped mid-flight.

The concurrency tests run real worker processes against a scratch database of the backend the suite
runs on (a SQLite file in WAL mode, as served, or a scratch PostgreSQL database), because that is where
"database is locked" and lost rows would show; an in-memory test database would hide both.
"""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import OperationalError, connection
from rest_framework.test import APIClient

from predictor import model_cache, services
from predictor.models import Drawing
from predictor.tests.drawings import canvas_png, data_url

CREATE_URL = "/api/predictions/"
PROCESSES = 2
THREADS = 4
PER_THREAD = 12

# Run inside a worker process of the scratch site: `python -c SITE_SCRIPT MODE JSON_ARGUMENTS`.
SITE_SCRIPT = r"""
import json, os, signal, sys, threading, time
import django
django.setup()
from django.conf import settings
from django.core.management import call_command
from predictor import services
from predictor.models import Drawing, ModelVersion

mode, args = sys.argv[1], json.loads(sys.argv[2])
shipped = settings.BASE_DIR / "training" / "artifacts" / "base"

def register(activate):
    return services.model_version_register(
        tflite_path=shipped / "model.tflite", keras_path=shipped / "model.keras", metrics={}, activate=activate
    )

if mode == "setup":
    call_command("migrate", verbosity=0)
    call_command("createcachetable")
    register(activate=True)
    register(activate=False)
    print(json.dumps({}))
elif mode == "create":
    drawings = [open(path, "rb").read() for path in args["drawings"]]
    ids, errors, versions = [], [], set()
    start = threading.Barrier(args["threads"])

    def work(thread):
        start.wait()
        while args.get("after") and not os.path.exists(args["after"]):
            time.sleep(0.01)
        for n in range(args["per_thread"]):
            try:
                drawing = services.drawing_create(
                    data=drawings[(thread + n) % len(drawings)], visitor=f"{os.getpid()}-{thread}"
                )
                ids.append(str(drawing.id))
                versions.add(drawing.model_version.version)
            except Exception as error:
                errors.append(repr(error))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(args["threads"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"ids": ids, "errors": errors, "versions": sorted(versions)}))
elif mode == "swap":
    # Swap back and forth until told to stop (the file appears), for a minute at most.
    versions = list(ModelVersion.objects.order_by("version"))
    swaps, deadline = 0, time.monotonic() + 60
    while not os.path.exists(args["stop"]) and time.monotonic() < deadline:
        swaps += 1
        services.model_version_activate(version=versions[swaps % len(versions)], source="command")
        if swaps == 2:
            open(args["started"], "w").close()
        time.sleep(args["pause"])
    print(json.dumps({"swaps": swaps}))
elif mode == "crash":
    # Die the hard way (no exception handler runs) after the image is written, before the row is saved.
    Drawing.save = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
    services.drawing_create(data=open(args["drawing"], "rb").read(), visitor="crash")
elif mode == "state":
    from pathlib import Path
    media = Path(settings.MEDIA_ROOT)
    files = sorted(str(path.relative_to(media)) for path in (media / "drawings").rglob("*") if path.is_file())
    rows = {str(id): name for id, name in Drawing.objects.values_list("id", "image")}
    print(json.dumps({"rows": rows, "files": files}))
"""


def scratch_database(name: str) -> tuple[str, callable]:
    """Return (DATABASE_URL of a new scratch PostgreSQL database, a function that drops it)."""
    import psycopg

    params = settings.DATABASES["default"]
    server = {
        "host": params.get("HOST") or "localhost",
        "port": params.get("PORT") or 5432,
        "user": params.get("USER") or None,
        "password": params.get("PASSWORD") or None,
    }
    with psycopg.connect(dbname="postgres", autocommit=True, **server) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')

    def drop():
        with psycopg.connect(dbname="postgres", autocommit=True, **server) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    credentials = server["user"] or ""
    if server["password"]:
        credentials += f":{server['password']}"
    return f"postgres://{credentials}@{server['host']}:{server['port']}/{name}", drop


@pytest.fixture(scope="module")
def site(tmp_path_factory, mnist_train):
    """A production-style site on the suite's database backend, with model versions 1 (active) and 2."""
    folder = tmp_path_factory.mktemp("site")
    drop = None
    if connection.vendor == "postgresql":
        database_url, drop = scratch_database(f"digit_faults_{os.getpid()}")
    else:
        database_url = f"sqlite:///{folder / 'db.sqlite3'}"
    env = {key: value for key, value in os.environ.items() if not key.startswith("DIGIT_")}
    env.update(
        DJANGO_SETTINGS_MODULE="digitsite.settings",
        DEBUG="false",
        SECRET_KEY="x" * 64,
        DATABASE_URL=database_url,
        MEDIA_ROOT=str(folder / "media"),
        DIGIT_MODEL_ROOT=str(folder / "models"),
        DIGIT_MODEL_CHECK_SECONDS="0",  # every request asks which model is active: the hardest case for swaps
    )
    env.pop("CACHE_URL", None)
    images, _ = mnist_train
    drawings = []
    for n in range(6):
        path = folder / f"drawing{n}.png"
        path.write_bytes(canvas_png(images[n]))
        drawings.append(str(path))
    site = {"env": env, "drawings": drawings, "media": folder / "media"}
    run_in_site(site, "setup", {})
    yield site
    if drop is not None:
        drop()


def start_in_site(site: dict, mode: str, args: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", SITE_SCRIPT, mode, json.dumps(args)],
        cwd=settings.BASE_DIR,
        env=site["env"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen, timeout: float = 180):
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr
    return json.loads(stdout.strip().splitlines()[-1])


def run_in_site(site: dict, mode: str, args: dict):
    return finish(start_in_site(site, mode, args))


def create_args(site: dict) -> dict:
    return {"drawings": site["drawings"], "threads": THREADS, "per_thread": PER_THREAD}


def assert_every_drawing_has_its_row_and_file(site: dict, ids: list[str]):
    state = run_in_site(site, "state", {})
    assert set(ids) <= set(state["rows"]), "a drawing that was answered has no row"
    assert sorted(state["rows"].values()) == state["files"], "a row without its file or a file without its row"


def test_concurrent_writers_in_several_processes_lose_nothing(site):
    workers = [start_in_site(site, "create", create_args(site)) for _ in range(PROCESSES)]
    results = [finish(worker) for worker in workers]

    assert [error for result in results for error in result["errors"]] == []  # no "database is locked"
    ids = [id for result in results for id in result["ids"]]
    assert len(set(ids)) == PROCESSES * THREADS * PER_THREAD
    assert_every_drawing_has_its_row_and_file(site, ids)


def test_swapping_the_active_model_during_requests_fails_none(site, tmp_path):
    stop, started = tmp_path / "stop", tmp_path / "started"
    swapper = start_in_site(site, "swap", {"stop": str(stop), "started": str(started), "pause": 0.02})
    # The workers start predicting once the swapper is swapping (each process takes seconds to start).
    workers = [start_in_site(site, "create", {**create_args(site), "after": str(started)}) for _ in range(PROCESSES)]
    results = [finish(worker) for worker in workers]
    stop.touch()
    assert finish(swapper)["swaps"] > 1

    assert [error for result in results for error in result["errors"]] == []
    # Versions 1 and 2 both answered: the swaps happened while the requests were being served.
    assert set().union(*(result["versions"] for result in results)) == {1, 2}
    assert_every_drawing_has_its_row_and_file(site, [id for result in results for id in result["ids"]])


def test_a_crash_between_image_and_row_leaves_a_file_that_purge_removes(site):
    crashed = start_in_site(site, "crash", {"drawing": site["drawings"][0]})
    crashed.communicate(timeout=120)
    assert crashed.returncode == -signal.SIGKILL

    state = run_in_site(site, "state", {})
    assert "crash" not in json.dumps(state["rows"])
    (orphan,) = set(state["files"]) - set(state["rows"].values())  # the image, but no row without it
    command = [sys.executable, "manage.py", "purge_orphan_files", "--min-age", "0"]
    purge = subprocess.run(command, cwd=settings.BASE_DIR, env=site["env"], capture_output=True, text=True)
    assert purge.returncode == 0, purge.stderr
    assert f"Deleted {orphan}" in purge.stdout and "Deleted 1 orphan file(s)." in purge.stdout
    assert_every_drawing_has_its_row_and_file(site, [])


@pytest.mark.django_db
def test_a_failed_save_leaves_neither_row_nor_file(active_model, digit_png, monkeypatch):
    def fail(*args, **kwargs):
        raise OperationalError("disk I/O error")

    monkeypatch.setattr(Drawing, "save", fail)
    with pytest.raises(OperationalError):
        services.drawing_create(data=digit_png[0], visitor="visitor-a")

    assert Drawing.objects.count() == 0
    assert not any(path.is_file() for path in Path(settings.MEDIA_ROOT).rglob("*"))


def age(path: Path, seconds: float):
    then = time.time() - seconds
    os.utime(path, (then, then))


@pytest.mark.django_db
def test_purge_removes_only_old_files_without_a_row(drawing):
    media = Path(settings.MEDIA_ROOT)
    kept = media / drawing.image.name
    old_orphan = kept.with_name("00000000-0000-0000-0000-000000000001.png")
    new_orphan = kept.with_name("00000000-0000-0000-0000-000000000002.png")
    for path in (old_orphan, new_orphan):
        path.write_bytes(b"\x89PNG")
    age(old_orphan, 7200)
    age(kept, 7200)

    dry = io.StringIO()
    call_command("purge_orphan_files", "--dry-run", stdout=dry)
    assert "Would delete 1 orphan file(s)." in dry.getvalue() and old_orphan.exists()

    out = io.StringIO()
    call_command("purge_orphan_files", stdout=out)
    assert "Deleted 1 orphan file(s)." in out.getvalue()
    assert not old_orphan.exists() and new_orphan.exists() and kept.exists()


@pytest.mark.django_db
def test_purge_with_nothing_stored_says_so():
    out = io.StringIO()
    call_command("purge_orphan_files", stdout=out)
    assert "No stored drawings." in out.getvalue()


def break_model(path: Path, how: str):
    if how == "missing":
        path.unlink()
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:4096])
    else:
        path.write_bytes(b"<html>not a model</html>" * 100)


@pytest.mark.django_db
@pytest.mark.parametrize("how", ["missing", "empty", "truncated", "garbage"])
def test_a_broken_model_file_gives_503_with_a_reason_and_recovers_without_restart(
    api_client, active_model, digit_png, how
):
    path = Path(active_model.tflite.path)
    good = path.read_bytes()
    model_cache.forget_loaded_models()  # a worker that has not loaded the model yet (say, just started)
    break_model(path, how)

    refused = api_client.post(CREATE_URL, {"image": data_url(digit_png[0])}, format="json")
    assert refused.status_code == 503
    assert refused.json()["code"] == "model_unavailable"
    assert "Model version 1 cannot be loaded" in refused.json()["detail"]
    assert str(settings.DIGIT_MODEL_ROOT) not in refused.json()["detail"]  # no server paths in public
    health = api_client.get("/api/health/")
    assert health.status_code == 503 and health.json()["status"] == "unavailable"
    assert "cannot be loaded" not in health.json()["detail"]  # only staff are told why
    staff = APIClient()
    staff.force_login(User.objects.create_user("operator", is_staff=True))
    assert "Model version 1 cannot be loaded" in staff.get("/api/health/").json()["detail"]
    assert Drawing.objects.count() == 0

    path.write_bytes(good)  # the operator puts the file back; no restart, no cache to clear
    assert api_client.post(CREATE_URL, {"image": data_url(digit_png[0])}, format="json").status_code == 201
    assert api_client.get("/api/health/").status_code == 200


@pytest.mark.django_db
def test_a_loaded_model_keeps_answering_when_its_file_goes(api_client, active_model, digit_png):
    Path(active_model.tflite.path).unlink()
    response = api_client.post(CREATE_URL, {"image": data_url(digit_png[0])}, format="json")
    assert response.status_code == 201
