"""The classifier this process serves: loaded once per model version, swapped when another is activated.

Each worker asks the registry which version is active at most once per DIGIT_MODEL_CHECK_SECONDS, so
every worker follows an activation within about that long, without a restart. Nothing broken is kept:
a version that cannot be loaded is tried again on the next request.

A version's .tflite is read through the model storage API (a local folder or a bucket: no local path is
assumed) and checked against the SHA-256 recorded when it was registered, so a file changed afterwards
is refused rather than served under the version's number. The checked bytes are kept in a local folder
(DIGIT_MODEL_CACHE) under a name made of the version and the digest, so the workers of one host fetch a
version from storage once; a local copy is checked against the digest too before it is used.
"""

import hashlib
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from django.conf import settings

from predictor import selectors
from predictor.inference import Classifier, ModelLoadError
from predictor.models import ModelVersion

logger = logging.getLogger(__name__)

LOCAL_COPY_SUFFIX = ".tflite"

NO_ACTIVE_VERSION = (
    "No model version is active. Register the shipped model with "
    "`python manage.py register_base_model` or activate one with `python manage.py activate_model N`."
)


class ModelUnavailable(Exception):
    """No model can answer right now; str() says why and what to do."""


# Per process: the loaded classifier by ModelVersion id, and the active id with when it was last checked.
_classifiers: dict[int, tuple[ModelVersion, Classifier]] = {}
_active: dict[str, Any] = {"id": None, "checked_at": float("-inf")}
_lock = threading.Lock()


def _active_version_id() -> int | None:
    """Return the id of the active ModelVersion, asking the database at most once per check interval."""
    # One indexed query per worker per interval: every worker follows the registry, the one source of
    # truth, within DIGIT_MODEL_CHECK_SECONDS of an activation, and never serves a rolled-back one.
    now = time.monotonic()
    if now - _active["checked_at"] >= settings.DIGIT_MODEL_CHECK_SECONDS:
        _active.update(id=selectors.model_version_active_id(), checked_at=now)
    return _active["id"]


def active_classifier() -> tuple[ModelVersion, Classifier]:
    """Return the active ModelVersion and its Classifier, loading it once per process and version."""
    version_id = _active_version_id()
    if version_id is None:
        raise ModelUnavailable(NO_ACTIVE_VERSION)
    loaded = _classifiers.get(version_id)
    if loaded is not None:
        return loaded
    with _lock:
        if version_id not in _classifiers:
            version = selectors.model_version_get(version_id=version_id)
            if version is None:  # deleted since the last check: ask the database again next time
                check_active_version_now()
                raise ModelUnavailable("The active model version was removed; retry in a moment.")
            try:
                classifier = load_classifier(version)
            except ModelUnavailable as error:
                logger.error("%s", error)
                raise
            # Keep only the newly active classifier: old versions are not served again until reactivated.
            _classifiers.clear()
            _classifiers[version_id] = (version, classifier)
        return _classifiers[version_id]


def load_classifier(version: ModelVersion, *, from_storage: bool = False) -> Classifier:
    """Return a Classifier of the version's .tflite exactly as registered, or raise ModelUnavailable saying why.

    The bytes come from this host's local copy when it is there and matches the recorded SHA-256, else
    from model storage (always, with `from_storage`), and are checked against it. A version registered
    before digests were recorded (empty tflite_sha256) is read from storage and loaded unchecked.
    """
    digest = version.tflite_sha256
    local_copy = _local_copy_path(version) if digest else None
    content = None
    if local_copy is not None and not from_storage:
        content = _read_local_copy(local_copy, digest)
    if content is None:
        content = _read_from_storage(version)
        if local_copy is not None:
            _write_local_copy(local_copy, content)
    try:
        # Named as stored (v1/model.tflite): the reason is public, a server's path is not.
        return Classifier(content, name=version.tflite.name)
    except ModelLoadError as error:
        raise ModelUnavailable(f"Model version {version.version} cannot be loaded: {error}") from error


def _local_copy_path(version: ModelVersion) -> Path:
    """Return where this host keeps its checked copy of the version's .tflite."""
    # Version and digest in the name: a re-registered number or a changed digest never reuses a stale copy.
    return Path(settings.DIGIT_MODEL_CACHE) / f"v{version.version}-{version.tflite_sha256}{LOCAL_COPY_SUFFIX}"


def _read_local_copy(path: Path, digest: str) -> bytes | None:
    """Return the content of a local copy whose SHA-256 is `digest`, or None if there is no such copy."""
    try:
        content = path.read_bytes()
    except OSError:
        return None
    if hashlib.sha256(content).hexdigest() != digest:
        logger.warning("The local copy %s does not match its SHA-256; fetching the model again.", path)
        return None
    return content


def _read_from_storage(version: ModelVersion) -> bytes:
    """Return the version's .tflite read through model storage, checked against its recorded SHA-256."""
    name = version.tflite.name or ""
    try:
        with version.tflite.storage.open(name, "rb") as artefact:
            content = artefact.read()
    except Exception as error:  # whatever the backend (disk, bucket) raises, the version cannot be served
        logger.error("Reading %s of model version %s from model storage failed: %r", name, version.version, error)
        why = error.strerror if isinstance(error, OSError) and error.strerror else type(error).__name__
        raise ModelUnavailable(
            f"Model version {version.version} cannot be loaded: its file {name} cannot be read from model "
            f"storage ({why})."
        ) from error
    if version.tflite_sha256 and hashlib.sha256(content).hexdigest() != version.tflite_sha256:
        raise ModelUnavailable(
            f"Model version {version.version} cannot be loaded: its file {name} does not match its recorded "
            "SHA-256; it was changed after registration. Put back the registered file or register the new "
            "one as a new version."
        )
    return content


def _write_local_copy(path: Path, content: bytes) -> None:
    """Keep `content` at `path` for the other workers of this host, written whole or not at all."""
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Renamed into place once complete, so a reader never sees half a file (and would refuse it anyway:
        # every read of a local copy checks its digest).
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as file:
            temporary = file.name
            file.write(content)
        os.replace(temporary, path)
    except OSError as error:
        # Serving does not depend on the copy: this worker has the checked bytes in memory already.
        logger.warning("Cannot keep a local copy of the model at %s: %s", path, error)
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)


def check_active_version_now() -> None:
    """Make this process ask the registry which version is active on its next prediction."""
    _active.update(checked_at=float("-inf"))


def forget_loaded_models(*, keep_local_copies: bool = False) -> None:
    """Drop this process's loaded classifiers and cached active version and, unless kept, this host's local copies.

    Used in tests: without its local copies the process is like a worker started on a new host.
    """
    with _lock:
        _classifiers.clear()
        _active.update(id=None, checked_at=float("-inf"))
        if not keep_local_copies:
            for path in Path(settings.DIGIT_MODEL_CACHE).glob(f"v*-*{LOCAL_COPY_SUFFIX}"):
                path.unlink(missing_ok=True)
