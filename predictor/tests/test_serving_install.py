"""A web host installs requirements.txt only: the serving code must work without the training packages."""

import subprocess
import sys

from django.conf import settings

# Runs in a fresh interpreter in which importing any training-only package fails, as it would on a host
# with the serving install: every serving module imports, and a drawing is read end to end.
SERVING_ONLY = """
import base64, importlib, importlib.abc, io, json, pkgutil, sys
TRAINING_ONLY = {"tensorflow", "keras", "tf_keras", "matplotlib"}

class RefuseTrainingPackages(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in TRAINING_ONLY:
            raise ImportError(f"{name} is not in the serving install")

sys.meta_path.insert(0, RefuseTrainingPackages())
import django
django.setup()
import digitsite, predictor
for package in (digitsite, predictor):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if ".tests" not in module.name:
            importlib.import_module(module.name)

from django.core.management import call_command
from django.test import Client
for command in ("migrate", "createcachetable", "register_base_model"):
    call_command(command, verbosity=0, stdout=io.StringIO())
png = open(sys.argv[1], "rb").read()
image = "data:image/png;base64," + base64.b64encode(png).decode()
answer = Client().post("/api/predictions/", json.dumps({"image": image}), content_type="application/json")
assert answer.status_code == 201, answer.content
print("predicted", answer.json()["predicted_label"])
assert not TRAINING_ONLY & {name.partition(".")[0] for name in sys.modules}
"""


def test_serving_code_works_without_training_packages(tmp_path, digit_png):
    png, label = digit_png
    (tmp_path / "digit.png").write_bytes(png)
    env = {
        "DJANGO_SETTINGS_MODULE": "digitsite.settings",
        "DEBUG": "true",
        "ALLOWED_HOSTS": "testserver",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "CACHE_URL": "locmemcache://",
        "MEDIA_ROOT": str(tmp_path / "media"),
        "DIGIT_MODEL_ROOT": str(tmp_path / "models"),
        "PATH": "/usr/bin:/bin",
    }
    finished = subprocess.run(
        [sys.executable, "-c", SERVING_ONLY, str(tmp_path / "digit.png")],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.split() == ["predicted", str(label)]
