"""axe-core accessibility scans for the browser tests (axe-core comes from npm: `make axe`)."""

import os

import pytest
from django.conf import settings

AXE_PATH = settings.BASE_DIR / "node_modules" / "axe-core" / "axe.min.js"
BLOCKING_IMPACTS = {"critical", "serious"}


def blocking_violations(page) -> list[str]:
    """Return one line per critical or serious axe-core violation on the page: rule, impact, help, targets."""
    if not AXE_PATH.exists():
        reason = "axe-core is not installed (run `make axe`)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: CI must run the accessibility checks.", pytrace=False)
        pytest.skip(reason)
    page.add_script_tag(path=str(AXE_PATH))
    violations = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[node['target'] for node in v['nodes']]}"
        for v in violations
        if v["impact"] in BLOCKING_IMPACTS
    ]
