"""Start-up time and memory of the site served as `make serve` serves it.

Starts the server as `make serve` does (digitsite/serve.py) on a scratch SQLite site (see bench_http.py),
measures the time from launching it to the first answered prediction, sends a bounded number of predictions from several clients (each on
fresh connections, so both workers get their share), then prints the resident size of each process:
RSS (what `ps` shows; pages shared with the master after fork count in every worker), PSS (shared pages
split between the processes that share them) and USS (the worker's own pages).

    python bench/bench_memory.py
    python bench/bench_memory.py --predictions 1000 --clients 8 --workers 2 --threads 1
"""

import argparse
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_http import BASE_DIR, canvas_data_urls, free_port, machine, scratch_site, server_command  # noqa: E402


def post(port: int, body: bytes) -> int:
    """Return the status of one POST /api/predictions/ on a new connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", "/api/predictions/", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def memory_mb(pid: int) -> dict:
    """Return RSS, PSS and USS of a process in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0]) / 1024
    return {
        "rss": fields["Rss"],
        "pss": fields["Pss"],
        "uss": fields["Private_Clean"] + fields["Private_Dirty"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS") or len(os.sched_getaffinity(0))))
    parser.add_argument("--threads", type=int, default=int(os.environ.get("THREADS") or 1))
    args = parser.parse_args()

    print("machine:", json.dumps(machine()))
    print(f"server: digitsite.serve (Granian), {args.workers} workers x {args.threads} threads; database: sqlite")
    bodies = [json.dumps({"image": url}).encode() for url in canvas_data_urls(8)]
    with scratch_site("sqlite", "") as env:
        port = free_port()
        started = time.perf_counter()
        command, server_env = server_command(f"granian:{args.workers}x{args.threads}", port)
        server = subprocess.Popen(
            command,
            cwd=BASE_DIR,
            env={**env, **server_env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = started + 60
            while True:
                try:
                    if post(port, bodies[0]) == 201:
                        break
                except OSError:
                    pass
                if server.poll() is not None or time.perf_counter() > deadline:
                    sys.exit("the server did not answer a prediction within 60 s")
                time.sleep(0.01)
            print(f"first prediction answered {time.perf_counter() - started:.2f} s after the server was launched")

            statuses = []
            per_client = args.predictions // args.clients

            def client(number: int) -> None:
                for n in range(per_client):
                    statuses.append(post(port, bodies[(number + n) % len(bodies)]))

            clients = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
            sent = time.perf_counter()
            for thread in clients:
                thread.start()
            for thread in clients:
                thread.join()
            elapsed = time.perf_counter() - sent
            failed = sum(status != 201 for status in statuses)
            print(f"{len(statuses)} more predictions in {elapsed:.1f} s, {failed} not answered 201")

            workers = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
            print(f"{'process':>14} {'RSS MB':>7} {'PSS MB':>7} {'USS MB':>7}")
            for name, pid in [("master", server.pid), *((f"worker {n + 1}", int(p)) for n, p in enumerate(workers))]:
                memory = memory_mb(pid)
                print(f"{name:>14} {memory['rss']:>7.1f} {memory['pss']:>7.1f} {memory['uss']:>7.1f}")
        finally:
            server.terminate()
            server.wait(timeout=30)
    print("load average after:", [round(load, 2) for load in os.getloadavg()])
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
