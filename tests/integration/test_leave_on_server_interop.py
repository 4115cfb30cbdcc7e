"""leave_on_server beside the plugins an admin already runs: lazy_expunge,
mail_log (notify) and access_rules' read-only sessions.

Under `keep`, a POP3 DELE only hides the message from that device.
Plugins loaded before leave_on_server wrap a message's expunge too, and
must not take the DELE for an expunge: lazy_expunge would copy the
message into its folder, mail_log would log an expunge that didn't
happen. Under `delete` they must see it, which is the control that shows
the checks can fail.

A read-only session (access_rules' `readonly`) changes nothing: no
expunge, no hidden message, no device state, no cleanup; QUIT after DELE
says so with -ERR [SYS/PERM], as it does without leave_on_server."""

from __future__ import annotations

import imaplib
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from leave_on_server_helpers import (PLUGIN, _server_log_checks,  # noqa: F401
                                     account, attr_path, backdate, deliver,
                                     device_states, fetch, imap_view, listed,
                                     make_server, msgids, pop3, settle_log,
                                     wait_log)

EXPUNGED = "Expunged"
RO_REASON = "Guest network"
DELETE = {"leave_on_server_policy": "delete"}
NEW_ONLY = {"leave_on_server_new_only": "yes"}
GUEST = {"access_rules_groups": "guest"}

USERS = [
    *account("lk"),
    *account("ld", fields=DELETE),
    *account("lnew", fields=NEW_ONLY),
    *account("lexp", fields={"leave_on_server_policy": "expire",
                             "leave_on_server_expire_days": "1"}),
    *account("ro", fields=GUEST),
    *account("ronew", fields={**GUEST, **NEW_ONLY}),
    *account("rodel", fields={**GUEST, **DELETE}),
    # only the phone is read-only here: the laptop sets the scene
    *account("roexp", devices=("laptop",),
             fields={"leave_on_server_policy": "expire",
                     "leave_on_server_expire_days": "1"}),
    {"name": "roexp-phone", "passdb_fields": {"user": "roexp"},
     "fields": {"pop3_device": "phone", **GUEST}},
]

RULES = f'readonly group guest reason "{RO_REASON}"\n'

EXTRA_CONF = """\
protocol imap {
  imap_metadata = yes
}
"""


@pytest.fixture(scope="module")
def server():
    if not PLUGIN.is_file():
        pytest.fail(f"{PLUGIN} missing: run `make build-all`", pytrace=False)
    # mail processes run unprivileged: the rules must be world-readable
    rules_dir = Path(tempfile.mkdtemp(prefix="los-interop-", dir="/tmp"))
    os.chmod(rules_dir, 0o755)
    rules = rules_dir / "rules.conf"
    rules.write_text(RULES)
    os.chmod(rules, 0o644)
    dc = make_server(USERS, {
        "lazy_expunge": EXPUNGED,
        "mail_log_events": "expunge flag_change",
        "mail_log_fields": "uid box msgid",
        "access_rules_file": str(rules),
    }, mail_plugins="notify mail_log lazy_expunge access_rules",
        extra_conf=EXTRA_CONF)
    dc.start()
    try:
        yield dc
    finally:
        dc.stop()
        shutil.rmtree(rules_dir, ignore_errors=True)


def mail_log_expunges(dc, user: str, since: int) -> list[str]:
    """The Message-IDs mail_log logged as expunged in user's sessions."""
    settle_log(dc)
    rx = re.compile(rf"^.* \w+\({re.escape(user)}\)[^:]*: Info: "
                    r"expunge: .*msgid=<([^>]+)>", re.M)
    return rx.findall(dc.log_text()[since:])


# ------------------------------------------------------------ lazy_expunge

def test_keep_dele_is_no_expunge_to_lazy_expunge_and_mail_log(server):
    ids = deliver(server, "lk", 3)
    mark = server.log_mark()
    with pop3(server, "lk", "phone") as s:
        s.retr(1)
        assert s.dele(1).startswith(b"+OK")
        assert s.dele(3).startswith(b"+OK")
    assert msgids(server, "lk") == ids
    assert msgids(server, "lk", EXPUNGED) == []
    assert mail_log_expunges(server, "lk", mark) == []
    # hidden from the phone only
    assert listed(server, "lk", "phone") == [ids[1]]
    assert sorted(listed(server, "lk", "laptop")) == sorted(ids)
    assert set(imap_view(server, "lk")) == set(ids)


def test_delete_policy_dele_reaches_lazy_expunge_and_mail_log(server):
    """The control: a real expunge goes through both plugins."""
    ids = deliver(server, "ld", 3)
    mark = server.log_mark()
    with pop3(server, "ld", "phone") as s:
        assert s.dele(1).startswith(b"+OK")
        assert s.dele(3).startswith(b"+OK")
    assert msgids(server, "ld") == [ids[1]]
    assert sorted(msgids(server, "ld", EXPUNGED)) == sorted([ids[0], ids[2]])
    assert sorted(mail_log_expunges(server, "ld", mark)) == sorted([ids[0], ids[2]])


