"""HTTP load on POST /api/predictions/ against the site served as `make serve` serves it.

Starts gunicorn itself (gunicorn.conf.py, DEBUG off, throttling off) on 127.0.0.1 with a scratch
database and media folder, so nothing of var/ is touched: a SQLite file in a temporary folder, or a
scratch PostgreSQL database created for the run and dropped after it. Then, for each number of
concurrent clients, wrk (one thread, bench/wrk/predict.lua) POSTs browser-like 280x280 canvas PNGs for
a bounded time and the script prints throughput, p50/p99 latency and errors, and checks that every 201
has its row and its image file.

    python bench/bench_http.py                                   # SQLite
    python bench/bench_http.py --database postgres               # PostgreSQL at --postgres-url
    python bench/bench_http.py --connections 8 --duration 20 --workers 3 --threads 2
    python bench/bench_http.py --set CONN_MAX_AGE=0          # a variant, to compare with the default
    python bench/bench_http.py --breakdown                   # also: CPU per part of a request, in-process
"""

import argparse
import base64
import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import cv2
import numpy as np

BASE_DIR = Path(__file__).resolve().parent.parent
LUA_SCRIPT = BASE_DIR / "bench" / "wrk" / "predict.lua"
MNIST = BASE_DIR / "training" / "data" / "mnist.npz"
CANVAS_SIZE = 280  # what the drawing page exports (static/js/drawing-pad.js)


