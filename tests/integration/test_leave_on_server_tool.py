"""The leave-on-server tool: `list -u USER` (one line per device: name,
last_seen, retrieved, hidden) and `forget -u USER DEVICE`, checked
against what the devices really did on the real server; exit codes
(67 for an unknown device, 64 for usage errors); and what forgetting a
device changes for the server (it is new again, and expiry no longer
waits for it)."""

from __future__ import annotations

import re
import time
from datetime import datetime

import pytest

from leave_on_server_helpers import (_server_log_checks,  # noqa: F401  (fixtures)
                                     TOOL, account, deliver, device_values,
                                     fetch, listed, msgids, plugin_lines, pop3,
                                     register, run_tool, server_fixture,
                                     set_device_value, set_last_seen, tool_list)

EX_USAGE, EX_NOUSER = 64, 67
EXPIRE0 = {"leave_on_server_policy": "expire", "leave_on_server_expire_days": "0"}

USERS = [
    *account("tl", ("phone", "laptop", "tablet")),
    *account("tnone"),
    *account("tforget", fields={"leave_on_server_new_only": "yes"}),
    *account("texp", fields=EXPIRE0),
    *account("tdmg"),
    *account("tusage"),
    *account("tfresh"),
]

server = server_fixture(USERS)

TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}$")


def parse_time(text: str) -> int:
    assert TIME_RE.match(text), text
    return int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z").timestamp())


def test_tool_is_built():
    assert TOOL.is_file(), f"{TOOL} missing: run `make build-all`"


def test_list_shows_what_each_device_did(server):
    ids = deliver(server, "tl", 4)
    t0 = int(time.time())
    with pop3(server, "tl", "phone") as s:
        s.retr(1)
        s.retr(2)
        s.retr(3)
        s.dele(1)
    with pop3(server, "tl", "laptop") as s:
        s.top(3, 0)                         # TOP is not retrieval
        s.retr(4)
        s.dele(4)
    register(server, "tl", "tablet")
    t1 = int(time.time())
    devices = tool_list(server, "tl")
    assert sorted(devices) == ["laptop", "phone", "tablet"]
    phone, laptop, tablet = devices["phone"], devices["laptop"], devices["tablet"]
    assert (phone["retrieved"], phone["hidden"]) == ("3", "1")
    assert (laptop["retrieved"], laptop["hidden"]) == ("1", "1")
    assert (tablet["retrieved"], tablet["hidden"]) == ("0", "0")
    for dev in devices.values():
        assert t0 - 1 <= parse_time(dev["last_seen"]) <= t1 + 1, dev.group(0)
        assert dev["rest"] == ""
    # the tool lists, it doesn't touch anything
    assert msgids(server, "tl") == ids
    assert tool_list(server, "tl").keys() == devices.keys()


def test_list_last_seen_is_utc(server):
    """last_seen is written as UTC (+0000), whatever the caller's TZ."""
    register(server, "tl", "phone")
    for tz in ("UTC", "Asia/Kolkata", "America/New_York"):
        res = run_tool(server, "list", "-u", "tl", env={"TZ": tz})
        assert res.returncode == 0, res.stderr
        stamps = re.findall(r"\tlast_seen=(\S+)\t", res.stdout)
        assert stamps and all(s.endswith("+0000") for s in stamps), (tz, res.stdout)


def test_list_last_seen_moves_with_sessions(server):
    ids = deliver(server, "tdmg", 2)
    register(server, "tdmg", "phone")
    two_hours_ago = int(time.time()) - 7200
    # a session that retrieves something writes the state, last_seen too
    set_last_seen(server, "tdmg", "phone", two_hours_ago)
    assert parse_time(tool_list(server, "tdmg")["phone"]["last_seen"]) == two_hours_ago
    t0 = int(time.time())
    fetch(server, "tdmg", "phone", only=lambda m: m == ids[0])
    seen = parse_time(tool_list(server, "tdmg")["phone"]["last_seen"])
    assert t0 - 1 <= seen <= time.time() + 1
    # so does one that only checks, once the stored time is old enough
    set_last_seen(server, "tdmg", "phone", two_hours_ago)
    t0 = int(time.time())
    register(server, "tdmg", "phone")
    seen = parse_time(tool_list(server, "tdmg")["phone"]["last_seen"])
    assert t0 - 1 <= seen <= time.time() + 1
    assert tool_list(server, "tdmg")["phone"]["retrieved"] == "1"
    assert msgids(server, "tdmg") == ids


def test_device_of_a_new_mailbox_is_registered_once(server):
    """A device whose first login finds a mailbox that never had mail is
    registered then, and stays registered (no "starts over" later)."""
    mark = server.log_mark()
    register(server, "tfresh", "phone")
    register(server, "tfresh", "phone")
    deliver(server, "tfresh", 1)
    register(server, "tfresh", "phone")
    lines = plugin_lines(server, mark, "Info")
    assert len([l for l in lines if "New device phone registered" in l]) == 1, lines
    assert not [l for l in lines if "UIDVALIDITY" in l], lines
    assert list(tool_list(server, "tfresh")) == ["phone"]