def test_expiry_is_a_real_expunge(server):
    """Expiry under a keeping policy expunges for real, so lazy_expunge
    keeps its copy and mail_log logs it."""
    ids = deliver(server, "lexp", 2)
    fetch(server, "lexp", "phone")
    fetch(server, "lexp", "laptop")
    backdate(server, "lexp", "phone", 3)
    backdate(server, "lexp", "laptop", 3)
    mark = server.log_mark()
    with pop3(server, "lexp", "phone") as s:
        s.stat()
    assert msgids(server, "lexp") == []
    assert sorted(msgids(server, "lexp", EXPUNGED)) == sorted(ids)
    assert sorted(mail_log_expunges(server, "lexp", mark)) == sorted(ids)


def test_new_only_retr_under_keep_logs_no_expunge(server):
    ids = deliver(server, "lnew", 2)
    mark = server.log_mark()
    assert sorted(fetch(server, "lnew", "phone", dele=True)) == sorted(ids)
    assert listed(server, "lnew", "phone") == []
    assert msgids(server, "lnew") == ids
    assert msgids(server, "lnew", EXPUNGED) == []
    assert mail_log_expunges(server, "lnew", mark) == []


# ------------------------------------------------------------ read-only

def read_only_refusal(s) -> bytes:
    with pytest.raises(Exception) as exc:
        s.quit()
    return exc.value.args[0]


def test_read_only_keep_dele_quit_refused_and_nothing_written(server):
    ids = deliver(server, "ro", 2)
    attrs = attr_path(server, "ro")
    before = attrs.read_bytes() if attrs.exists() else None
    s = pop3(server, "ro", "phone")
    s.retr(1)
    assert s.dele(1).startswith(b"+OK")       # accepted, as RFC 1939 requires
    assert read_only_refusal(s) == f"-ERR [SYS/PERM] Read-only session: {RO_REASON}".encode()
    assert msgids(server, "ro") == ids
    assert msgids(server, "ro", EXPUNGED) == []
    assert (attrs.read_bytes() if attrs.exists() else None) == before
    assert "phone" not in device_states(server, "ro") if attrs.exists() else True
    assert imap_view(server, "ro") == {i: frozenset() for i in ids}


def test_read_only_retr_quit_succeeds_and_writes_no_state(server):
    ids = deliver(server, "ronew", 2)
    with pop3(server, "ronew", "phone") as s:
        assert s.retr_all() == ids
    assert device_states(server, "ronew") == {} if attr_path(server, "ronew").exists() else True
    # nothing recorded, so the new-only view lists it all again
    assert listed(server, "ronew", "phone") == ids
    assert imap_view(server, "ronew") == {i: frozenset() for i in ids}


def test_read_only_delete_policy_dele_refused(server):
    ids = deliver(server, "rodel", 2)
    s = pop3(server, "rodel", "phone")
    assert s.dele(2).startswith(b"+OK")
    assert read_only_refusal(s) == f"-ERR [SYS/PERM] Read-only session: {RO_REASON}".encode()
    assert msgids(server, "rodel") == ids
    assert msgids(server, "rodel", EXPUNGED) == []


def test_read_only_session_runs_no_cleanup(server):
    """Expiry is due when the read-only phone quits (the laptop, the only
    registered device, retrieved everything days ago): the phone's session
    expunges nothing, and the next writable session does."""
    ids = deliver(server, "roexp", 2)
    assert sorted(fetch(server, "roexp", "laptop")) == sorted(ids)
    backdate(server, "roexp", "laptop", 3)
    mark = server.log_mark()
    with pop3(server, "roexp", "phone") as s:
        assert sorted(s.retr_all()) == sorted(ids)
    assert list(device_states(server, "roexp")) == ["laptop"]
    assert msgids(server, "roexp") == ids
    assert mail_log_expunges(server, "roexp", mark) == []
    # (the log process writes asynchronously)
    wait_log(server, rf"pop3\(roexp\).*: Info: leave_on_server: Cleanup not "
             rf"done: Read-only session: {RO_REASON}", mark)
    # the control: the same expiry from a writable session
    with pop3(server, "roexp", "laptop") as s:
        s.stat()
    assert msgids(server, "roexp") == []
    assert sorted(mail_log_expunges(server, "roexp", mark)) == sorted(ids)


def setmetadata(dc, user: str, value: str):
    c = dc.imap(user)
    try:
        imaplib.Commands.setdefault("SETMETADATA", ("AUTH", "SELECTED"))
        return c._simple_command("SETMETADATA", "INBOX",
                                 f'(/private/comment "{value}")')
    finally:
        c.logout()


def test_read_only_imap_setmetadata_refused(server):
    """The refusal that keeps the device state unwritten also covers IMAP
    METADATA, which is a change too."""
    typ, data = setmetadata(server, "lk", "writable")
    assert typ == "OK", data
    typ, data = setmetadata(server, "ro", "read-only")
    assert typ == "NO", data
    text = re.sub(r" \(\d+\.\d+ \+ .* secs\)\.$", "", data[0].decode())
    assert text == f"[NOPERM] Read-only session: {RO_REASON}", data
    res = server.doveadm("mailbox", "metadata", "get", "-u", "ro", "INBOX",
                         "/private/comment")
    assert "read-only" not in res.stdout, res
    res = server.doveadm("mailbox", "metadata", "get", "-u", "lk", "INBOX",
                         "/private/comment")
    assert "writable" in res.stdout, res
