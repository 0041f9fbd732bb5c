"""What the costliest images the prediction API accepts cost: CPU and memory per request, and a worker after them.

For each kind of image the API accepts (PNG 8-bit RGBA, RGB, grey and palette, interlaced, 16-bit; JPEG
baseline and progressive; WebP lossless and lossy) it builds the costliest file it can within the limits
of `predictor.imagefile` and the request body limit: the largest accepted size, noise (so the whole
pipeline runs and the stored copy is as large as it gets), the slowest PNG filter (Paeth), the highest
JPEG or WebP quality that still fits in a request. Then padded and metadata-laden files, and some the
limits refuse. Then:

1. In-process: each file goes through `services.drawing_create` (decode, preprocess, inference, the
   stored PNG, the file and the row) in a fresh process set up on a scratch site (bench_http.py's), after
   one warm-up prediction; it prints the CPU time of that call, and its peak extra resident memory (the
   process's peak, VmHWM, reset just before the call, minus its resident size before it). Medians of
   --runs processes: the machine is shared, and a process's first call is the honest one for memory.
2. Over HTTP: gunicorn started as `make serve` starts it (bench_http.py), 200 page drawings, then the
   whole corpus posted --rounds times as multipart uploads by --clients clients, then 200 page drawings
   again; each worker's resident size (VmRSS) after each step, and its peak (VmHWM).

Results are in docs/performance.md, "Costliest inputs".

    python bench/bench_hostile.py
    python bench/bench_hostile.py --runs 3 --rounds 2 --only jpeg
    python bench/bench_hostile.py --runs 0 --clients 8 --set MALLOC_MMAP_THRESHOLD_=131072
"""

import argparse
import concurrent.futures
import http.client
import io
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_http import BASE_DIR, machine, running_server, scratch_site  # noqa: E402

from predictor import imagefile  # noqa: E402

# The largest file a request can carry: DIGIT_MAX_UPLOAD_BYTES (5 MB) less room for the multipart framing.
FILE_LIMIT = 5 * 1024 * 1024 - 2048
SIDE = math.isqrt(imagefile.MAX_PIXELS)  # the largest accepted square, for the plain kinds
COSTLY_SIDE = math.isqrt(imagefile.MAX_PIXELS // imagefile.COSTLY_PIXELS_DIVISOR)  # 16-bit, interlaced, progressive
WEBP_BPP = imagefile.WEBP_MAX_BITS_PER_PIXEL  # denser WebPs count as costly
WEBP_BYTES = WEBP_BPP * SIDE * SIDE // 8
PNG_PAETH = 4
ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
rng = np.random.default_rng(0)


# Building the corpus.


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_file(
    width: int,
    height: int,
    *,
    colour_type: int,
    depth: int = 8,
    interlace: bool = False,
    entropy_bits: int = 8,
) -> bytes:
    """Return a PNG whose every row is Paeth-filtered random bytes: it decodes to noise, the slowest way.

    `entropy_bits` below 8 draws the filtered bytes from fewer values, so the file compresses enough to
    fit in a request while every pixel still has to be inflated and unfiltered.
    """
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour_type]
    row_bytes = lambda w: math.ceil(w * channels * depth / 8)  # noqa: E731
    passes = (
        [(width, height)]
        if not interlace
        else [(max(0, math.ceil((width - x) / dx)), max(0, math.ceil((height - y) / dy))) for x, y, dx, dy in ADAM7]
    )
    compressor = zlib.compressobj(6)
    idat = []
    for pass_width, pass_height in passes:
        if pass_width == 0 or pass_height == 0:
            continue
        rows = rng.integers(0, 2**entropy_bits, (pass_height, row_bytes(pass_width) + 1), dtype=np.uint8)
        rows[:, 0] = PNG_PAETH
        idat.append(compressor.compress(rows.tobytes()))
    idat.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, int(interlace))
    palette = b""
    if colour_type == 3:  # 256 random colours, each with a random transparency: decoded as RGBA
        palette = png_chunk(b"PLTE", rng.bytes(768)) + png_chunk(b"tRNS", rng.bytes(256))
    return (
        imagefile.PNG_SIGNATURE
        + png_chunk(b"IHDR", header)
        + palette
        + png_chunk(b"IDAT", b"".join(idat))
        + png_chunk(b"IEND", b"")
    )


