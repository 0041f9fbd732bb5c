"""A real S3 protocol server for the tests of object storage: moto's standalone server, one per session.

Registered in conftest.py, so a test asks for `use_s3` and calls it to move drawings and model artefacts
into a new, empty bucket exactly as DIGIT_S3_BUCKET does (the STORAGES entries come from digitsite/settings.py
itself). Nothing leaves the machine: the server listens on 127.0.0.1 and keeps its buckets in memory.
"""

import os
import runpy
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from django.conf import settings
from django.core.files.storage import storages

from predictor.models import ModelVersion

MOTO_SERVER = Path(sys.executable).with_name("moto_server")
# moto accepts any credentials; boto3 reads these from the environment, as on a real host.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
START_SECONDS = 30


@dataclass
class Bucket:
    """One bucket of the test server, read and written behind Django's back."""

    name: str
    client: object

    def keys(self, prefix: str = "") -> list[str]:
        """Return the sorted keys of every object under `prefix`."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def read(self, key: str) -> bytes:
        """Return the bytes of one object."""
        return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()

    def put(self, key: str, data: bytes) -> None:
        """Write one object."""
        self.client.put_object(Bucket=self.name, Key=key, Body=data)

    def delete(self, key: str) -> None:
        """Remove one object."""
        self.client.delete_object(Bucket=self.name, Key=key)


def s3_storages(*, bucket: str, endpoint_url: str) -> dict:
    """Return STORAGES as digitsite/settings.py makes it from DIGIT_S3_BUCKET and DIGIT_S3_ENDPOINT_URL."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DIGIT_S3_BUCKET", bucket)
        patch.setenv("DIGIT_S3_ENDPOINT_URL", endpoint_url)
        return runpy.run_path(str(settings.BASE_DIR / "digitsite" / "settings.py"))["STORAGES"]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """Return the endpoint URL of a moto S3 server running for this session; stop it at the end."""
    if not MOTO_SERVER.exists():
        reason = f"moto's server is not installed ({MOTO_SERVER.name}; requirements-dev.txt has moto[server])"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: CI must run the object storage tests.", pytrace=False)
        pytest.skip(reason)
    port = free_port()
    endpoint_url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            if server.poll() is not None:
                pytest.fail(f"moto_server exited with {server.returncode}:\n{log_path.read_text()}", pytrace=False)
            try:
                with urllib.request.urlopen(endpoint_url, timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not answer within {START_SECONDS} s.", pytrace=False)
                time.sleep(0.1)
        yield endpoint_url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture
def use_s3(s3_server, settings, monkeypatch):
    """Return a function that moves drawings and model artefacts into a new, empty bucket and returns it.

    A function rather than a fixture that switches at once, so that a test can first register a model in
    the local folder (while model loading cannot read from a bucket) and then switch the drawings.
    Everything is put back when the test ends.
    """

    def switch() -> Bucket:
        for name, value in CREDENTIALS.items():
            monkeypatch.setenv(name, value)
        bucket = Bucket(f"digits-{uuid.uuid4().hex[:12]}", boto3.client("s3", endpoint_url=s3_server))
        bucket.client.create_bucket(Bucket=bucket.name)
        configured = s3_storages(bucket=bucket.name, endpoint_url=s3_server)
        # Setting STORAGES makes Django forget its storages, so default_storage (the drawings') follows.
        settings.STORAGES = {**settings.STORAGES, "default": configured["default"], "models": configured["models"]}
        # ModelVersion's file fields keep the storage they were built with (Django calls a storage
        # callable once, at import): give them the bucket's, as a process started with DIGIT_S3_BUCKET has.
        for field_name in ("tflite", "keras"):
            monkeypatch.setattr(ModelVersion._meta.get_field(field_name), "storage", storages["models"])
        return bucket

    return switch
