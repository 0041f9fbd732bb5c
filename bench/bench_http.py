"""HTTP load on POST /api/predictions/ against the site served as `make serve` serves it.

Starts the server itself (DEBUG off, throttling off) on 127.0.0.1 with a scratch database and media
folder, so nothing of var/ is touched: a SQLite file in a temporary folder, or a scratch PostgreSQL
database created for the run and dropped after it. Then, for each number of concurrent clients, wrk (one
thread, bench/wrk/predict.lua) POSTs browser-like 280x280 canvas PNGs for a bounded time and the script
prints throughput, p50/p99 latency, errors and the server's CPU time per request, and checks that every
201 has its row and its image file.

Several servers, or this code and an earlier commit, are compared in one run: all are started side by
side, each on its own scratch site, and measured in turn, round after round (A, B, A, B, ...), so a busy
moment of the shared machine hits them all; the summary gives medians and their ratios to the first.

    python bench/bench_http.py                                   # SQLite, the server `make serve` runs
    python bench/bench_http.py --database postgres               # PostgreSQL at --postgres-url
    python bench/bench_http.py --baseline main --rounds 5        # this code against main's, interleaved
    python bench/bench_http.py --server gthread:2x4 --server sync:2 --server granian:2x1
    python bench/bench_http.py --set CONN_MAX_AGE=0 --set CONN_MAX_AGE=60   # variants of the environment
    python bench/bench_http.py --breakdown                       # also: CPU per part of a request, in-process

A server is `default` (what `make serve` runs: digitsite/serve.py, Granian), `granian:WxT` (the same with
W workers of T threads), `gthread:WxT` and `sync:W` (gunicorn, W workers of T threads) or `gunicorn` (with
the code's own gunicorn.conf.py: how `make serve` served the site before Granian, and the default server of
`--baseline`).
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
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

BASE_DIR = Path(__file__).resolve().parent.parent
LUA_SCRIPT = BASE_DIR / "bench" / "wrk" / "predict.lua"
MNIST = BASE_DIR / "training" / "data" / "mnist.npz"
CANVAS_SIZE = 280  # what the drawing page exports (static/js/drawing-pad.js)
DEFAULT_SERVER = "default"


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
def scratch_site(database: str, postgres_url: str, overrides: dict | None = None, code: Path = BASE_DIR):
    """Yield the environment of a throwaway production-style site; remove its files and database after.

    `code` is the folder of the code that serves it (this checkout, or an earlier commit's copy): its own
    migrations make the tables.
    """
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
        DIGIT_MODEL_CACHE=str(folder / "model-cache"),
        DIGIT_THROTTLE_PREDICTIONS="",
        DIGIT_THROTTLE_FEEDBACK="",
        DJANGO_SETTINGS_MODULE="digitsite.settings",
    )
    env.update(overrides or {})
    admin = None
    if database == "postgres":
        import psycopg

        name = f"digit_bench_{os.getpid()}_{folder.name.rsplit('-', 1)[-1].lower()}"
        admin = psycopg.connect(postgres_url, autocommit=True)
        admin.execute(f'CREATE DATABASE "{name}"')
        env["DATABASE_URL"] = urllib.parse.urlparse(postgres_url)._replace(path=f"/{name}").geturl()
    else:
        env["DATABASE_URL"] = f"sqlite:///{folder / 'db.sqlite3'}"
    try:
        for command in (["migrate", "--noinput"], ["createcachetable"], ["register_base_model"]):
            subprocess.run(
                [sys.executable, "manage.py", *command], cwd=code, env=env, check=True, stdout=subprocess.DEVNULL
            )
        yield env
    finally:
        if admin is not None:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.close()
        shutil.rmtree(folder, ignore_errors=True)


def server_command(server: str, port: int) -> tuple[list[str], dict[str, str]]:
    """Return the command and environment that serve the site on `port` with `server` (see the module's docstring)."""
    python = sys.executable
    kind, _, shape = server.partition(":")
    workers, _, threads = shape.partition("x")
    if kind in (DEFAULT_SERVER, "granian"):
        # digitsite/serve.py, as `make serve` runs it; WORKERS and THREADS as given, else its own defaults.
        sizes = {"WORKERS": workers, "THREADS": threads or "1"} if kind == "granian" else {}
        return [python, "-m", "digitsite.serve"], {"HOST": "127.0.0.1", "PORT": str(port), **sizes}
    command = [python, "-m", "gunicorn", "digitsite.wsgi", "--bind", f"127.0.0.1:{port}"]
    if kind == "gunicorn":  # the code's own gunicorn.conf.py decides (make serve before Granian)
        return command, {}
    if kind not in ("gthread", "sync"):
        raise ValueError(f"unknown server {server!r}: default, gunicorn, gthread:WxT, sync:W or granian:WxT")
    return [*command, "--worker-class", kind, "--workers", workers or "2", "--threads", threads or "1"], {}


@contextlib.contextmanager
def running_server(
    env: dict,
    *,
    workers: int | None = None,
    threads: int | None = None,
    server: str = DEFAULT_SERVER,
    code: Path = BASE_DIR,
):
    """Yield (base URL, server process) once /api/health/ answers 200; stop the server after.

    `workers` and `threads` (Granian's, as `make serve` runs it) win over `server` (see server_command).
    """
    if workers or threads:
        server = f"granian:{workers or ''}x{threads or 1}"
    port = free_port()
    command, server_env = server_command(server, port)
    process = subprocess.Popen(
        command,
        cwd=code,
        env={**env, **server_env},
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
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{server} did not become healthy")
            time.sleep(0.1)
        yield base, process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _descendants(pid: int) -> list[int]:
    """Return the ids of every living process started by `pid`, and by those, and so on."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):
                for child in (task / "children").read_text().split():
                    found += [int(child), *_descendants(int(child))]
    return found


def server_cpu_seconds(master: int) -> float:
    """Return the CPU time (user + system) used so far by a server's processes, dead or alive."""
    ticks = os.sysconf("SC_CLK_TCK")

    def times(pid: int, fields: slice) -> int:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return sum(int(value) for value in stat.rsplit(")", 1)[1].split()[fields])

    # Fields 14-17 of the master: its own time and that of processes already replaced (waited for).
    total = times(master, slice(11, 15))
    for child in _descendants(master):
        with contextlib.suppress(FileNotFoundError):
            total += times(child, slice(11, 13))
    return total / ticks


def run_wrk(base: str, bodies_file: Path, connections: int, seconds: int) -> dict:
    """Return wrk's figures for one bounded run (one wrk thread, so the load generator stays light).

    Besides the RESULT figures, "ids" lists the drawing id of every 201 that wrk received.
    """
    ids_file = bodies_file.with_suffix(f".{secrets.token_hex(4)}.ids")
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
    """Counts the rows and image files of a scratch site, read directly (the same way for any version of the code)."""

    def __init__(self, env: dict):
        self.url = env["DATABASE_URL"]
        self.media = Path(env["MEDIA_ROOT"])

    def _rows(self) -> list[tuple[str, str]]:
        """Return (id as 32 hex digits, image name) of every drawing."""
        query = "SELECT id, image FROM predictor_drawing"
        if self.url.startswith("sqlite:///"):
            with contextlib.closing(sqlite3.connect(self.url.removeprefix("sqlite:///"), timeout=30)) as database:
                rows = database.execute(query).fetchall()
        else:
            import psycopg

            with psycopg.connect(self.url) as database:
                rows = database.execute(query).fetchall()
        return [(uuid.UUID(str(key)).hex, name) for key, name in rows]

    def _files(self) -> int:
        return sum(1 for path in (self.media / "drawings").rglob("*") if path.is_file())

    def counts(self) -> tuple[int, int]:
        """Return (rows, image files), once requests still in flight when wrk stopped have finished."""
        previous = None
        while True:
            current = (len(self._rows()), self._files())
            if current == previous:
                return current
            previous = current
            time.sleep(0.5)

    def missing(self, ids: list[str]) -> int:
        """Return how many of these drawing ids have no row or no image file."""
        found = dict(self._rows())
        wanted = [uuid.UUID(id).hex if id != "?" else id for id in ids]
        return sum(id not in found or not (self.media / found[id]).is_file() for id in wanted)

    def rows_without_file(self) -> int:
        return sum(not (self.media / name).is_file() for _, name in self._rows())


def breakdown(urls: list[str], rounds: int = 5, count: int = 200) -> None:
    """Print the CPU milliseconds of each part of a prediction, timed in this process (Django set up)."""
    import logging

    import django

    django.setup()
    from django.test import Client

    from predictor import imagefile, model_cache, services
    from predictor.api import PredictionOutputSerializer
    from predictor.imagefile import decode_payload, encode_stored_png, stored_png
    from predictor.preprocessing import preprocess, preprocess_steps

    logging.getLogger("django.request").setLevel(logging.ERROR)  # the refused requests below are expected
    client = Client(HTTP_HOST="localhost")
    bodies = [json.dumps({"image": url}) for url in urls]
    images = [decode_payload(url) for url in urls]
    _, classifier = model_cache.active_classifier()
    pixels = preprocess(images[0])
    decoded = [preprocess_steps(image).decoded for image in images]
    drawing = services.drawing_create(data=images[0], visitor="breakdown")

    def new_visitor_post(n: int) -> None:
        client.cookies.clear()  # as wrk sends them: no cookie, so each is a new visitor
        client.post("/api/predictions/", bodies[n % len(bodies)], content_type="application/json")

    parts = {
        "whole request (Django test client, 201)": new_visitor_post,
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
        "  stored copy as served (stored_png: checked, kept)": lambda n: stored_png(
            images[n % len(images)], decoded[n % len(decoded)]
        ),
        "  stored PNG made from the pixels (other files)": lambda n: encode_stored_png(decoded[n % len(decoded)]),
        "  drawing_create (preprocess, inference, file, row)": lambda n: services.drawing_create(
            data=images[n % len(images)], visitor="breakdown"
        ),
        "  output serializer (with the 28x28 PNG)": lambda n: PredictionOutputSerializer(drawing).data,
    }
    results: dict[str, list[float]] = {name: [] for name in parts}
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
        print(f"  {name:<52} {statistics.median(values):6.3f} ms")


@contextlib.contextmanager
def code_at(ref: str):
    """Yield a folder holding the project's files at git `ref` (with the shipped model), removed after."""
    folder = Path(tempfile.mkdtemp(prefix="digit-baseline-"))
    try:
        archive = subprocess.run(["git", "archive", ref], cwd=BASE_DIR, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Variant:
    """One thing measured: a version of the code, served by one server with one environment."""

    label: str
    code: Path
    server: str
    overrides: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)
    base: str = ""
    pid: int = 0
    store: Store | None = None
    rows: dict[int, list[dict]] = field(default_factory=dict)


HEADER = (
    f"{'variant':<28} {'clients':>7} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'errors':>6} "
    f"{'201s':>6} {'missing':>7} {'rows':>6} {'orphans':>7} {'cpu ms':>7} {'wrk ms':>7}"
)


def measure_variant(variant: Variant, bodies_file: Path, connections: int, seconds: int) -> int:
    """Measure one run of `variant`, print its row, and return how many integrity failures it had."""
    assert variant.store is not None
    rows_before, files_before = variant.store.counts()
    figures = measure(variant.base, variant.pid, bodies_file, connections, seconds)
    rows_after, files_after = variant.store.counts()
    created = figures["statuses"].get("201", 0)
    errors = (
        figures["socket_errors"]
        + figures["timeouts"]
        + sum(count for status, count in figures["statuses"].items() if status != "201")
    )
    # "missing": 201s without their row or file. "orphans": files without a row. Rows can outnumber 201s
    # by the requests in flight when wrk stopped (answered, but not counted).
    missing = variant.store.missing(figures["ids"]) + (len(set(figures["ids"])) != created)
    rows = rows_after - rows_before
    orphans = (files_after - files_before) - rows
    figures["errors"] = errors
    variant.rows.setdefault(connections, []).append(figures)
    print(
        f"{variant.label:<28} {connections:>7} {figures['per_second']:>8.1f} {figures['p50_us'] / 1000:>7.1f} "
        f"{figures['p99_us'] / 1000:>7.1f} {figures['max_us'] / 1000:>7.1f} {errors:>6} "
        f"{created:>6} {missing:>7} {rows:>6} {orphans:>7} {figures['server_cpu_ms']:>7.2f} "
        f"{figures['wrk_cpu_ms']:>7.2f}",
        flush=True,
    )
    return errors + missing + abs(orphans) + (not created <= rows <= created + connections)


def print_summary(variants: list[Variant], connection_counts: list[int]) -> None:
    """Print the median of each figure over the rounds, and its ratio to the first variant's."""
    print(
        f"\nmedians over the rounds; in brackets the ratio to {variants[0].label} measured in the same rounds\n"
        f"{'variant':<28} {'clients':>7} {'req/s':>15} {'p50 ms':>15} {'p99 ms':>15} {'p99/p50':>7} "
        f"{'cpu ms':>15} {'errors':>6}"
    )
    for connections in connection_counts:
        reference = None
        for variant in variants:
            runs = variant.rows[connections]
            medians = {
                "per_second": statistics.median(run["per_second"] for run in runs),
                "p50": statistics.median(run["p50_us"] / 1000 for run in runs),
                "p99": statistics.median(run["p99_us"] / 1000 for run in runs),
                "cpu": statistics.median(run["server_cpu_ms"] for run in runs),
            }
            reference = reference or medians
            cells = [f"{medians[key]:>7.2f} ({medians[key] / reference[key]:>4.2f})" for key in medians]
            errors = sum(run["errors"] for run in runs)
            print(
                f"{variant.label:<28} {connections:>7} {cells[0]} {cells[1]} {cells[2]} "
                f"{medians['p99'] / medians['p50']:>7.1f} {cells[3]} {errors:>6}"
            )


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
    parser.add_argument("--warmup", type=int, default=3, help="seconds of unmeasured load first, per server")
    parser.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="SERVER",
        help=f"default, gunicorn, gthread:WxT, sync:W or granian:WxT (repeatable; default {DEFAULT_SERVER})",
    )
    parser.add_argument(
        "--baseline",
        metavar="GIT_REF",
        help="also run the code of this commit, interleaved, and give ratios to it",
    )
    parser.add_argument(
        "--baseline-server",
        default="gunicorn",
        help="the server the baseline code runs with (default: gunicorn with that commit's gunicorn.conf.py)",
    )
    parser.add_argument("--rounds", type=int, help="rounds of every variant (default 1, or 3 when comparing)")
    parser.add_argument("--drawings", type=int, default=8, help="different drawings to cycle through")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE[,NAME=VALUE]",
        help="environment variables of the server; each --set is a variant to compare (repeatable)",
    )
    parser.add_argument("--breakdown", action="store_true", help="first time each part of a request in-process")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")

    servers = args.server or [DEFAULT_SERVER]
    settings_variants = [dict(item.split("=", 1) for item in group.split(",")) for group in args.set] or [{}]
    variants = [
        Variant(
            label=" ".join(filter(None, [server, ",".join(f"{k}={v}" for k, v in overrides.items())])),
            code=BASE_DIR,
            server=server,
            overrides=overrides,
        )
        for server in servers
        for overrides in settings_variants
    ]
    connection_counts = [int(c) for c in args.connections.split(",")]
    rounds = args.rounds or (3 if len(variants) > 1 or args.baseline else 1)
    print("machine:", json.dumps(machine()))
    print(f"database: {args.database}; load generator: wrk, 1 thread, {LUA_SCRIPT.name}; rounds: {rounds}")
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as bodies:
        for url in canvas_data_urls(args.drawings):
            bodies.write(json.dumps({"image": url}) + "\n")
    bodies_file = Path(bodies.name)
    failures = 0
    try:
        with contextlib.ExitStack() as stack:
            if args.baseline:
                commit = subprocess.run(
                    ["git", "rev-parse", "--short", args.baseline], cwd=BASE_DIR, capture_output=True, text=True
                ).stdout.strip()
                folder = stack.enter_context(code_at(args.baseline))
                variants.insert(
                    0, Variant(label=f"{args.baseline} ({commit})", code=folder, server=args.baseline_server)
                )
                for variant in variants[1:]:
                    variant.label = f"this code {variant.label}"
            for variant in variants:
                variant.env = stack.enter_context(
                    scratch_site(args.database, args.postgres_url, variant.overrides, code=variant.code)
                )
                variant.store = Store(variant.env)
            if args.breakdown:
                os.environ.update(variants[-1].env)
                sys.path.insert(0, str(BASE_DIR))
                breakdown(canvas_data_urls(args.drawings))
            for variant in variants:
                base, process = stack.enter_context(
                    running_server(variant.env, server=variant.server, code=variant.code)
                )
                variant.base, variant.pid = base, process.pid
                command, server_env = server_command(variant.server, 0)
                sizes = " ".join(f"{k}={v}" for k, v in server_env.items() if k in ("WORKERS", "THREADS") and v)
                print(f"{variant.label}: {' '.join(filter(None, [sizes, *command[1:]]))} in {variant.code}")
            for variant in variants:
                if args.warmup:
                    run_wrk(variant.base, bodies_file, 8, args.warmup)
            # "cpu ms": CPU time per request of the server (all its processes) and of wrk: on a shared, busy
            # machine it varies far less than throughput, and cores / (their sum) bounds throughput.
            print(HEADER)
            for round_number in range(rounds):
                # Every other round in reverse order, so that no variant always runs right after another.
                ordered = variants if round_number % 2 == 0 else variants[::-1]
                for connections in connection_counts:
                    for variant in ordered:
                        failures += measure_variant(variant, bodies_file, connections, args.duration)
            for variant in variants:
                assert variant.store is not None
                without_file = variant.store.rows_without_file()
                failures += without_file
                print(f"{variant.label}: rows in the database without their image file: {without_file}")
            if rounds > 1 or len(variants) > 1:
                print_summary(variants, connection_counts)
            print("load average after:", [round(load, 2) for load in os.getloadavg()])
    finally:
        bodies_file.unlink(missing_ok=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