def test_list_damaged_device(server):
    register(server, "tdmg", "phone")
    register(server, "tdmg", "laptop")
    set_device_value(server, "tdmg", "laptop", "rubbish")
    res = run_tool(server, "list", "-u", "tdmg")
    assert res.returncode == 0, res.stderr
    lines = {l.split("\t")[0]: l for l in res.stdout.splitlines()}
    assert set(lines) == {"phone", "laptop"}
    assert "damaged" in lines["laptop"]
    assert "damaged" not in lines["phone"]


def test_list_without_devices(server):
    deliver(server, "tnone", 1)
    res = run_tool(server, "list", "-u", "tnone")
    assert (res.returncode, res.stdout) == (0, ""), res.stderr


def test_forget(server):
    ids = deliver(server, "tforget", 3)
    assert fetch(server, "tforget", "phone") == ids
    register(server, "tforget", "laptop")
    assert listed(server, "tforget", "phone") == []
    res = run_tool(server, "forget", "-u", "tforget", "phone")
    assert (res.returncode, res.stdout) == (0, "forgot device phone\n"), res.stderr
    assert list(tool_list(server, "tforget")) == ["laptop"]
    assert list(device_values(server, "tforget")) == ["laptop"]
    # unknown now: forgetting it again fails with EX_NOUSER
    res = run_tool(server, "forget", "-u", "tforget", "phone")
    assert res.returncode == EX_NOUSER, (res.returncode, res.stdout, res.stderr)
    assert res.stdout == "" and "phone" in res.stderr
    # on its next login it is a new device, and gets everything again
    mark = server.log_mark()
    with pop3(server, "tforget", "phone") as s:
        assert list(s.listed_ids().values()) == ids
    assert any("phone" in l and "registered" in l
               for l in plugin_lines(server, mark, "Info", pid=s.pid))
    assert sorted(tool_list(server, "tforget")) == ["laptop", "phone"]
    assert msgids(server, "tforget") == ids


def test_forget_unknown_device_and_user(server):
    register(server, "tusage", "phone")
    res = run_tool(server, "forget", "-u", "tusage", "laptop")
    assert res.returncode == EX_NOUSER, (res.returncode, res.stderr)
    res = run_tool(server, "forget", "-u", "nosuchuser", "phone")
    assert res.returncode == EX_NOUSER, (res.returncode, res.stderr)
    res = run_tool(server, "list", "-u", "nosuchuser")
    assert res.returncode == EX_NOUSER, (res.returncode, res.stderr)
    assert res.stdout == ""
    assert list(tool_list(server, "tusage")) == ["phone"]


def test_forget_invalid_device_name(server):
    """Not a device name at all: a usage error or an unknown device, not
    a temporary failure (75) that invites retrying."""
    register(server, "tusage", "phone")
    res = run_tool(server, "forget", "-u", "tusage", "bad/name")
    assert res.returncode in (EX_USAGE, EX_NOUSER), (res.returncode, res.stderr)
    assert list(tool_list(server, "tusage")) == ["phone"]


def test_forget_releases_expiry(server):
    """expire_from = all waits for every registered device; once one is
    forgotten, mail the others retrieved expires at the next QUIT."""
    ids = deliver(server, "texp", 3)
    register(server, "texp", "laptop")
    assert fetch(server, "texp", "phone") == ids
    assert msgids(server, "texp") == ids
    res = run_tool(server, "forget", "-u", "texp", "laptop")
    assert res.returncode == 0, res.stderr
    assert msgids(server, "texp") == ids     # the tool expunges nothing itself
    register(server, "texp", "phone")
    assert msgids(server, "texp") == []


@pytest.mark.parametrize("args", [
    [],
    ["list"],
    ["forget", "-u", "tusage"],
    ["forget", "-u", "tusage", "phone", "laptop"],
    ["list", "-u", "tusage", "extra"],
    ["frobnicate", "-u", "tusage"],
    ["list", "-u", "tusage", "-z"],
    ["-z", "list", "-u", "tusage"],
])
def test_usage_errors(server, args):
    res = run_tool(server, *args)
    assert res.returncode == EX_USAGE, (args, res.returncode, res.stderr)
    assert res.stdout == ""
    assert "usage" in res.stderr.lower()


def test_options_before_or_after_the_command(server):
    register(server, "tusage", "phone")
    a = run_tool(server, "list", "-u", "tusage")
    b = run_tool(server, "-u", "tusage", "list")
    assert a.returncode == b.returncode == 0, (a.stderr, b.stderr)
    assert a.stdout == b.stdout != ""
