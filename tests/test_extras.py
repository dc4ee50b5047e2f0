"""The integrations are optional: the core never imports them, and a missing extra says so."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from auditledger import MissingExtraError


def test_the_core_imports_no_integration() -> None:
    code = (
        "import sys, auditledger, auditledger.testing\n"
        "extras = {'slack_bolt', 'slack_sdk', 'starlette', 'fastapi', 'aiohttp'}\n"
        "loaded = extras & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_sync_slack_integration_does_not_need_aiohttp() -> None:
    code = "import sys, auditledger.slack\nassert 'aiohttp' not in sys.modules\n"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("module", "dependency", "extra"),
    [("auditledger.slack", "slack_bolt", "slack"), ("auditledger.web", "starlette", "web")],
)
def test_a_missing_extra_names_it(
    module: str, dependency: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(sys.modules):
        if name in (module, dependency) or name.startswith(dependency + "."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, dependency, None)  # makes "import <dependency>" fail
    with pytest.raises(MissingExtraError, match=rf"auditledger\[{extra}\]"):
        importlib.import_module(module)
