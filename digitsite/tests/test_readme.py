"""The README's commands, run as a newcomer runs them: a fresh copy, `make run`, then every other line
of its shell blocks in a second terminal with nothing set by hand."""

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

import cv2
import numpy as np
import pytest
from django.conf import settings

BASE_DIR = settings.BASE_DIR
SERVER_COMMANDS = ("make run", "make serve")
# Lines not run here, and why: this test runs inside `make test`.
NOT_RUN = {"make test": "the test suite itself"}
# Environment a new terminal on a fresh machine does not have (pytest and make set these for the suite).
NOT_INHERITED = {"DEBUG", "SECRET_KEY", "DATABASE_URL", "CACHE_URL", "DJANGO_SETTINGS_MODULE", "VIRTUAL_ENV"}
SUPERUSER_ANSWERS = "admin\nadmin@example.com\nReadme-check-passphrase-9\nReadme-check-passphrase-9\n"
README_PORT = "127.0.0.1:8000"


def readme_commands(text: str) -> list[str]:
    """Return every command line of the README's ```sh blocks, in order."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL):
        for line in block.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                commands.append(line.strip())
    return commands


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fresh_copy(target) -> None:
    """Copy the project's files (what git would clone, plus new files not yet committed) to `target`."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=BASE_DIR,
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        source = BASE_DIR / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    # The suite's own virtual environment stands in for `make`'s install (already made by `make test`);
    # its stamps must be newer than the requirement files for make to see it as installed.
    (target / ".venv").symlink_to((BASE_DIR / ".venv").resolve())
    for requirements in target.glob("requirements*.txt"):
        os.utime(requirements, (0, 0))


def new_terminal_env() -> dict[str, str]:
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if ".venv" not in p)
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED and not k.startswith(("DIGIT_", "PYTEST"))}
    return {**env, "PATH": path}


def wait_for_health(url: str, server: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert server.poll() is None, f"the server stopped: {server.stdout.read() if server.stdout else ''}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{url} did not answer 200 within {seconds} s")


def start_server(command: str, cwd, env) -> tuple[subprocess.Popen, str]:
    """Start a `make run`/`make serve` line on a free port; return the process and the address it serves."""
    address = f"127.0.0.1:{free_port()}"
    command = re.sub(r"\bPORT=\d+", "", command)
    server = subprocess.Popen(
        ["bash", "-c", command],
        cwd=cwd,
        env={**env, "PORT": address.rsplit(":", 1)[1]},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    wait_for_health(f"http://{address}/api/health/", server)
    return server, address


def stop(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)


def test_readme_commands_work_as_written_after_make_run(tmp_path):
    commands = readme_commands((BASE_DIR / "README.md").read_text())
    assert "make run" in commands[0] and any("createsuperuser" in c for c in commands)
    project = tmp_path / "project"
    project.mkdir()
    fresh_copy(project)
    env = new_terminal_env()
    # A drawn digit for the README's curl example (an MNIST training digit on a white canvas).
    with np.load(BASE_DIR / "training" / "data" / "mnist.npz") as mnist:
        digit = mnist["x_train"][0]
    cv2.imwrite(str(project / "digit.png"), 255 - cv2.resize(digit, (280, 280)))

    first, *rest = commands
    site, address = start_server(first, project, env)
    try:
        script, numbered = [], []
        for command in rest:
            bare = command.split("#")[0].strip()
            if bare in NOT_RUN:
                continue
            if bare.endswith(SERVER_COMMANDS):
                server, _ = start_server(command, project, env)
                stop(server)
                continue
            numbered.append(command)
            marker = f"echo '@@ {len(numbered)}' | tee /dev/stderr"
            script.append(f'{marker}\n{command.replace(README_PORT, address)}\necho "@@ rc $?"')
        finished = subprocess.run(
            ["bash", "-c", "\n".join(script)],
            cwd=project,
            env=env,
            input=SUPERUSER_ANSWERS,
            capture_output=True,
            text=True,
            timeout=900,
            start_new_session=True,
        )
    finally:
        stop(site)

    output = finished.stdout + finished.stderr
    assert "Traceback" not in output and "ImproperlyConfigured" not in output, output
    codes = re.findall(r"@@ rc (\d+)", finished.stdout)
    errors = re.split(r"@@ \d+\n", finished.stderr)[1:]
    assert len(codes) == len(errors) == len(numbered), output
    for command, code, error in zip(numbered, codes, errors):
        # A management command may refuse with a sentence (CommandError, exit 1), e.g. retrain with
        # no reviewed drawings yet; anything else must succeed.
        refused = code == "1" and "CommandError: " in error and "manage.py" in command
        assert code == "0" or refused, f"{command!r} exited {code}:\n{output}"
    assert '"predicted_label": 5' in finished.stdout.replace('":5', '": 5'), output