def largest_fitting(make, levels, max_bytes: int = FILE_LIMIT) -> bytes:
    """Return make(level) for the costliest of `levels` (ordered cheapest first) whose file fits in max_bytes."""
    best = None
    for level in levels:
        data = make(level)
        if len(data) > max_bytes:
            break
        best = data
    assert best is not None, "not even the cheapest level fits"
    return best


def noise(side: int, channels: int) -> np.ndarray:
    return rng.integers(0, 256, (side, side, channels), dtype=np.uint8)


def grey_noise_rgba(side: int, bits: int) -> np.ndarray:
    """Return opaque RGBA noise of `bits` bits per pixel: grey levels spread over 0..255."""
    grey = noise(side, 1) >> (8 - bits) << (8 - bits)
    return np.concatenate([grey, grey, grey, np.full_like(grey, 255)], axis=2)


def jpeg(pixels: np.ndarray, quality: int, *, progressive: bool = False) -> bytes:
    options = [
        cv2.IMWRITE_JPEG_QUALITY,
        quality,
        cv2.IMWRITE_JPEG_PROGRESSIVE,
        int(progressive),
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
    ]
    return cv2.imencode(".jpg", pixels, options)[1].tobytes()


def webp(pixels: np.ndarray, **options) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "WEBP", method=0, **options)
    return out.getvalue()


def jpeg_scans(data: bytes) -> tuple[bytes, list[bytes], bytes]:
    """Split a JPEG into (header, scans, end): each scan with the table segments that come before it."""
    position, first, start, scans = 2, None, None, []
    while True:
        marker = data[position + 1]
        if marker == 0xD9:
            return data[:first], scans, data[position:]
        if start is None and marker in (0xC4, 0xDA, 0xDD):  # tables or a scan: the first scan group starts
            first = start = position
        length = struct.unpack(">H", data[position + 2 : position + 4])[0]
        position += 2 + length
        if marker == 0xDA:  # entropy-coded data runs to the next marker that is not a stuffed 0xFF or RST
            while not (data[position] == 0xFF and data[position + 1] not in (0x00, *range(0xD0, 0xD8))):
                position += 1
            scans.append(data[start:position])
            start = position


def with_repeated_last_scan(data: bytes, scans: int) -> bytes:
    """Return a progressive JPEG with its last (refinement) scan repeated until it has `scans` scans.

    Decoders warn about the repeated refinement but decode every scan again, one full pass each: the
    known way to make a small progressive JPEG slow.
    """
    header, groups, end = jpeg_scans(data)
    return header + b"".join(groups) + groups[-1] * (scans - len(groups)) + end


