"""Shared fixtures for integration tests against a real Dovecot.

    def test_something(dovecot):
        dc = dovecot(mail_plugins="access_rules",
                     plugin_settings={"access_rules": rules_path},
                     users=["alice", {"name": "bob",
                                      "fields": {"access_rules_groups": "staff"}}])
        dc.imap("alice").logout()

Every instance started through `dovecot` is stopped (and its directory
removed unless KEEP_DOVECOT=1) when the test ends, pass or fail.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dovecot_instance import BUILD_DIR, DovecotInstance  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "requires_root: test needs root (skipped otherwise)")


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root privileges")
    for item in items:
        if "requires_root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def build_dir(repo_root) -> Path:
    """<repo>/build, which must already hold the built plugins."""
    build = BUILD_DIR
    if not any(build.glob("*.so")):
        pytest.fail(f"no plugin .so files in {build}; build first "
                    "(`make`, or run the tests via `make test`)", pytrace=False)
    return build


@pytest.fixture
def dovecot(request, repo_root):
    """Factory: dovecot(**DovecotInstance kwargs) -> started DovecotInstance.

    plugin_dir defaults to <repo>/build (may be empty: stock plugins such as
    quota still load); requesting a mail plugin that is neither built nor
    stock fails start-up with a clear message.
    """
    instances: list[DovecotInstance] = []

    def start(**kwargs) -> DovecotInstance:
        kwargs.setdefault("plugin_dir", BUILD_DIR)
        inst = DovecotInstance(**kwargs)
        instances.append(inst)
        return inst.start()

    yield start

    failed = getattr(request.node, "rep_call", None)
    for inst in instances:
        if failed is not None and failed.failed and inst.dir is not None:
            # Surface the server side of a failure in pytest's report.
            print(f"--- {inst.log_path} ---\n{inst.log_text()}")
        inst.stop()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Record the call-phase report so fixtures can tell a failed test at
    # teardown (the documented pytest recipe).
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