def canvas_data_urls(count: int = 8, size: int = CANVAS_SIZE) -> list[str]:
    """Return data URLs of MNIST digits drawn like the page exports them: dark ink on opaque white RGBA."""
    with np.load(MNIST) as data:
        digits = data["x_train"][:count]
    urls = []
    for digit in digits:
        ink = cv2.resize(digit, (size, size), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
        rgba = np.empty((size, size, 4), np.uint8)
        rgba[..., :3] = np.rint(255 - ink * (255 - 0x11))[..., None]
        rgba[..., 3] = 255
        ok, png = cv2.imencode(".png", rgba, [cv2.IMWRITE_PNG_COMPRESSION, 6])
        assert ok
        urls.append("data:image/png;base64," + base64.b64encode(png.tobytes()).decode("ascii"))
    return urls


def machine() -> dict:
    """Return what the figures were measured on."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "load_average": [round(load, 2) for load in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def scratch_site(database: str, postgres_url: str, overrides: dict | None = None):
    """Yield the environment of a throwaway production-style site; remove its files and database after."""
    folder = Path(tempfile.mkdtemp(prefix="digit-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGIT_") and k not in {"DATABASE_URL", "CACHE_URL"}}
    env.update(
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        DIGIT_HTTPS="false",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        MEDIA_ROOT=str(folder / "media"),
        STATIC_ROOT=str(folder / "static"),
        DIGIT_MODEL_ROOT=str(folder / "models"),
        DIGIT_THROTTLE_PREDICTIONS="",
        DIGIT_THROTTLE_FEEDBACK="",
        DJANGO_SETTINGS_MODULE="digitsite.settings",
    )
    env.update(overrides or {})
    admin = None
    if database == "postgres":
        import psycopg

        name = f"digit_bench_{os.getpid()}"
        admin = psycopg.connect(postgres_url, autocommit=True)
        admin.execute(f'CREATE DATABASE "{name}"')
        env["DATABASE_URL"] = urllib.parse.urlparse(postgres_url)._replace(path=f"/{name}").geturl()
    else:
        env["DATABASE_URL"] = f"sqlite:///{folder / 'db.sqlite3'}"
    try:
        for command in (["migrate", "--noinput"], ["createcachetable"], ["register_base_model"]):
            subprocess.run(
                [sys.executable, "manage.py", *command], cwd=BASE_DIR, env=env, check=True, stdout=subprocess.DEVNULL
            )
        yield env
    finally:
        if admin is not None:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.close()
        shutil.rmtree(folder, ignore_errors=True)


def gunicorn_command(port: int, workers: int, threads: int, worker_class: str) -> list[str]:
    """Return the command `make serve` runs, on the given port."""
    gunicorn = Path(sys.executable).with_name("gunicorn")
    return [
        str(gunicorn),
        "digitsite.wsgi",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--worker-class",
        worker_class,
    ]


@contextlib.contextmanager
def running_server(env: dict, *, workers: int, threads: int, worker_class: str = "gthread"):
    """Yield (base URL, gunicorn process) once /api/health/ answers 200; stop gunicorn after."""
    port = free_port()
    server = subprocess.Popen(
        gunicorn_command(port, workers, threads, worker_class),
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/health/", timeout=5) as response:
                    if response.status == 200:
                        break
            except (OSError, urllib.error.HTTPError):
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("gunicorn did not become healthy")
            time.sleep(0.1)
        yield base, server
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def server_cpu_seconds(master: int) -> float:
    """Return the CPU time (user + system) used so far by gunicorn's master and its workers, dead or alive."""
    ticks = os.sysconf("SC_CLK_TCK")

    def times(pid: int, fields: slice) -> int:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return sum(int(value) for value in stat.rsplit(")", 1)[1].split()[fields])

    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    # Fields 14-17 of the master: its own time and that of workers already replaced (waited for).
    total = times(master, slice(11, 15))
    for child in children:
        with contextlib.suppress(FileNotFoundError):
            total += times(int(child), slice(11, 13))
    return total / ticks


def run_wrk(base: str, bodies_file: Path, connections: int, seconds: int) -> dict:
    """Return wrk's figures for one bounded run (one wrk thread, so the load generator stays light).

    Besides the RESULT figures, "ids" lists the drawing id of every 201 that wrk received.
    """
    ids_file = bodies_file.with_suffix(".ids")
    result = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", str(LUA_SCRIPT), base],
        env={**os.environ, "BODIES": str(bodies_file), "IDS": str(ids_file)},
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    figures = json.loads(line.removeprefix("RESULT "))
    figures["per_second"] = figures["requests"] / (figures["duration_us"] / 1e6)
    figures["ids"] = ids_file.read_text().split()
    ids_file.unlink()
    return figures


def measure(base: str, master: int, bodies_file: Path, connections: int, seconds: int) -> dict:
    """Return run_wrk's figures plus the CPU milliseconds per request of the server and of wrk."""
    server_before = server_cpu_seconds(master)
    wrk_before = os.times()
    figures = run_wrk(base, bodies_file, connections, seconds)
    wrk_after = os.times()
    requests = max(figures["requests"], 1)
    figures["server_cpu_ms"] = (server_cpu_seconds(master) - server_before) * 1000 / requests
    wrk_cpu = (wrk_after.children_user + wrk_after.children_system) - (
        wrk_before.children_user + wrk_before.children_system
    )
    figures["wrk_cpu_ms"] = wrk_cpu * 1000 / requests
    return figures


class Store:
    """Counts rows and image files of the scratch site, from this process (same settings as the server)."""

    def __init__(self, env: dict):
        os.environ.update(env)
        sys.path.insert(0, str(BASE_DIR))
        import django

        django.setup()
        from predictor.models import Drawing

        self.drawings = Drawing.objects
        self.media = Path(env["MEDIA_ROOT"])

    def counts(self) -> tuple[int, int]:
        """Return (rows, image files), once requests still in flight when wrk stopped have finished."""
        previous = None
        while True:
            files = sum(1 for path in (self.media / "drawings").rglob("*") if path.is_file())
            current = (self.drawings.count(), files)
            if current == previous:
                return current
            previous = current
            time.sleep(0.5)

    def missing(self, ids: list[str]) -> int:
        """Return how many of these drawing ids have no row or no image file."""
        names = dict(self.drawings.filter(id__in=ids).values_list("id", "image"))
        found = {str(key): name for key, name in names.items()}
        return sum(id not in found or not (self.media / found[id]).is_file() for id in ids)

    def rows_without_file(self) -> int:
        names = self.drawings.values_list("image", flat=True).iterator()
        return sum(not (self.media / name).is_file() for name in names)


def breakdown(urls: list[str], rounds: int = 5, count: int = 200) -> None:
    """Print the CPU milliseconds of each part of a prediction, timed in this process (Django set up)."""
    import logging

    from django.test import Client

    from predictor import imagefile, model_cache, services
    from predictor.api import PredictionOutputSerializer
    from predictor.imagefile import decode_payload
    from predictor.preprocessing import preprocess

    logging.getLogger("django.request").setLevel(logging.ERROR)  # the refused requests below are expected
    client = Client(HTTP_HOST="localhost")
    bodies = [json.dumps({"image": url}) for url in urls]
    images = [decode_payload(url) for url in urls]
    _, classifier = model_cache.active_classifier()
    pixels = preprocess(images[0])
    drawing = services.drawing_create(data=images[0], visitor="breakdown")
    parts = {
        "whole request (Django test client, 201)": lambda n: client.post(
            "/api/predictions/", bodies[n % len(bodies)], content_type="application/json"
        ),
        "  refused request (400, empty image)": lambda n: client.post(
            "/api/predictions/", '{"image": ""}', content_type="application/json"
        ),
        "  GET /api/health/ (1 query)": lambda n: client.get("/api/health/"),
        "  decode_payload (base64)": lambda n: decode_payload(urls[n % len(urls)]),
        "  PNG decode as served (libspng)": lambda n: imagefile._decode_canvas_png(images[n % len(images)]),
        "  PNG decode by OpenCV (the fallback)": lambda n: cv2.imdecode(
            np.frombuffer(images[n % len(images)], np.uint8), -1
        ),
        "  preprocess (decode included)": lambda n: preprocess(images[n % len(images)]),
        "  inference (Classifier.predict)": lambda n: classifier.predict(pixels),
        "  drawing_create (preprocess, inference, file, row)": lambda n: services.drawing_create(
            data=images[n % len(images)], visitor="breakdown"
        ),
        "  output serializer (with the 28x28 PNG)": lambda n: PredictionOutputSerializer(drawing).data,
    }
    results = {name: [] for name in parts}
    for _ in range(rounds):  # rounds interleave the parts, so a busy moment of the machine hits them all
        for name, part in parts.items():
            for n in range(10):
                part(n)
            started = time.process_time()
            for n in range(count):
                part(n)
            results[name].append((time.process_time() - started) * 1000 / count)
    print(f"CPU per call, median of {rounds} rounds of {count} (load average {os.getloadavg()[0]:.1f}):")
    for name, values in results.items():
        print(f"  {name:<52} {sorted(values)[rounds // 2]:6.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument(
        "--postgres-url",
        default="postgres://postgres@127.0.0.1:5432/postgres",
        help="server where a scratch database is created and dropped",
    )
    parser.add_argument("--connections", default="1,8,32", help="concurrent clients, comma-separated")
    parser.add_argument("--duration", type=int, default=10, help="seconds per run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of unmeasured load first")
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", "2")))
    parser.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", "4")))
    parser.add_argument("--worker-class", default="gthread", choices=["gthread", "sync"])
    parser.add_argument("--drawings", type=int, default=8, help="different drawings to cycle through")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable of the server (a variant to compare), repeatable",
    )
    parser.add_argument("--breakdown", action="store_true", help="first time each part of a request in-process")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")

    print("machine:", json.dumps(machine()))
    print(
        f"server: gunicorn {args.worker_class}, {args.workers} workers x {args.threads} threads; "
        f"database: {args.database}; load generator: wrk, 1 thread, {LUA_SCRIPT.name}"
    )
    overrides = dict(setting.split("=", 1) for setting in args.set)
    if overrides:
        print("variant:", " ".join(args.set))
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as bodies:
        for url in canvas_data_urls(args.drawings):
            bodies.write(json.dumps({"image": url}) + "\n")
    bodies_file = Path(bodies.name)
    failures = 0
    try:
        with scratch_site(args.database, args.postgres_url, overrides) as env:
            store = Store(env)
            if args.breakdown:
                breakdown(canvas_data_urls(args.drawings))
            with running_server(env, workers=args.workers, threads=args.threads, worker_class=args.worker_class) as (
                base,
                server,
            ):
                if args.warmup:
                    run_wrk(base, bodies_file, 8, args.warmup)
                # "missing": 201s without their row or file. "orphans": files without a row. Rows can
                # outnumber 201s by the requests in flight when wrk stopped (answered, but not counted).
                # "cpu ms": CPU time per request of the server (all workers) and of wrk: on a shared, busy
                # machine it varies far less than throughput, and 2 cores / (their sum) bounds throughput.
                print(
                    f"{'clients':>7} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'errors':>6} "
                    f"{'201s':>6} {'missing':>7} {'rows':>6} {'orphans':>7} {'cpu ms':>7} {'wrk ms':>7}"
                )
                for connections in (int(c) for c in args.connections.split(",")):
                    rows_before, files_before = store.counts()
                    figures = measure(base, server.pid, bodies_file, connections, args.duration)
                    rows_after, files_after = store.counts()
                    created = figures["statuses"].get("201", 0)
                    errors = (
                        figures["socket_errors"]
                        + figures["timeouts"]
                        + sum(count for status, count in figures["statuses"].items() if status != "201")
                    )
                    missing = store.missing(figures["ids"]) + (len(set(figures["ids"])) != created)
                    rows = rows_after - rows_before
                    orphans = (files_after - files_before) - rows
                    failures += errors + missing + abs(orphans) + (not created <= rows <= created + connections)
                    print(
                        f"{connections:>7} {figures['per_second']:>8.1f} {figures['p50_us'] / 1000:>7.1f} "
                        f"{figures['p99_us'] / 1000:>7.1f} {figures['max_us'] / 1000:>7.1f} {errors:>6} "
                        f"{created:>6} {missing:>7} {rows:>6} {orphans:>7} {figures['server_cpu_ms']:>7.2f} "
                        f"{figures['wrk_cpu_ms']:>7.2f}",
                        flush=True,
                    )
            without_file = store.rows_without_file()
            failures += without_file
            print(f"rows in the database without their image file: {without_file}")
            print("load average after:", [round(load, 2) for load in os.getloadavg()])
    finally:
        bodies_file.unlink(missing_ok=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