def drawing(side: int) -> np.ndarray:
    """Return a black digit-like stroke on an opaque white RGBA canvas, as the drawing page exports it."""
    canvas = np.full((side, side, 4), 255, np.uint8)
    cv2.polylines(
        canvas,
        [np.int32(np.array([[0.3, 0.2], [0.7, 0.2], [0.45, 0.85]]) * side)],
        False,
        (17, 17, 17, 255),
        max(1, side // 14),
        cv2.LINE_AA,
    )
    return canvas


def corpus() -> dict[str, bytes]:
    """Return name -> file: the costliest accepted file of each kind, padded ones, and ones refused."""
    page = cv2.imencode(".png", drawing(280))[1].tobytes()
    text = png_chunk(b"tEXt", b"Comment\x00" + b"x" * (FILE_LIMIT - len(page) - 64))
    ztxt_bomb = png_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(bytes(200_000_000), 9))
    exif = Image.Exif()
    exif[0x010E] = "x" * 60_000  # ImageDescription: a 60 kB EXIF block, as large as one APP1 segment allows
    photo_jpeg = cv2.imencode(".jpg", cv2.cvtColor(drawing(1200), cv2.COLOR_BGRA2BGR))[1].tobytes()
    appn = b"".join(
        b"\xff\xe2" + struct.pack(">H", 65535) + rng.bytes(65533)
        for _ in range((FILE_LIMIT - len(photo_jpeg)) // 65537)
    )
    progressive = jpeg(noise(COSTLY_SIDE, 3), 100, progressive=True)
    standard_scans = len(jpeg_scans(progressive)[1])
    return {
        "page drawing, 280x280 RGBA PNG (for comparison)": page,
        f"PNG 8-bit RGBA noise {SIDE}x{SIDE}": largest_fitting(
            lambda bits: png_file(SIDE, SIDE, colour_type=6, entropy_bits=bits), range(1, 9)
        ),
        f"PNG 8-bit RGB noise {SIDE}x{SIDE}": largest_fitting(
            lambda bits: png_file(SIDE, SIDE, colour_type=2, entropy_bits=bits), range(1, 9)
        ),
        f"PNG 8-bit grey noise {SIDE}x{SIDE}": png_file(SIDE, SIDE, colour_type=0),
        f"PNG palette+tRNS noise {SIDE}x{SIDE}": png_file(SIDE, SIDE, colour_type=3),
        f"PNG interlaced RGBA noise {COSTLY_SIDE}x{COSTLY_SIDE}": png_file(
            COSTLY_SIDE, COSTLY_SIDE, colour_type=6, interlace=True
        ),
        f"PNG 16-bit RGBA noise {COSTLY_SIDE}x{COSTLY_SIDE}": png_file(
            COSTLY_SIDE, COSTLY_SIDE, colour_type=6, depth=16
        ),
        f"PNG 16-bit interlaced RGBA noise {COSTLY_SIDE}x{COSTLY_SIDE}": png_file(
            COSTLY_SIDE, COSTLY_SIDE, colour_type=6, depth=16, interlace=True
        ),
        f"PNG blank RGBA {SIDE}x{SIDE} (bomb within the limits)": cv2.imencode(
            ".png", np.zeros((SIDE, SIDE, 4), np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9]
        )[1].tobytes(),
        f"JPEG baseline 4:4:4 noise {SIDE}x{SIDE}": largest_fitting(
            lambda quality: jpeg(noise(SIDE, 3), quality), range(50, 101, 5)
        ),
        f"JPEG progressive noise {COSTLY_SIDE}x{COSTLY_SIDE}, {standard_scans} scans": progressive,
        f"JPEG progressive noise {COSTLY_SIDE}x{COSTLY_SIDE}, {imagefile.MAX_JPEG_SCANS} scans": (
            with_repeated_last_scan(progressive, imagefile.MAX_JPEG_SCANS)
        ),
        f"WebP lossless noise {SIDE}x{SIDE}, {WEBP_BPP} bits per pixel": largest_fitting(
            lambda bits: webp(grey_noise_rgba(SIDE, bits), lossless=True), range(1, 9), WEBP_BYTES
        ),
        f"WebP lossless noise {COSTLY_SIDE}x{COSTLY_SIDE}": webp(noise(COSTLY_SIDE, 4), lossless=True),
        f"WebP lossy noise {SIDE}x{SIDE}, {WEBP_BPP} bits per pixel": largest_fitting(
            lambda quality: webp(noise(SIDE, 3), quality=quality), range(0, 101, 5), WEBP_BYTES
        ),
        f"WebP lossy+alpha noise {SIDE}x{SIDE}, {WEBP_BPP} bits per pixel": largest_fitting(
            lambda quality: webp(np.dstack([noise(SIDE, 3), grey_noise_rgba(SIDE, 1)[..., :1]]), quality=quality),
            range(0, 101, 5),
            WEBP_BYTES,
        ),
        f"WebP lossy noise {COSTLY_SIDE}x{COSTLY_SIDE}, quality 100": webp(noise(COSTLY_SIDE, 3), quality=100),
        "padded: 280x280 PNG + a tEXt chunk up to the body limit": page[:33] + text + page[33:],
        "padded: 280x280 PNG + 200 MB zTXt bomb": page[:33] + ztxt_bomb + page[33:],
        "padded: 280x280 PNG + bytes after IEND to the body limit": page + rng.bytes(FILE_LIMIT - len(page)),
        "padded: 1200x1200 JPEG + APP2 segments to the body limit": photo_jpeg[:2] + appn + photo_jpeg[2:],
        "padded: 280x280 JPEG + 60 kB EXIF": jpeg(cv2.cvtColor(drawing(280), cv2.COLOR_BGRA2BGR), 90)[:2]
        + b"\xff\xe1"
        + struct.pack(">H", len(exif.tobytes()) + 8)
        + b"Exif\x00\x00"
        + exif.tobytes()
        + jpeg(cv2.cvtColor(drawing(280), cv2.COLOR_BGRA2BGR), 90)[2:],
        "refused: 16-bit RGBA 4096x4096 stroke PNG (150 kB)": sixteen_bit_stroke(4096),
        f"refused: PNG 16-bit RGBA {SIDE}x{SIDE}": png_file(SIDE, SIDE, colour_type=6, depth=16, entropy_bits=1),
        f"refused: JPEG progressive flat grey {COSTLY_SIDE}x{COSTLY_SIDE}, 5000 scans": with_repeated_last_scan(
            jpeg(np.full((COSTLY_SIDE, COSTLY_SIDE, 3), 128, np.uint8), 100, progressive=True), 5000
        ),
        "refused: PNG 8192x256 (side over the limit)": png_file(8192, 256, colour_type=0, entropy_bits=1),
    }


def sixteen_bit_stroke(side: int) -> bytes:
    """Return a 16-bit RGBA PNG of one stroke on a transparent canvas: large, but small on the wire."""
    rgba = np.zeros((side, side, 4), np.uint16)
    cv2.line(rgba, (side // 4, side // 4), (3 * side // 4, 3 * side // 4), (0, 0, 0, 65535), side // 14)
    return cv2.imencode(".png", rgba, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes()


# Measuring one file in a fresh process.


def status_mb(field: str) -> float:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1]) / 1024


def measure_child(path: Path) -> None:
    """Print, as JSON, what one drawing_create of the file at `path` cost in this (fresh) process."""
    import django

    django.setup()
    from predictor import services
    from predictor.imagefile import PreprocessingError

    services.drawing_create(data=cv2.imencode(".png", drawing(280))[1].tobytes(), visitor="bench")  # warm-up
    data = path.read_bytes()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (the peak) to the resident size now
    before = status_mb("VmRSS:")
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        stored = services.drawing_create(data=data, visitor="bench").image.size
        outcome = f"stored {stored / 1024:.0f} kB"
    except PreprocessingError as error:
        outcome = error.code
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(
        json.dumps(
            {"cpu_ms": cpu * 1000, "wall_ms": wall * 1000, "peak_mb": status_mb("VmHWM:") - before, "outcome": outcome}
        )
    )


def in_process(env: dict, files: dict[str, Path], runs: int) -> None:
    print(f"\nIn-process, drawing_create, median of {runs} fresh processes (min-max):")
    print(f"{'input':<62} {'file':>8} {'outcome':<16} {'CPU ms':>17} {'wall ms':>8} {'peak MB':>8}")
    for name, path in files.items():
        results = []
        for _ in range(runs):
            child = subprocess.run(
                [sys.executable, __file__, "--child", str(path)], cwd=BASE_DIR, env=env, capture_output=True, text=True
            )
            if child.returncode:
                sys.exit(f"{name}: the measuring process failed:\n{child.stderr}")
            results.append(json.loads(child.stdout.strip().splitlines()[-1]))
        cpu = sorted(r["cpu_ms"] for r in results)
        median = {key: sorted(r[key] for r in results)[runs // 2] for key in ("cpu_ms", "wall_ms", "peak_mb")}
        print(
            f"{name:<62} {path.stat().st_size / 1024:>6.0f}kB {results[0]['outcome']:<16} "
            f"{median['cpu_ms']:>6.1f} ({cpu[0]:>4.0f}-{cpu[-1]:>4.0f}) {median['wall_ms']:>8.1f} "
            f"{median['peak_mb']:>8.1f}",
            flush=True,
        )


# The corpus over HTTP.


def post_file(port: int, data: bytes) -> int:
    """Return the status of one multipart POST /api/predictions/ of `data`, on a new connection."""
    boundary = "benchhostile"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request(
            "POST", "/api/predictions/", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def process_memory_mb(pid: int) -> tuple[float, float]:
    """Return (VmRSS, VmHWM) of a process in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def worker_pids(master: int, count: int) -> list[int]:
    """Return the pids of gunicorn's workers once all `count` of them have started."""
    deadline = time.monotonic() + 60
    while True:
        pids = [int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()]
        if len(pids) >= count or time.monotonic() > deadline:
            return pids
        time.sleep(0.1)


def over_http(env: dict, files: dict[str, Path], rounds: int, clients: int, workers: int, threads: int) -> None:
    """Post normal drawings, then the corpus, then normal drawings again; print each worker's memory between."""
    page = cv2.imencode(".png", drawing(280))[1].tobytes()
    with running_server(env, workers=workers, threads=threads) as (base, server):
        port = int(base.rsplit(":", 1)[1])
        pids = worker_pids(server.pid, workers)

        def post_all(bodies: list[bytes]) -> dict[int, int]:
            with concurrent.futures.ThreadPoolExecutor(clients) as pool:
                statuses = list(pool.map(lambda data: post_file(port, data), bodies))
            return {status: statuses.count(status) for status in sorted(set(statuses))}

        resident = {}
        normal = post_all([page] * 200)
        resident["after 200 page drawings"] = {pid: process_memory_mb(pid)[0] for pid in pids}
        started = time.perf_counter()
        hostile = post_all([path.read_bytes() for path in files.values()] * rounds)
        elapsed = time.perf_counter() - started
        resident["after the corpus"] = {pid: process_memory_mb(pid)[0] for pid in pids}
        post_all([page] * 200)
        resident["after 200 more page drawings"] = {pid: process_memory_mb(pid)[0] for pid in pids}
        print(
            f"\nOver HTTP: gunicorn gthread {workers} workers x {threads} threads, {clients} client(s): 200 page "
            f"drawings {normal}, then the corpus {rounds} times ({len(files) * rounds} requests in {elapsed:.1f} s) "
            f"{hostile}, then 200 page drawings; resident size of each worker (VmRSS) and its peak (VmHWM):"
        )
        for pid in pids:
            figures = ", ".join(f"{when} {sizes[pid]:.0f} MB" for when, sizes in resident.items())
            print(f"  worker {pid}: {figures}; peak {process_memory_mb(pid)[1]:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per file (median); 0: none")
    parser.add_argument("--rounds", type=int, default=3, help="times the corpus is posted over HTTP")
    parser.add_argument("--clients", default="1,8", help="concurrent HTTP clients, comma-separated runs")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--only", default="", help="only the inputs whose name contains this text")
    parser.add_argument("--no-http", action="store_true", help="skip the gunicorn part")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable of the server and the measuring processes (a variant), repeatable",
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return measure_child(args.child)

    print("machine:", json.dumps(machine()))
    print(
        f"limits: side {imagefile.MAX_SIDE}, {imagefile.MAX_PIXELS:,} pixels ({SIDE}x{SIDE}); costly kinds (16-bit, "
        f"interlaced, progressive, dense WebP) up to {imagefile.MAX_PIXELS // imagefile.COSTLY_PIXELS_DIVISOR:,} "
        f"({COSTLY_SIDE}x{COSTLY_SIDE}); request files up to {FILE_LIMIT:,} bytes"
    )
    with tempfile.TemporaryDirectory(prefix="digit-hostile-") as folder:
        files = {}
        for number, (name, data) in enumerate(corpus().items()):
            if args.only.lower() in name.lower():
                assert len(data) <= FILE_LIMIT, (name, len(data))
                files[name] = Path(folder) / f"{number}.bin"
                files[name].write_bytes(data)
        overrides = dict(setting.split("=", 1) for setting in args.set)
        if overrides:
            print("variant:", " ".join(args.set))
        with scratch_site("sqlite", "", overrides) as env:
            if args.runs:
                in_process(env, files, args.runs)
            if not args.no_http:
                for clients in (int(c) for c in args.clients.split(",")):
                    over_http(env, files, args.rounds, clients, args.workers, args.threads)
    print("load average after:", [round(load, 2) for load in os.getloadavg()])


if __name__ == "__main__":
    main()
